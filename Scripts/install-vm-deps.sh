#!/usr/bin/env bash
# Installs what `xfrmlab matrix` needs to boot other kernels in VMs, and only what is missing
# (idempotent; `apt-get update` only when a package is unknown to apt's lists).
# Called by `make test`/`make matrix`:
#
#   Scripts/install-vm-deps.sh
#
# The kernels themselves are not installed: the catalogue (Fixtures/kernels/kernels.lock) pins
# them and `xfrmlab kernels fetch` unpacks them into its own cache, never /boot.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu boots the kernels (TCG when nested KVM fails, as on the machines this was written on);
# virtme-ng's initramfs needs a statically linked busybox (busybox-static replaces busybox); kmod's
# depmod indexes an unpacked kernel's modules and its modprobe loads them in the guest.
apt_packages=(qemu-system-x86 busybox-static python3-pip kmod)

Scripts/install-apt-packages.sh vm-deps "${apt_packages[@]}"

# PyPI: virtme-ng (vng), pinned to the version the matrix was written against.
python=${PYTHON:-python3}
virtme_ng_version=1.42
if ! command -v vng >/dev/null 2>&1 || [ "$("$python" -m pip show virtme-ng 2>/dev/null | sed -n 's/^Version: //p')" != "$virtme_ng_version" ]; then
    echo "vm-deps: pip install virtme-ng==$virtme_ng_version"
    "$python" -m pip install -q --disable-pip-version-check "virtme-ng==$virtme_ng_version"
    hash -r
fi
