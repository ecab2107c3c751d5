#!/usr/bin/env bash
# Sets up the vhci harness (tests/vhci): the Debian packages it needs, Debian's
# kernel package unpacked into a cache directory and the guest initramfs.
# Idempotent: a second run only checks, prints nothing and takes well under a second.
#
#   scripts/setup-vhci.sh [--force]      # --force rebuilds the initramfs
#   cache: $FLEET_VHCI_DIR, else $XDG_CACHE_HOME/fleet-vhci, else /tmp/fleet-vhci
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# qemu-system-x86: the guest; busybox-static: its userland; usbip: the client put
# into the guest (and `usbip list -r` on the host); cpio/kmod/file/xz-utils/zstd:
# building the initramfs and its module closure; iproute2: `ip ... quickack` in
# the guest; time/socat: debugging the relay by hand.
PKGS=(qemu-system-x86 busybox-static usbip iproute2 cpio kmod file xz-utils zstd time socat)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "[setup-vhci] installing Debian packages: ${missing[*]}" >&2
    sudo_=(); [[ "$(id -u)" == 0 ]] || sudo_=(sudo)
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec "$ROOT/tests/vhci/guest/build_initramfs.sh" "$@"
