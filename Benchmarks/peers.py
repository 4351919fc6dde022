#!/usr/bin/env python3
"""Peers for `make bench`: build an XfrmLab topology with iproute2 or with pyroute2.

The harness builds a topology natively over netlink; this program does the same
work with (a) a plain iproute2 shell script generated from the same file and
(b) pyroute2 in-process, and prints ONE JSON object with the timings:

    python3 Benchmarks/peers.py --tool iproute2|pyroute2 --prefix PFX \\
        [--repeat N] [--script-out FILE] [--check] [--ping HOST:ADDR ...] \\
        (TOPOLOGY.yaml | --star N)

    {"tool": ..., "version": ..., "topology": name, "hosts": n,
     "up_ms": [...one per repeat...], "down_ms": [...], "notes": "...", ...}

Both tools execute the very same plan (`compile_plan`), in this order:

 1. every namespace PREFIX+host (hosts in file order), then the switch
    namespaces PREFIX+"sw-"+network (networks in file order); `lo` up in each;
 2. links, network by network in file order:
    - 1 member:   a bridge with no ports named by the member's interface, up;
    - 2 members:  a veth pair, one end in each member's namespace, named by the
                  members' interfaces, both up (created from the first member's
                  namespace with the peer placed straight into the second's);
    - >2 members: a bridge named by the `bridge:` member's interface inside that
                  member's namespace (no `bridge:` key: a bridge `br0` in the
                  namespace PREFIX+"sw-"+network), up; then for every other member,
                  k = 1, 2, ... in member order: a veth pair whose host end is named
                  by its interface in its namespace and whose other end is
                  `<bridgeiface>-p<k>` in the bridge's namespace, that end enslaved to
                  the bridge and up, then the host end up;
    - `mtu:` on the network is given to every link it creates;
 3. sysctls, host by host: `forwarding: true` -> net.ipv4.ip_forward=1 and
    net.ipv6.conf.all.forwarding=1, then the `sysctls:` mapping in file order;
 4. addresses, network by network, member by member: each bare address gets the
    prefix length of the network subnet it falls in; IPv6 ones with `nodad`;
 5. routes, host by host (`to: default` is 0.0.0.0/0, or ::/0 when `via` is IPv6);
 6. rules, host by host (family from `family:`, else from `from`/`to`, else IPv4);
 7. nftables, host by host: the host's `nftables:` text, then one table
    `inet xfrmlab` with a postrouting nat chain holding, per `masquerade:` entry,
    `oifname "OUT" [ip|ip6 saddr FROM] masquerade`; loaded with `nft -f -` inside
    the namespace.
Teardown deletes every namespace of the plan (`ip netns del` / pyroute2.netns.remove).

--star N: instead of a file, this topology (also printed by `--emit-yaml`, so the
harness can build exactly the same thing from a file):

    name: star-N
    hosts: hub, h1, h2, ..., hN          (in that order; nothing set on any host:
                                          no forwarding, sysctls, routes, rules, nft)
    networks:
      - name: star
        subnets: [10.200.0.0/16]
        bridge: hub
        members:                         (in this order)
          - { host: hub, interface: br0,  addresses: [10.200.0.1] }
          - { host: hI,  interface: eth0, addresses: [A(I)] }   for I = 1 .. N

    where A(I) is the address 10.200.0.0 + (I + 1), i.e. 10.200.((I+1) div 256).((I+1) mod 256):
    h1 = 10.200.0.2, h2 = 10.200.0.3, ..., h200 = 10.200.0.201, h254 = 10.200.0.255,
    h255 = 10.200.1.0, ...; 1 <= N <= 65533. So: N+1 namespaces PREFIX+"hub" and
    PREFIX+"hI"; in the hub a bridge br0 (10.200.0.1/16, up) with ports br0-p1 ..
    br0-pN (port br0-pI is the peer of hI's eth0, enslaved and up); in each hI an
    eth0 (A(I)/16, up); `lo` up everywhere.

Timing: time.perf_counter() around the work. iproute2: the script is generated once
(outside timing), then `sh UP.sh` and `sh DOWN.sh` are timed end to end, so every ip
fork is counted (one command per operation, no `ip -batch`: `ip -n NS ...` for
link/addr/route/rule, `ip netns exec NS sysctl -qw` for sysctls, `ip netns exec NS nft
-f -` for nftables). pyroute2: the whole plan in-process (IPRoute(netns=...) sockets,
one per namespace; sysctls by setns into the namespace and writing /proc/sys; nft via a
subprocess forked while in the namespace). `import pyroute2` is outside timing.
Deleting a namespace only unmounts it: the kernel frees it asynchronously, so down_ms
is the cost of the deletes, not of the kernel's cleanup.

Safety: nothing is ever created in the caller's own namespace; the run refuses to
start if a namespace named PREFIX* exists, always tears down (try/finally), and fails
if anything named PREFIX* is left in `ip netns list` afterwards.
"""

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

NETNS_DIR = "/var/run/netns"
IFNAMSIZ = 15
NFT_TABLE = "xfrmlab"


class TopologyError(Exception):
    pass


# ---------------------------------------------------------------------------
# Model (mirrors Sources/Topology/Model.swift)
# ---------------------------------------------------------------------------

class Route:
    def __init__(self, to, via=None, dev=None, src=None, table=254, type="unicast", metric=None):
        self.to, self.via, self.dev, self.src = to, via, dev, src
        self.table, self.type, self.metric = table, type, metric

    @property
    def family(self):
        return self.to.version


class Rule:
    def __init__(self, family=4, priority=None, invert=False, src=None, dst=None,
                 fwmark=None, fwmask=None, iif=None, oif=None, table=254):
        self.family, self.priority, self.invert = family, priority, invert
        self.src, self.dst = src, dst
        self.fwmark, self.fwmask = fwmark, fwmask
        self.iif, self.oif, self.table = iif, oif, table


class Host:
    def __init__(self, name):
        self.name = name
        self.forwarding = False
        self.sysctls = []      # [(key, value)]
        self.routes = []
        self.rules = []
        self.masquerade = []   # [(out, from-network or None)]
        self.nftables = None


