#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet, and nothing else (idempotent;
# `apt-get update` only when apt's lists do not know one of them). The install scripts share it:
#
#   Scripts/install-apt-packages.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift

missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "$label: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
        apt-get update -qq
        break
    fi
done
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
