#!/usr/bin/env bash
# Installs what XfrmLab needs on a Debian machine, and only what is missing (idempotent).
# Called by `make deps`; every other make target depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: libmnl for netlink, iproute2/nftables/iptables as the real tools the
# harness drives or compares against, ping/tcpdump for humans poking at a lab.
# graphviz draws topologies and traces; chromium (headless) checks that the matrix's HTML report renders;
# yamllint checks the CI files `xfrmlab init` writes.
apt_packages=(libmnl-dev pkg-config iproute2 nftables iptables iputils-ping tcpdump python3-pip graphviz chromium yamllint)
apt_packages+=("$@")

Scripts/install-apt-packages.sh deps "${apt_packages[@]}"

# PyPI: the peers of `make bench` (pyroute2) and the YAML reader of its script.
python=${PYTHON:-python3}
if ! "$python" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want = {}
for line in open("Benchmarks/requirements.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, _, v = line.partition("==")
        want[name] = v
sys.exit(0 if all(version(n) == v for n, v in want.items()) else 1)
PY
then
    echo "deps: pip install -r Benchmarks/requirements.txt"
    "$python" -m pip install -q --disable-pip-version-check -r Benchmarks/requirements.txt
fi

# The IKE daemons (strongSwan from apt, libreswan unpacked into .build/daemons): see that script.
Scripts/install-daemon-deps.sh