class Member:
    def __init__(self, host, interface, addresses):
        self.host, self.interface, self.addresses = host, interface, addresses  # addresses: [ip_interface]


class Network:
    def __init__(self, name, subnets, members, bridge=None, mtu=None):
        self.name, self.subnets, self.members = name, subnets, members
        self.bridge, self.mtu = bridge, mtu


class Topology:
    def __init__(self, name, hosts, networks, source=None):
        self.name, self.hosts, self.networks, self.source = name, hosts, networks, source


# ---------------------------------------------------------------------------
# Loading (YAML scalars are read as strings, like YAML 1.2: no sexagesimal surprises)
# ---------------------------------------------------------------------------

TRUE = {"true", "True", "TRUE", "yes", "Yes", "on", "On"}
FALSE = {"false", "False", "FALSE", "no", "No", "off", "Off", ""}
TABLES = {"main": 254, "local": 255, "default": 253}


def _keys(d, allowed, ctx):
    if not isinstance(d, dict):
        raise TopologyError(f"{ctx}: expected a mapping, got {d!r}")
    extra = set(d) - set(allowed)
    if extra:
        raise TopologyError(f"{ctx}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _bool(v, ctx):
    if isinstance(v, bool):
        return v
    if v in TRUE:
        return True
    if v in FALSE or v is None:
        return False
    raise TopologyError(f"{ctx}: not a boolean: {v!r}")


def _uint(v, ctx, bits=32):
    try:
        s = str(v).strip()
        n = int(s, 16) if s.lower().startswith("0x") else int(s, 10)
    except ValueError:
        raise TopologyError(f"{ctx}: not a number: {v!r}") from None
    if not 0 <= n < (1 << bits):
        raise TopologyError(f"{ctx}: out of range: {v!r}")
    return n


def _table(v, ctx):
    s = str(v)
    if s in TABLES:
        return TABLES[s]
    n = _uint(s, ctx)
    if n == 0:
        raise TopologyError(f"{ctx}: table 0 is not a table")
    return n


def _ip(v, ctx):
    try:
        return ipaddress.ip_address(str(v))
    except ValueError:
        raise TopologyError(f"{ctx}: not an IP address: {v!r}") from None


def _net(v, ctx, family=4):
    s = str(v)
    if s == "default":
        return ipaddress.ip_network("::/0" if family == 6 else "0.0.0.0/0")
    try:
        return ipaddress.ip_network(s, strict=True)
    except ValueError:
        raise TopologyError(f"{ctx}: not a CIDR (host bits must be clear): {v!r}") from None


def _ifname(v, ctx):
    s = str(v)
    if not s or len(s) > IFNAMSIZ or "/" in s or s.strip() != s or s in (".", ".."):
        raise TopologyError(f"{ctx}: bad interface name {v!r} (1..{IFNAMSIZ} chars)")
    return s


def _list(v, ctx):
    if v in (None, ""):
        return []
    if not isinstance(v, list):
        raise TopologyError(f"{ctx}: expected a list, got {v!r}")
    return v


def parse_route(d, ctx):
    _keys(d, {"to", "via", "dev", "src", "table", "type", "metric"}, ctx)
    if "to" not in d:
        raise TopologyError(f"{ctx}: a route needs `to`")
    via = _ip(d["via"], ctx + ".via") if d.get("via") not in (None, "") else None
    to = _net(d["to"], ctx + ".to", family=via.version if via else 4)
    if via and via.version != to.version:
        raise TopologyError(f"{ctx}: `via` {via} is not of the family of `to` {to}")
    src = _ip(d["src"], ctx + ".src") if d.get("src") not in (None, "") else None
    if src and src.version != to.version:
        raise TopologyError(f"{ctx}: `src` {src} is not of the family of `to` {to}")
    rtype = str(d.get("type", "unicast"))
    if rtype not in ("unicast", "blackhole", "unreachable", "prohibit"):
        raise TopologyError(f"{ctx}.type: {rtype!r} (unicast|blackhole|unreachable|prohibit)")
    if rtype != "unicast" and (via or d.get("dev")):
        raise TopologyError(f"{ctx}: a {rtype} route takes no via/dev")
    return Route(to=to, via=via,
                 dev=_ifname(d["dev"], ctx + ".dev") if d.get("dev") not in (None, "") else None,
                 src=src,
                 table=_table(d["table"], ctx + ".table") if "table" in d else 254,
                 type=rtype,
                 metric=_uint(d["metric"], ctx + ".metric") if "metric" in d else None)


def parse_rule(d, ctx):
    _keys(d, {"priority", "not", "from", "to", "fwmark", "iif", "oif", "lookup", "table", "family"}, ctx)
    fam = None
    if "family" in d:
        f = str(d["family"]).lower()
        fam = {"ipv4": 4, "inet": 4, "4": 4, "ipv6": 6, "inet6": 6, "6": 6}.get(f)
        if fam is None:
            raise TopologyError(f"{ctx}.family: {d['family']!r} (ipv4|ipv6)")
    nets = {}
    for k in ("from", "to"):
        if d.get(k) not in (None, "", "all"):
            s = str(d[k])
            nets[k] = _net(s if "/" in s else f"{s}/{_ip(s, ctx).max_prefixlen}", f"{ctx}.{k}")
    for n in nets.values():
        if fam is None:
            fam = n.version
        elif fam != n.version:
            raise TopologyError(f"{ctx}: from/to/family disagree on the address family")
    mark = mask = None
    if d.get("fwmark") not in (None, ""):
        parts = str(d["fwmark"]).split("/")
        if len(parts) > 2:
            raise TopologyError(f"{ctx}.fwmark: {d['fwmark']!r}")
        mark = _uint(parts[0], ctx + ".fwmark")
        mask = _uint(parts[1], ctx + ".fwmark") if len(parts) == 2 else None
    lookup = d.get("lookup", d.get("table"))
    if lookup is None:
        raise TopologyError(f"{ctx}: a rule needs `lookup`")
    return Rule(family=fam or 4,
                priority=_uint(d["priority"], ctx + ".priority") if "priority" in d else None,
                invert=_bool(d.get("not", False), ctx + ".not"),
                src=nets.get("from"), dst=nets.get("to"), fwmark=mark, fwmask=mask,
                iif=_ifname(d["iif"], ctx + ".iif") if d.get("iif") else None,
                oif=_ifname(d["oif"], ctx + ".oif") if d.get("oif") else None,
                table=_table(lookup, ctx + ".lookup"))


def parse_topology(doc, source=None):
    if not isinstance(doc, dict):
        raise TopologyError("a topology is a mapping with name, hosts, networks")
    _keys(doc, {"name", "hosts", "networks"}, "topology")
    name = str(doc.get("name") or (os.path.splitext(os.path.basename(source))[0] if source else "topology"))
    hosts = {}
    raw_hosts = doc.get("hosts") or {}
    if isinstance(raw_hosts, list):  # also accept a list of {name: ...}
        raw_hosts = {str(h["name"]): {k: v for k, v in h.items() if k != "name"} for h in raw_hosts}
    for hname, hd in raw_hosts.items():
        ctx = f"hosts.{hname}"
        hd = hd or {}
        _keys(hd, {"forwarding", "sysctls", "routes", "rules", "masquerade", "nftables"}, ctx)
        h = Host(str(hname))
        h.forwarding = _bool(hd.get("forwarding", False), ctx + ".forwarding")
        sc = hd.get("sysctls") or {}
        if isinstance(sc, dict):
            h.sysctls = [(str(k), str(v)) for k, v in sc.items()]
        else:
            for i, item in enumerate(_list(sc, ctx + ".sysctls")):
                if isinstance(item, dict) and set(item) <= {"key", "value"}:
                    h.sysctls.append((str(item["key"]), str(item["value"])))
                elif isinstance(item, dict) and len(item) == 1:
                    (k, v), = item.items()
                    h.sysctls.append((str(k), str(v)))
                elif isinstance(item, str) and "=" in item:
                    k, v = item.split("=", 1)
                    h.sysctls.append((k.strip(), v.strip()))
                else:
                    raise TopologyError(f"{ctx}.sysctls[{i}]: {item!r}")
        h.routes = [parse_route(r, f"{ctx}.routes[{i}]") for i, r in enumerate(_list(hd.get("routes"), ctx))]
        h.rules = [parse_rule(r, f"{ctx}.rules[{i}]") for i, r in enumerate(_list(hd.get("rules"), ctx))]
        for i, m in enumerate(_list(hd.get("masquerade"), ctx + ".masquerade")):
            mctx = f"{ctx}.masquerade[{i}]"
            _keys(m, {"out", "from"}, mctx)
            if not m.get("out"):
                raise TopologyError(f"{mctx}: needs `out`")
            frm = None
            if m.get("from") not in (None, ""):
                s = str(m["from"])
                frm = _net(s if "/" in s else f"{s}/{_ip(s, mctx).max_prefixlen}", mctx + ".from")
            h.masquerade.append((_ifname(m["out"], mctx + ".out"), frm))
        if hd.get("nftables") not in (None, ""):
            h.nftables = str(hd["nftables"])
        hosts[h.name] = h

    networks = []
    seen_nets = set()
    for i, nd in enumerate(_list(doc.get("networks"), "networks")):
        ctx = f"networks[{i}]"
        _keys(nd, {"name", "subnets", "members", "bridge", "mtu"}, ctx)
        nname = str(nd.get("name") or "")
        if not nname or nname in seen_nets:
            raise TopologyError(f"{ctx}: needs a unique name")
        seen_nets.add(nname)
        ctx = f"networks.{nname}"
        subnets = [_net(s, ctx + ".subnets") for s in _list(nd.get("subnets"), ctx + ".subnets")]
        members = []
        for j, md in enumerate(_list(nd.get("members"), ctx + ".members")):
            mctx = f"{ctx}.members[{j}]"
            _keys(md, {"host", "interface", "addresses"}, mctx)
            hname = str(md.get("host") or "")
            if hname not in hosts:
                raise TopologyError(f"{mctx}: host {hname!r} is not under hosts:")
            addrs = []
            for a in _list(md.get("addresses"), mctx + ".addresses"):
                s = str(a)
                if "/" in s:
                    try:
                        addrs.append(ipaddress.ip_interface(s))
                    except ValueError:
                        raise TopologyError(f"{mctx}: not an address: {s!r}") from None
                    continue
                ip = _ip(s, mctx + ".addresses")
                sub = next((n for n in subnets if n.version == ip.version and ip in n), None)
                if sub is None:
                    raise TopologyError(f"{mctx}: {ip} is in none of the subnets of {nname}")
                addrs.append(ipaddress.ip_interface(f"{ip}/{sub.prefixlen}"))
            members.append(Member(hname, _ifname(md.get("interface"), mctx + ".interface"), addrs))
        if not members:
            raise TopologyError(f"{ctx}: has no members")
        bridge = str(nd["bridge"]) if nd.get("bridge") not in (None, "") else None
        if bridge is not None and bridge not in [m.host for m in members]:
            raise TopologyError(f"{ctx}.bridge: {bridge!r} is not a member")
        mtu = _uint(nd["mtu"], ctx + ".mtu") if nd.get("mtu") not in (None, "") else None
        networks.append(Network(nname, subnets, members, bridge, mtu))
    return Topology(name, list(hosts.values()), networks, source)


def load_topology(path):
    try:
        import yaml
    except ImportError:
        raise TopologyError("PyYAML is needed to read topology files (pip install pyyaml)") from None
    with open(path) as f:
        doc = yaml.load(f, Loader=yaml.BaseLoader)  # every scalar a string
    return parse_topology(doc, source=path)


def star_address(i):
    return ipaddress.ip_address(int(ipaddress.ip_address("10.200.0.0")) + i + 1)


def star_topology(n):
    if not 1 <= n <= 65533:
        raise TopologyError("--star N needs 1 <= N <= 65533")
    hosts = [Host("hub")] + [Host(f"h{i}") for i in range(1, n + 1)]
    members = [Member("hub", "br0", [ipaddress.ip_interface("10.200.0.1/16")])]
    members += [Member(f"h{i}", "eth0", [ipaddress.ip_interface(f"{star_address(i)}/16")])
                for i in range(1, n + 1)]
    net = Network("star", [ipaddress.ip_network("10.200.0.0/16")], members, bridge="hub")
    return Topology(f"star-{n}", hosts, [net], source=None)


def star_yaml(n):
    lines = [f"# Generated by Benchmarks/peers.py --star {n} --emit-yaml: the star plan, see its docstring.",
             f"name: star-{n}", "", "hosts:", "  hub: {}"]
    lines += [f"  h{i}: {{}}" for i in range(1, n + 1)]
    lines += ["", "networks:", "  - name: star", "    subnets: [10.200.0.0/16]", "    bridge: hub",
              "    members:", "      - { host: hub, interface: br0, addresses: [10.200.0.1] }"]
    lines += [f"      - {{ host: h{i}, interface: eth0, addresses: [{star_address(i)}] }}" for i in range(1, n + 1)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The plan: one list of operations, executed by either tool
# ---------------------------------------------------------------------------

class Plan:
    def __init__(self, topology, prefix):
        self.topology = topology
        self.prefix = prefix
        self.namespaces = []   # every namespace, creation order
        self.ops = []          # tuples, see compile_plan

    def add(self, *op):
        self.ops.append(op)


def nft_text(host):
    parts = []
    if host.nftables:
        parts.append(host.nftables.rstrip("\n"))
    if host.masquerade:
        rules = []
        for out, frm in host.masquerade:
            match = f'oifname "{out}"'
            if frm is not None:
                match += f" {'ip' if frm.version == 4 else 'ip6'} saddr {frm}"
            rules.append(f"\t\t{match} masquerade")
        parts.append(f"table inet {NFT_TABLE} {{\n\tchain postrouting {{\n"
                     f"\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
                     + "\n".join(rules) + "\n\t}\n}")
    return "\n".join(parts) + "\n" if parts else None


def compile_plan(topo, prefix):
    """Ops:
    ("netns", ns) ("up", ns, ifname) ("bridge", ns, ifname, mtu)
    ("veth", ns, ifname, peer_ns, peer_ifname, mtu) ("master", ns, ifname, bridge)  [also sets up]
    ("sysctl", ns, key, value) ("addr", ns, ifname, ip_interface)
    ("route", ns, Route) ("rule", ns, Rule) ("nft", ns, text)
    """
    plan = Plan(topo, prefix)
    ns_of = {h.name: prefix + h.name for h in topo.hosts}
    switches = {n.name: prefix + "sw-" + n.name for n in topo.networks if len(n.members) > 2 and n.bridge is None}
    plan.namespaces = list(ns_of.values()) + list(switches.values())
    if len(set(plan.namespaces)) != len(plan.namespaces):
        raise TopologyError("two namespaces would get the same name (a host named sw-<network>?)")
    for ns in plan.namespaces:
        if "/" in ns or len(ns) > 200:
            raise TopologyError(f"bad namespace name {ns!r}")

    # interfaces per namespace, to catch clashes before building anything
    names = {ns: {"lo"} for ns in plan.namespaces}

    def claim(ns, ifname, ctx):
        _ifname(ifname, ctx)
        if ifname in names[ns]:
            raise TopologyError(f"{ctx}: interface {ifname!r} used twice in namespace {ns}")
        names[ns].add(ifname)

    for ns in plan.namespaces:
        plan.add("netns", ns)
        plan.add("up", ns, "lo")

    for net in topo.networks:
        ms = net.members
        ctx = f"networks.{net.name}"
        if len(ms) == 1:
            ns = ns_of[ms[0].host]
            claim(ns, ms[0].interface, ctx)
            plan.add("bridge", ns, ms[0].interface, net.mtu)
            plan.add("up", ns, ms[0].interface)
        elif len(ms) == 2:
            a, b = ms
            claim(ns_of[a.host], a.interface, ctx)
            claim(ns_of[b.host], b.interface, ctx)
            plan.add("veth", ns_of[a.host], a.interface, ns_of[b.host], b.interface, net.mtu)
            plan.add("up", ns_of[a.host], a.interface)
            plan.add("up", ns_of[b.host], b.interface)
        else:
            if net.bridge is not None:
                owner = next(m for m in ms if m.host == net.bridge)
                brns, brif = ns_of[owner.host], owner.interface
                ports = [m for m in ms if m is not owner]
            else:
                brns, brif = switches[net.name], "br0"
                ports = list(ms)
            claim(brns, brif, ctx)
            plan.add("bridge", brns, brif, net.mtu)
            plan.add("up", brns, brif)
            for k, m in enumerate(ports, start=1):
                port = f"{brif}-p{k}"
                claim(ns_of[m.host], m.interface, ctx)
                claim(brns, port, ctx)
                plan.add("veth", ns_of[m.host], m.interface, brns, port, net.mtu)
                plan.add("master", brns, port, brif)
                plan.add("up", ns_of[m.host], m.interface)

    for h in topo.hosts:
        if h.forwarding:
            plan.add("sysctl", ns_of[h.name], "net.ipv4.ip_forward", "1")
            plan.add("sysctl", ns_of[h.name], "net.ipv6.conf.all.forwarding", "1")
        for k, v in h.sysctls:
            plan.add("sysctl", ns_of[h.name], k, v)

    for net in topo.networks:
        for m in net.members:
            for a in m.addresses:
                plan.add("addr", ns_of[m.host], m.interface, a)

    for h in topo.hosts:
        for r in h.routes:
            if r.dev and r.dev not in names[ns_of[h.name]]:
                raise TopologyError(f"hosts.{h.name}: route dev {r.dev!r} is none of its interfaces")
            plan.add("route", ns_of[h.name], r)
    for h in topo.hosts:
        for r in h.rules:
            plan.add("rule", ns_of[h.name], r)
    for h in topo.hosts:
        text = nft_text(h)
        if text:
            plan.add("nft", ns_of[h.name], text)
    return plan


# ---------------------------------------------------------------------------
# Tool (a): iproute2 shell script
# ---------------------------------------------------------------------------

def table_word(t):
    return {254: "main", 255: "local", 253: "default"}.get(t, str(t))


def render_shell(plan):
    """Return (up_script, down_script, number of commands in up)."""
    q = shlex.quote
    up = ["#!/bin/sh",
          f"# Generated by Benchmarks/peers.py from {plan.topology.source or plan.topology.name}: "
          f"topology {plan.topology.name}, {len(plan.namespaces)} namespaces.",
          "# One plain command per operation (no ip -batch), as a person would write it.",
          "set -e"]
    ncmd = 0
    section = None
    titles = {"netns": "namespaces", "bridge": "links", "veth": "links", "master": "links",
              "sysctl": "sysctls", "addr": "addresses", "route": "routes", "rule": "rules", "nft": "nftables"}
    for op in plan.ops:
        kind, ns = op[0], op[1]
        t = titles.get(kind, section)
        if t != section:
            up.append(f"\n# {t}")
            section = t
        n = q(ns)
        if kind == "netns":
            line = f"ip netns add {n}"
        elif kind == "up":
            line = f"ip -n {n} link set {q(op[2])} up"
        elif kind == "bridge":
            mtu = f" mtu {op[3]}" if op[3] else ""
            line = f"ip -n {n} link add {q(op[2])}{mtu} type bridge"
        elif kind == "veth":
            mtu = f" mtu {op[5]}" if op[5] else ""
            line = (f"ip -n {n} link add {q(op[2])}{mtu} type veth peer name {q(op[4])}{mtu} netns {q(op[3])}")
        elif kind == "master":
            line = f"ip -n {n} link set {q(op[2])} master {q(op[3])} up"
        elif kind == "sysctl":
            line = f"ip netns exec {n} sysctl -qw {q(op[2] + '=' + op[3])}"
        elif kind == "addr":
            a = op[3]
            line = f"ip -n {n} addr add {a.with_prefixlen} dev {q(op[2])}" + (" nodad" if a.version == 6 else "")
        elif kind == "route":
            r = op[2]
            s = f"ip -n {n} route add "
            if r.type != "unicast":
                s += r.type + " "
            s += str(r.to)
            if r.via:
                s += f" via {r.via}"
            if r.dev:
                s += f" dev {q(r.dev)}"
            if r.src:
                s += f" src {r.src}"
            if r.table != 254:
                s += f" table {table_word(r.table)}"
            if r.metric is not None:
                s += f" metric {r.metric}"
            line = s
        elif kind == "rule":
            r = op[2]
            s = f"ip -n {n}{' -6' if r.family == 6 else ''} rule add"
            if r.priority is not None:
                s += f" priority {r.priority}"
            if r.invert:
                s += " not"
            if r.src:
                s += f" from {r.src}"
            if r.dst:
                s += f" to {r.dst}"
            if r.fwmark is not None:
                s += f" fwmark {r.fwmark:#x}" + (f"/{r.fwmask:#x}" if r.fwmask is not None else "")
            if r.iif:
                s += f" iif {q(r.iif)}"
            if r.oif:
                s += f" oif {q(r.oif)}"
            s += f" lookup {table_word(r.table)}"
            line = s
        elif kind == "nft":
            body = op[2]
            marker = "EOF"
            while marker in body:
                marker += "_"
            line = f"ip netns exec {n} nft -f - <<'{marker}'\n{body}{marker}"
        else:
            raise AssertionError(kind)
        up.append(line)
        ncmd += 1
    down = ["#!/bin/sh",
            f"# Generated by Benchmarks/peers.py: teardown of {plan.topology.name}.",
            "set -e"]
    down += [f"ip netns del {q(ns)}" for ns in plan.namespaces]
    return "\n".join(up) + "\n", "\n".join(down) + "\n", ncmd


def iproute2_version():
    out = subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"iproute2-(\S+?),?\s", out + " ")
    return (m.group(1) if m else out), out


# ---------------------------------------------------------------------------
# Tool (b): pyroute2 in-process
# ---------------------------------------------------------------------------

class Pyroute2Builder:
    def __init__(self):
        import pyroute2
        from pyroute2 import netns as prnetns
        self.pyroute2 = pyroute2
        self.netns = prnetns
        self.version = getattr(pyroute2, "__version__", "?")
        self.quirks = []
        try:
            from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
        except ImportError:
            IFA_F_NODAD = 0x02
        try:
            from pyroute2.netlink.rtnl.fibmsg import FIB_RULE_INVERT
        except ImportError:
            FIB_RULE_INVERT = 0x02
        self.IFA_F_NODAD, self.FIB_RULE_INVERT = IFA_F_NODAD, FIB_RULE_INVERT

    def _open(self, ns):
        # pyroute2 >= 0.9.1: IPRoute(netns=...) (NetNS is a compatibility wrapper of it).
        # O_CREAT|O_EXCL: the namespace is created by the same forked child that opens the
        # netlink socket in it, and an existing namespace is an error, never reused.
        flags = os.O_CREAT | os.O_EXCL
        try:
            return self.pyroute2.IPRoute(netns=ns, flags=flags, groups=0)
        except TypeError:  # older pyroute2: NetNS(name, flags)
            return self.pyroute2.NetNS(ns, flags=flags)

    def _index(self, ns, ifname):
        key = (ns, ifname)
        idx = self.index.get(key)
        if idx is None:
            found = self.ipr[ns].link_lookup(ifname=ifname)
            if not found:
                raise RuntimeError(f"{ns}: no interface {ifname}")
            idx = self.index[key] = found[0]
        return idx

    def _sysctl(self, ns, key, value):
        path = "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))
        self.netns.pushns(ns)
        try:
            with open(path, "w") as f:
                f.write(value)
        finally:
            self.netns.popns()

    def _nft(self, ns, text):
        # The child inherits the namespace of the (main) thread that forks it.
        self.netns.pushns(ns)
        try:
            p = subprocess.run(["nft", "-f", "-"], input=text, text=True, capture_output=True)
        finally:
            self.netns.popns()
        if p.returncode != 0:
            raise RuntimeError(f"{ns}: nft -f - failed: {p.stderr.strip()}")

    def up(self, plan):
        self.ipr, self.index = {}, {}
        try:
            for op in plan.ops:
                kind, ns = op[0], op[1]
                if kind == "netns":
                    self.ipr[ns] = self._open(ns)
                    continue
                ipr = self.ipr[ns]
                if kind == "up":
                    ipr.link("set", index=self._index(ns, op[2]), state="up")
                elif kind == "bridge":
                    kw = {"mtu": op[3]} if op[3] else {}
                    ipr.link("add", ifname=op[2], kind="bridge", **kw)
                elif kind == "veth":
                    _, ns, ifname, pns, pifname, mtu = op
                    peer = {"ifname": pifname, "net_ns_fd": pns}
                    kw = {}
                    if mtu:
                        peer["mtu"] = mtu
                        kw["mtu"] = mtu
                    ipr.link("add", ifname=ifname, kind="veth", peer=peer, **kw)
                elif kind == "master":
                    ipr.link("set", index=self._index(ns, op[2]), master=self._index(ns, op[3]), state="up")
                elif kind == "sysctl":
                    self._sysctl(ns, op[2], op[3])
                elif kind == "addr":
                    a = op[3]
                    kw = {"flags": self.IFA_F_NODAD} if a.version == 6 else {}
                    ipr.addr("add", index=self._index(ns, op[2]), address=str(a.ip), prefixlen=a.network.prefixlen, **kw)
                elif kind == "route":
                    r = op[2]
                    # proto boot (3) is what `ip route add` sends; pyroute2's default is static (4)
                    kw = {"dst": str(r.to), "family": socket.AF_INET6 if r.family == 6 else socket.AF_INET,
                          "table": r.table, "proto": 3}
                    if r.type != "unicast":
                        kw["type"] = r.type
                    if r.via:
                        kw["gateway"] = str(r.via)
                    elif r.type == "unicast":
                        kw["scope"] = 253  # link, as `ip route add` picks for a route with no via
                    if r.dev:
                        kw["oif"] = self._index(ns, r.dev)
                    if r.src:
                        kw["prefsrc"] = str(r.src)
                    if r.metric is not None:
                        kw["priority"] = r.metric
                    ipr.route("add", **kw)
                elif kind == "rule":
                    r = op[2]
                    kw = {"family": socket.AF_INET6 if r.family == 6 else socket.AF_INET, "table": r.table,
                          "action": "to_tbl"}
                    # pyroute2 fills in priority 32000 when the key is absent; an explicit None
                    # leaves FRA_PRIORITY out so the kernel picks one, as with `ip rule add`.
                    kw["priority"] = r.priority
                    if r.invert:
                        kw["flags"] = self.FIB_RULE_INVERT
                    if r.src:
                        kw["src"], kw["src_len"] = str(r.src.network_address), r.src.prefixlen
                    if r.dst:
                        kw["dst"], kw["dst_len"] = str(r.dst.network_address), r.dst.prefixlen
                    if r.fwmark is not None:
                        kw["fwmark"] = r.fwmark
                        if r.fwmask is not None:
                            kw["fwmask"] = r.fwmask
                    if r.iif:
                        kw["iifname"] = r.iif
                    if r.oif:
                        kw["oifname"] = r.oif
                    ipr.rule("add", **kw)
                elif kind == "nft":
                    self._nft(ns, op[2])
                else:
                    raise AssertionError(kind)
        finally:
            for ipr in self.ipr.values():
                try:
                    ipr.close()
                except Exception:
                    pass
            self.ipr = {}

    def down(self, plan):
        for ns in plan.namespaces:
            self.netns.remove(ns)


# ---------------------------------------------------------------------------
# Common: namespaces present, cleanup, checks
# ---------------------------------------------------------------------------

def netns_list():
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def leftovers(prefix):
    return [n for n in netns_list() if n.startswith(prefix)]


def cleanup(plan):
    """Delete whatever namespace of the plan exists (after an error, or to be sure)."""
    errors = []
    present = set(netns_list())
    for ns in plan.namespaces:
        if ns in present:
            p = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if p.returncode != 0:
                errors.append(f"ip netns del {ns}: {p.stderr.strip()}")
    return errors


KNOWN_CHECKS = {
    # north-east-west: nic forwards between public-2 and public-3, both families.
    "north-east-west": [
        ("ping", "west", "192.1.3.33"),
        ("ping", "north", "192.1.2.45"),
        ("ping", "west", "2001:db8:1:3::33"),
        ("ping", "north", "2001:db8:1:2::23"),
        ("ping", "east", "192.0.1.254"),            # east's route to west's private subnet
        ("ping", "west", "192.0.2.254"),            # and back
        # the fwmark 0x1/0xff rule sends marked traffic to table 50 (default via east)
        ("route-get", "west", ["192.1.3.33", "mark", "0x1"], "via 192.1.2.23"),
        ("route-get", "west", ["192.1.3.33"], "via 192.1.2.254"),
    ],
    # The server has no route to 10.0.1.0/24: a client reaches it only through masquerade.
    "client1-client2-server": [
        ("ping", "client1", "198.51.100.1"),
        ("ping", "client2", "198.51.100.1"),
        ("ping", "client1", "198.51.100.254"),
    ],
}


def ping(ns, addr):
    ip = ipaddress.ip_address(addr)
    # One reply within 3 s, asking every 0.2 s: right after a build the first packet can
    # be dropped (on a big bridge the IPv6 DAD/MLD multicast of hundreds of new ports is
    # flooded to every port and overflows the softnet backlog), so -c1 -W1 would flake.
    cmd = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c1", "-i0.2", "-w3"]
    if ip.version == 6:
        cmd.insert(4 + 1, "-6")
    cmd.append(str(ip))
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode == 0, " ".join(cmd)


def run_checks(plan, extra_pings):
    """Reachability and state checks once, outside timing. Returns (passed, failures)."""
    if shutil.which("ping") is None:
        raise RuntimeError("--check needs ping (apt-get install iputils-ping)")
    topo, pfx = plan.topology, plan.prefix
    ns_of = {h.name: pfx + h.name for h in topo.hosts}
    passed, failures = 0, []

    def record(ok, what):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failures.append(what)

    # every member of a multi-member network reaches the first member, in each family
    for net in topo.networks:
        if len(net.members) < 2:
            continue
        anchor = net.members[0]
        for m in net.members[1:]:
            for a in anchor.addresses:
                if any(b.version == a.version for b in m.addresses):
                    ok, cmd = ping(ns_of[m.host], str(a.ip))
                    record(ok, cmd)
    # sysctls read back
    for op in plan.ops:
        if op[0] == "sysctl":
            p = subprocess.run(["ip", "netns", "exec", op[1], "sysctl", "-n", op[2]], capture_output=True, text=True)
            record(p.returncode == 0 and p.stdout.strip() == op[3], f"{op[1]}: sysctl {op[2]} = {p.stdout.strip()!r}, want {op[3]!r}")
        elif op[0] == "nft":
            p = subprocess.run(["ip", "netns", "exec", op[1], "nft", "list", "ruleset"], capture_output=True, text=True)
            want = "masquerade" if "masquerade" in op[2] else ""
            record(p.returncode == 0 and want in p.stdout, f"{op[1]}: nft list ruleset lacks {want!r}")
    checks = list(KNOWN_CHECKS.get(topo.name, [])) + [("ping", h, a) for h, a in extra_pings]
    for c in checks:
        if c[1] not in ns_of:
            failures.append(f"check names unknown host {c[1]}")
            continue
        if c[0] == "ping":
            ok, cmd = ping(ns_of[c[1]], c[2])
            record(ok, cmd)
        elif c[0] == "route-get":
            cmd = ["ip", "-n", ns_of[c[1]], "route", "get"] + c[2]
            p = subprocess.run(cmd, capture_output=True, text=True)
            record(p.returncode == 0 and c[3] in p.stdout, f"{' '.join(cmd)} -> {p.stdout.strip()!r}, want {c[3]!r}")
    return passed, failures


def normalize_dump(text, prefix):
    """Drop what differs from run to run: ifindexes (@ifNN), MACs, link-local
    addresses, the operstate column of `-br` (a bridge goes UNKNOWN -> UP a moment
    after its first port does, so it depends on how fast the build was)."""
    text = text.replace(prefix, "PFX-")
    text = re.sub(r"@if\d+", "@if", text)
    text = re.sub(r"\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b", "MAC", text)
    text = re.sub(r"^local fe80::\S* .*\n", "", text, flags=re.M)  # appear once DAD is done
    text = re.sub(r" ?fe80::[0-9a-f:]+/64", "", text)
    text = re.sub(r"^(\S+)[ \t]+(UP|UNKNOWN|DOWN|LOWERLAYERDOWN|DORMANT)[ \t]+", r"\1 ", text, flags=re.M)
    return text


def dump_state(plan, path):
    """Write what each namespace holds (links, addresses, routes, rules, nft), for diffing tools."""
    with open(path, "w") as f:
        for ns in plan.namespaces:
            short = ns[len(plan.prefix):]
            f.write(f"=== {short}\n")
            for args in (["-br", "link"], ["-br", "addr"], ["-4", "route", "show", "table", "all"],
                         ["-6", "route", "show", "table", "all"], ["rule"], ["-6", "rule"]):
                p = subprocess.run(["ip", "-n", ns] + args, capture_output=True, text=True)
                f.write(f"--- ip {' '.join(args)}\n")
                lines = normalize_dump(p.stdout, plan.prefix).splitlines(keepends=True)
                # the kernel lists routes in the order they were made: sort to compare
                f.write("".join(sorted(lines) if "route" in args else lines))
            p = subprocess.run(["ip", "-n", ns, "-o", "-d", "link"], capture_output=True, text=True)
            f.write("--- ip -o -d link: name kind mtu master\n")
            for line in p.stdout.splitlines():
                m = re.match(r"\d+: ([^:@]+)(?:@\S+)?: .* mtu (\d+)", line)
                master = re.search(r" master (\S+)", line)
                kind = re.search(r"\\\s+(veth|bridge_slave|bridge)\b", line)
                if m:
                    f.write(f"{m.group(1)} {kind.group(1) if kind else '-'} mtu {m.group(2)}"
                            f" master {master.group(1) if master else '-'}\n")
            p = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True)
            f.write("--- nft list ruleset\n" + p.stdout)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def down_script_path(up_path):
    if up_path.endswith("-up.sh"):
        return up_path[: -len("-up.sh")] + "-down.sh"
    stem, ext = os.path.splitext(up_path)
    return f"{stem}-down{ext or '.sh'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="See the module docstring for the plan both tools execute.")
    ap.add_argument("--tool", choices=["iproute2", "pyroute2"])
    ap.add_argument("--prefix", help="namespace name prefix, e.g. xlb1234-")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--script-out", metavar="FILE",
                    help="iproute2: keep the up script here and the teardown next to it "
                         "(FILE-up.sh -> FILE-down.sh, else STEM-down.EXT)")
    ap.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                    help="pause before each build after the first, outside timing, so the kernel's "
                         "asynchronous cleanup of the namespaces just deleted does not land in the "
                         "next up_ms (default 1.0)")
    ap.add_argument("--check", action="store_true",
                    help="after the first build, outside timing: pings and state checks")
    ap.add_argument("--ping", action="append", default=[], metavar="HOST:ADDR",
                    help="with --check: also ping ADDR from HOST (repeatable)")
    ap.add_argument("--dump-state", metavar="FILE",
                    help="after the first build, outside timing: write every namespace's state to FILE")
    ap.add_argument("--star", type=int, metavar="N", help="build the star of N hosts (see docstring)")
    ap.add_argument("--emit-yaml", action="store_true",
                    help="print the topology (with --star: the generated star file) as YAML and exit")
    ap.add_argument("--verdict-ping", metavar="HOST:ADDR",
                    help="time from the start of up until HOST's first ping of ADDR is answered "
                         "(`ip netns exec NS ping -c1 -i0.2 -w3`, retried for up to 10 s), as verdict_ms")
    ap.add_argument("topology", nargs="?")
    args = ap.parse_args(argv)

    if (args.topology is None) == (args.star is None):
        ap.error("give exactly one of TOPOLOGY.yaml and --star N")
    try:
        topo = star_topology(args.star) if args.star is not None else load_topology(args.topology)
    except (TopologyError, OSError) as e:
        print(f"peers.py: {e}", file=sys.stderr)
        return 2
    if args.emit_yaml:
        if args.star is None:
            ap.error("--emit-yaml is for --star N")
        sys.stdout.write(star_yaml(args.star))
        return 0
    if not args.tool or not args.prefix:
        ap.error("--tool and --prefix are required")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.prefix):
        ap.error("--prefix: letters, digits, _ . - only")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    pings = []
    for s in args.ping:
        h, sep, a = s.partition(":")
        if not sep:
            ap.error(f"--ping {s}: HOST:ADDR")
        pings.append((h, a))
    if os.geteuid() != 0:
        print("peers.py: must run as root (it creates network namespaces)", file=sys.stderr)
        return 2

    try:
        plan = compile_plan(topo, args.prefix)
    except TopologyError as e:
        print(f"peers.py: {e}", file=sys.stderr)
        return 2

    existing = leftovers(args.prefix)
    if existing:
        print(f"peers.py: namespaces named {args.prefix}* exist already: {' '.join(existing)}; "
              "refusing to touch them", file=sys.stderr)
        return 2

    result = {"tool": args.tool, "version": None, "topology": topo.name,
              "hosts": len(topo.hosts), "namespaces": len(plan.namespaces),
              "operations": len(plan.ops), "repeat": args.repeat, "settle_s": args.settle,
              "up_ms": [], "down_ms": [], "verdict_ms": [], "notes": ""}
    notes = []
    tmpdir = None
    error = None
    builder = None
    try:
        if args.tool == "iproute2":
            result["version"], vline = iproute2_version()
            up_text, down_text, ncmd = render_shell(plan)
            if args.script_out:
                up_path = os.path.abspath(args.script_out)
                down_path = down_script_path(up_path)
            else:
                tmpdir = tempfile.mkdtemp(prefix="peers-")
                up_path, down_path = os.path.join(tmpdir, "up.sh"), os.path.join(tmpdir, "down.sh")
            for path, text in ((up_path, up_text), (down_path, down_text)):
                with open(path, "w") as f:
                    f.write(text)
                os.chmod(path, 0o755)
            if args.script_out:
                result["script"] = up_path
                result["script_down"] = down_path
            result["commands"] = ncmd
            nsys = sum(1 for op in plan.ops if op[0] == "sysctl")
            nnft = sum(1 for op in plan.ops if op[0] == "nft")
            notes.append(f"{vline}; `sh up.sh` timed end to end: {ncmd} commands, each a fork+exec of ip "
                         f"({nsys} of them `ip netns exec NS sysctl -qw`, {nnft} `ip netns exec NS nft -f -`); "
                         f"down: {len(plan.namespaces)} x `ip netns del`")

            def do_up():
                p = subprocess.run(["sh", up_path], capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"sh {up_path} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")

            def do_down():
                p = subprocess.run(["sh", down_path], capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"sh {down_path} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        else:
            try:
                builder = Pyroute2Builder()
            except ImportError:
                raise RuntimeError("pyroute2 is not installed: pip install -r Benchmarks/requirements.txt") from None
            result["version"] = builder.version
            notes.append(f"pyroute2 {builder.version} in-process (import not timed): one IPRoute(netns=NS, "
                         "flags=O_CREAT|O_EXCL, groups=0) per namespace (pyroute2 forks a child to create "
                         "the namespace and open the socket in it); sysctls by pyroute2.netns.pushns + "
                         "write /proc/sys + popns; nftables by subprocess `nft -f -` forked inside the "
                         "namespace; ifindexes looked up once per interface (link_lookup); down: "
                         f"{len(plan.namespaces)} x pyroute2.netns.remove")

            def do_up():
                builder.up(plan)

            def do_down():
                builder.down(plan)

        for i in range(args.repeat):
            if i and args.settle > 0:
                time.sleep(args.settle)
            t0 = time.perf_counter()
            try:
                do_up()
            finally:
                result["up_ms"].append(round((time.perf_counter() - t0) * 1000, 3))
            if args.verdict_ping:
                host, _, addr = args.verdict_ping.partition(":")
                deadline = time.perf_counter() + 10
                while True:
                    ok, cmd = ping(args.prefix + host, addr)
                    if ok or time.perf_counter() > deadline:
                        break
                if not ok:
                    raise RuntimeError(f"--verdict-ping: {cmd} never answered")
                result["verdict_ms"].append(round((time.perf_counter() - t0) * 1000, 3))
            if i == 0 and (args.check or args.dump_state):
                if args.dump_state:
                    dump_state(plan, args.dump_state)
                if args.check:
                    passed, failures = run_checks(plan, pings)
                    result["check"] = {"passed": passed, "failed": failures}
                    if failures:
                        raise RuntimeError(f"--check: {len(failures)} failed: " + "; ".join(failures[:10]))
            t0 = time.perf_counter()
            do_down()
            result["down_ms"].append(round((time.perf_counter() - t0) * 1000, 3))
    except Exception as e:  # report, then clean up below
        error = f"{type(e).__name__}: {e}"
    finally:
        cleanup_errors = cleanup(plan)
        left = leftovers(args.prefix)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if cleanup_errors:
        error = (error + "; " if error else "") + "; ".join(cleanup_errors)
    if left:
        error = (error + "; " if error else "") + f"namespaces left behind: {' '.join(left)}"
    if error:
        print(f"peers.py: {args.tool} on {topo.name}: {error}", file=sys.stderr)
        return 1
    notes.append("down_ms counts the deletes only: the kernel frees namespaces asynchronously")
    result["notes"] = "; ".join(notes)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
