#!/usr/bin/env bash
# Builds what the vhci guest boots: Debian's stock kernel (unpacked from its .deb,
# nothing installed on the host) and a busybox initramfs holding the USB/IP
# client, the few modules the cases need and guest_init.sh as /init.
#
# Output (never inside the repository):
#   $FLEET_VHCI_DIR/{vmlinux,vmlinuz,initramfs.cpio.gz,kver}
#   FLEET_VHCI_DIR defaults to $XDG_CACHE_HOME/fleet-vhci, else /tmp/fleet-vhci.
# Rebuilds only when this script, guest_init.sh or the kernel version change;
# prints nothing when everything is up to date.
#
# Usage: build_initramfs.sh [--force]      Env: KVER=6.1.0-NN-amd64 to pin the kernel
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${FLEET_VHCI_DIR:-}" ]]; then DIR="$FLEET_VHCI_DIR"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then DIR="$XDG_CACHE_HOME/fleet-vhci"
else DIR=/tmp/fleet-vhci; fi
FORCE=0; [[ "${1:-}" == "--force" ]] && FORCE=1
say() { printf '[fleet-vhci] %s\n' "$*" >&2; }

KROOT="$DIR/kernel"
mkdir -p "$DIR"

# --- kernel: the version linux-image-amd64 currently points at, fetched once ---
if [[ -z "${KVER:-}" ]]; then
    if [[ -d "$KROOT/lib/modules" ]]; then
        KVER="$(ls "$KROOT/lib/modules" | sort -V | tail -1)"
    else
        pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
        if [[ -z "$pkg" ]]; then
            apt-get update >/dev/null
            pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
        fi
        [[ -n "$pkg" ]] || { say "apt-cache knows no linux-image-amd64"; exit 1; }
        KVER="${pkg#linux-image-}"
    fi
fi
if [[ ! -f "$KROOT/boot/vmlinuz-$KVER" ]]; then
    say "downloading linux-image-$KVER (about 70 MB, once)"
    dl="$DIR/download"; rm -rf "$dl"; mkdir -p "$dl"
    # apt-get download as root warns about the unsandboxed download; that is expected
    (cd "$dl" && { apt-get download "linux-image-$KVER" 2>/dev/null \
        || { apt-get update >/dev/null && apt-get download "linux-image-$KVER"; }; })
    deb="$(ls "$dl"/linux-image-"$KVER"_*.deb | head -1)"
    rm -rf "$KROOT"; mkdir -p "$KROOT"
    dpkg-deb -x "$deb" "$KROOT"
    rm -rf "$dl"
    # firmware and unrelated drivers are most of the package; keep only what
    # modprobe --show-depends can need for our module list
fi
MODDIR="$KROOT/lib/modules/$KVER"
[[ -f "$MODDIR/modules.dep" ]] || depmod -b "$KROOT" "$KVER"

# Modules the cases use, in load order. vfat + its code pages for mkfs/mount,
# virtio for the slirp NIC, vhci-hcd for the client under test.
# 9p + 9pnet_virtio let the "host" case mount the host's file system (virtfs).
MODS=(virtio_pci virtio_net vhci-hcd usb-storage sd_mod usbhid hid-generic evdev
      vfat nls_cp437 nls_ascii nls_utf8 crc64_rocksoft_generic crct10dif_generic
      9p 9pnet_virtio)

sig="$(cat "$HERE/guest_init.sh" "$HERE/build_initramfs.sh" | sha256sum | cut -c1-16)-$KVER-${MODS[*]}"
if [[ $FORCE == 0 && -f "$DIR/initramfs.cpio.gz" && -f "$DIR/vmlinux" && "$(cat "$DIR/stamp" 2>/dev/null)" == "$sig" ]]; then
    exit 0
fi

ST="$DIR/root"
rm -rf "$ST"
mkdir -p "$ST"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,mnt,etc/fleet,lib/modules/"$KVER"}
file -L /bin/busybox | grep -q 'statically linked' || { say "/bin/busybox must be busybox-static"; exit 1; }
cp /bin/busybox "$ST/bin/busybox"
for app in sh mount insmod; do ln -s busybox "$ST/bin/$app"; done

# A dynamically linked tool plus every library ldd names, at the same paths.
copy_elf() {
    local src="$1" dst="$2" lib
    mkdir -p "$(dirname "$ST$dst")"; cp -L "$src" "$ST$dst"
    for lib in $(ldd "$src" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}'); do
        [[ -e "$lib" ]] || continue
        mkdir -p "$ST$(dirname "$lib")"; cp -L "$lib" "$ST$lib"
    done
}
copy_elf /usr/sbin/usbip /usr/sbin/usbip
# iproute2's ip can set "quickack" on a route; busybox ip cannot (see guest_init.sh)
[[ -x /usr/sbin/ip || -x /bin/ip ]] && copy_elf "$(command -v ip)" /usr/sbin/ip2
[[ -e "$ST/lib64/ld-linux-x86-64.so.2" ]] || { mkdir -p "$ST/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$ST/lib64/"; }

: > "$ST/etc/fleet/modules"
declare -A seen=()
for m in "${MODS[@]}"; do
    while read -r kw path _; do
        [[ "$kw" == insmod ]] || continue
        rel="${path#"$MODDIR"/}"
        [[ -n "${seen[$rel]:-}" ]] && continue
        seen[$rel]=1
        mkdir -p "$ST/lib/modules/$KVER/$(dirname "$rel")"
        case "$rel" in
            *.ko.xz)  xz -dc "$path" > "$ST/lib/modules/$KVER/${rel%.xz}"; rel="${rel%.xz}";;
            *.ko.zst) zstd -qdc "$path" > "$ST/lib/modules/$KVER/${rel%.zst}"; rel="${rel%.zst}";;
            *)        cp "$path" "$ST/lib/modules/$KVER/$rel";;
        esac
        echo "/lib/modules/$KVER/$rel" >> "$ST/etc/fleet/modules"
    done < <(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m")
done
install -m 0755 "$HERE/guest_init.sh" "$ST/init"

(cd "$ST" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -6 > "$DIR/initramfs.cpio.gz.tmp"
mv "$DIR/initramfs.cpio.gz.tmp" "$DIR/initramfs.cpio.gz"
rm -rf "$ST"
cp "$KROOT/boot/vmlinuz-$KVER" "$DIR/vmlinuz"
# QEMU can boot the uncompressed ELF through its PVH note, which saves the
# in-guest XZ decompression (about 2 s under TCG).
python3 - "$DIR/vmlinuz" "$DIR/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
while off != -1:
    try:
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
    except lzma.LZMAError:
        out = b""
    if out[:4] == b"\x7fELF":
        open(sys.argv[2], "wb").write(out)
        sys.exit(0)
    off = data.find(b"\xfd7zXZ\x00", off + 1)
sys.exit("no XZ-compressed ELF kernel found in " + sys.argv[1])
PY
echo "$KVER" > "$DIR/kver"
echo "$sig" > "$DIR/stamp"
say "built $DIR (kernel $KVER, $(wc -l < "$DIR/initramfs.cpio.gz" >/dev/null; du -h "$DIR/initramfs.cpio.gz" | cut -f1) initramfs)"
