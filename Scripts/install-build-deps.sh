#!/usr/bin/env bash
# Installs what `xfrmlab kernels build` needs to compile a kernel, and only what is missing
# (idempotent; `apt-get update` only when a package is unknown to apt's lists). Called by the
# kernel-building targets of the Makefile (`make mutants`, `make test`):
#
#   Scripts/install-build-deps.sh
#
# The kernel sources themselves are not installed: the catalogue (Fixtures/kernels/kernels.lock)
# pins Debian's linux-source packages and `xfrmlab kernels build` unpacks them into its own cache.
set -euo pipefail

# Kbuild's own needs (flex/bison for Kconfig, libelf for objtool, libssl for the signing tools,
# bc for the timeconst header, cpio for the in-kernel headers archive); virtme-ng writes the config.
apt_packages=(build-essential flex bison bc cpio libelf-dev libssl-dev xz-utils patch)

"$(dirname "$0")/install-apt-packages.sh" build-deps "${apt_packages[@]}"
