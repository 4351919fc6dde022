#!/usr/bin/env python3
"""Peer for `xfrmlab bench`'s NFLOG trace rate: the same measurement with the usual tools.

In an existing namespace (a lab's west): nft log rules at output and postrouting for UDP to
PORT, `tcpdump -i nflog:GROUP -c 2*COUNT -w /dev/null` listening, and a Python sender (started
beforehand, waiting for a line on stdin) that sends COUNT 64-byte datagrams marked 0x1 to
DESTINATION:PORT as fast as it can. Timed: from "go" to tcpdump's exit (it has seen every log
message) or 30 s. Prints one JSON object:

    {"tool": "nft+tcpdump", "version": "4.99.3", "count": N, "observed": M,
     "seconds": S, "rate": N / S}

The rules are removed afterwards; nothing is created outside the namespace given.
"""

import argparse
import json
import re
import subprocess
import sys
import time

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 1)
payload = b"x" * 64
target = (sys.argv[1], int(sys.argv[2]))
n = int(sys.argv[3])
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
for _ in range(n):
    s.sendto(payload, target)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--destination", required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--group", type=int, default=7391)
    ap.add_argument("--port", type=int, default=7391)
    args = ap.parse_args()
    ns = args.namespace
    rules = f"""table inet peer_trace {{
  chain output {{ type filter hook output priority mangle + 1; policy accept;
    udp dport {args.port} log prefix "west" group {args.group}
  }}
  chain postrouting {{ type filter hook postrouting priority mangle + 1; policy accept;
    udp dport {args.port} log prefix "west" group {args.group}
  }}
}}
"""
    first = subprocess.run(["tcpdump", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    version = first.split()[-1]  # "tcpdump version 4.99.3"
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)
    dump = sender = None
    try:
        want = 2 * args.count
        dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", f"nflog:{args.group}", "-n", "-q",
                                 "-B", "4096", "-c", str(want), "-w", "/dev/null"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = dump.stderr.readline()  # "tcpdump: listening on nflog:G, ..."
        if "listening" not in line:
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        sender = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", SENDER, args.destination, str(args.port),
                                   str(args.count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if sender.stdout.readline().strip() != "ready":
            raise RuntimeError("sender did not start")
        t0 = time.perf_counter()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        try:
            dump.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dump.send_signal(2)
            dump.wait(timeout=5)
        seconds = time.perf_counter() - t0
        rest = dump.stderr.read()
        m = re.search(r"(\d+) packets? captured", rest)
        observed = int(m.group(1)) if m else 0
        sender.wait(timeout=30)
    finally:
        for p in (sender, dump):
            if p and p.poll() is None:
                p.kill()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "peer_trace"])
    print(json.dumps({"tool": "nft+tcpdump", "version": version, "count": args.count, "observed": observed,
                      "seconds": round(seconds, 4), "rate": args.count / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
