#!/usr/bin/env bash
# Installs the two IKE daemons the Daemons module drives, and only what is missing (idempotent).
# Called by Scripts/install-deps.sh (`make deps`).
#
# Debian has libreswan conflict with strongSwan's charon (libreswan: Conflicts strongswan-libcharon,
# strongswan-starter), so only one of them can be an apt package:
#
#   strongSwan from apt: charon-systemd (a charon that needs no starter script and writes no pid
#     file, so several run side by side), swanctl, the kernel-libipsec plugin (libcharon-extra-
#     plugins), openssl/gcm (libstrongswan-standard-plugins) and pki (certificates).
#   libreswan unpacked from its .deb (`apt-get download` + `dpkg-deb -x`) into a prefix of the
#     project's, .build/daemons/libreswan (git-ignored); the libraries it links against come
#     from apt (its Depends line). pluto has its helper directory compiled in
#     (/usr/libexec/ipsec/addconn, which it runs at start-up): the Daemons module starts it in a
#     private mount namespace with the prefix's usr/libexec bind-mounted over /usr/libexec.
#
# Nothing here starts a daemon: policy-rc.d keeps package scripts from starting services, and a
# systemd host gets strongSwan's unit disabled again (an IKE daemon in the host's own network
# namespace is exactly what XfrmLab must never cause).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${XFRMLAB_LIBRESWAN_PREFIX:-$PWD/.build/daemons/libreswan}
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_install() {
    local missing=()
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "daemon-deps: installing ${missing[*]}"
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then apt-get update -qq; break; fi
    done
    # Keep package scripts from starting anything (Debian's own mechanism), for this install only.
    local temporary_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        temporary_policy=yes
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    [ -z "$temporary_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ $status -eq 0 ] || return $status
    if [ -d /run/systemd/system ] && printf '%s\n' "${missing[@]}" | grep -qx charon-systemd; then
        echo "daemon-deps: disabling strongswan.service (charon runs only inside lab namespaces)"
        systemctl disable --now strongswan.service >/dev/null 2>&1 || true
    fi
}

# strongSwan. If libreswan is an apt package here, its Conflicts make this fail loudly: that
# machine has the opposite arrangement, which the Daemons module also finds (see Installation).
apt_install charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins strongswan-pki

# libreswan, unpacked. Already an apt package? Then there is nothing to unpack. Already
# unpacked? Then nothing to do either (remove the prefix to take a newer version).
if installed libreswan; then
    exit 0
fi
if [ -x "$prefix/usr/libexec/ipsec/pluto" ] && [ -s "$prefix/.version" ]; then
    exit 0
fi
candidate=$(apt-cache policy libreswan 2>/dev/null | sed -n 's/^ *Candidate: //p')
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    apt-get update -qq
    candidate=$(apt-cache policy libreswan | sed -n 's/^ *Candidate: //p')
fi

# The libraries it links against (libnss3-tools, with certutil and pk12util, among them): the
# first alternative of every lib* dependency, without version constraints. The rest (host,
# dns-root-data, iptables) serves the ipsec scripts and DNSSEC, which the lab does not use.
depends=$(apt-cache show --no-all-versions "libreswan=$candidate" | sed -n 's/^Depends: //p' |
    tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/ //g' | grep '^lib')
# shellcheck disable=SC2086
apt_install $depends

echo "daemon-deps: unpacking libreswan $candidate into $prefix"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt, which needs a directory it may write.
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true
(cd "$work" && apt-get download -qq "libreswan=$candidate")
rm -rf "$prefix.new"
mkdir -p "$prefix.new"
dpkg-deb -x "$work"/libreswan_*.deb "$prefix.new"
# Everything pluto links against must resolve from apt's libraries.
if ldd "$prefix.new/usr/libexec/ipsec/pluto" | grep -q "not found"; then
    echo "daemon-deps: pluto has unresolved libraries:" >&2
    ldd "$prefix.new/usr/libexec/ipsec/pluto" | grep "not found" >&2
    exit 1
fi
printf '%s\n' "$candidate" > "$prefix.new/.version"
rm -rf "$prefix"
mv "$prefix.new" "$prefix"
"$prefix/usr/libexec/ipsec/pluto" --version | head -1
