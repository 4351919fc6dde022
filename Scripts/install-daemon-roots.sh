#!/usr/bin/env bash
# Builds the root filesystems other daemon releases run from, once, into a cache of the
# project's (never the machine's / or apt state). Called by `make daemon-roots` (and so by
# `make test`); idempotent: a root that is there is kept (remove it to take a newer version).
#
#   Scripts/install-daemon-roots.sh [RELEASE-DAEMON ...]    default: trixie-strongswan trixie-libreswan
#
# RELEASE is a Debian release the package registry serves (bullseye, trixie, sid …), DAEMON
# strongswan or libreswan: a binary of trixie or sid needs trixie's C library, so it runs from
# a root of its own release (see Sources/Daemons/Runtime.swift for how the Daemons module enters
# one inside a lab namespace). One daemon per root: Debian has the two conflict as packages.
# The cache is $XFRMLAB_DAEMON_CACHE, else /var/lib/xfrmlab/daemons; each root gets a
# .xfrmlab-root file naming the release, the daemon and its package version.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${XFRMLAB_DAEMON_CACHE:-/var/lib/xfrmlab/daemons}
mirror=${XFRMLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
roots=("$@")
[ ${#roots[@]} -gt 0 ] || roots=(trixie-strongswan trixie-libreswan)

Scripts/install-apt-packages.sh daemon-roots mmdebstrap

mkdir -p "$cache"
for name in "${roots[@]}"; do
    release=${name%-*}
    daemon=${name##*-}
    case "$daemon" in
        # charon-systemd: a charon without the starter; swanctl; openssl, gcm and the rest
        # (standard plugins); kernel-libipsec (extra plugins); pki for certificates.
        strongswan) packages=charon-systemd,strongswan-swanctl,libstrongswan-standard-plugins,libcharon-extra-plugins,strongswan-pki
                    package=charon-systemd ;;
        # pluto with its tools; certutil and pk12util for its NSS database.
        libreswan)  packages=libreswan,libnss3-tools
                    package=libreswan ;;
        *) echo "daemon-roots: $name: the daemon must be strongswan or libreswan (as in trixie-strongswan)" >&2; exit 2 ;;
    esac
    root=$cache/$name
    if [ -s "$root/.xfrmlab-root" ]; then
        continue
    fi
    echo "daemon-roots: building $root ($release: $packages)"
    rm -rf "$root.new"
    start=$(date +%s)
    # essential + the daemon, iproute2 (the updown scripts call ip) and procps; no docs. The
    # package scripts run inside the new root, where mmdebstrap keeps them from starting
    # services (its temporary policy-rc.d); its apt state is its own, not the machine's.
    # Signatures are checked; Valid-Until is not: the registry's sid Release was 31 days past it
    # on 2026-12-07 (a mirror that is not refreshed daily).
    if ! mmdebstrap --quiet --variant=essential --include="$packages,iproute2,procps" \
            --aptopt='Acquire::Check-Valid-Until "false"' \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "$release" "$root.new" "$mirror" > "$cache/$name.log" 2>&1; then
        echo "daemon-roots: mmdebstrap of $name failed; its output:" >&2
        tail -30 "$cache/$name.log" >&2
        rm -rf "$root.new"
        exit 1
    fi
    version=$(dpkg-query --admindir="$root.new/var/lib/dpkg" -W -f='${Version}' "$package")
    printf 'release: %s\ndaemon: %s\nversion: %s\n' "$release" "$daemon" "$version" > "$root.new/.xfrmlab-root"
    rm -rf "$root"
    mv "$root.new" "$root"
    echo "daemon-roots: $name: $package $version in $(( $(date +%s) - start )) s"
done
