#!/bin/sh
# /init of the vhci test guest (busybox ash). It runs one test case against a USB/IP
# server on the host, using the real Linux client: usbip(8) and vhci-hcd.
#
# Everything goes to the serial console, which the host reads line by line:
#   FLEET-STEP <name> OK|FAIL [detail]   progress and verdicts
#   FLEET-ACT <command...>               "host, do this now" (e.g. "type 1-2 usbip",
#                                        "unplug 1-1"); the host forwards it to the
#                                        dongle's control socket
#   FLEET-DONE rc=<n>                    last line before power-off
#
# Kernel command line (no dots in our names: dotted words are module parameters):
#   fleet_case=msc|hid|two|reattach|unplug
#   fleet_port=3240           server TCP port, reached at fleet_server through slirp
#   fleet_server=198.18.0.100 the guestfwd address (RFC 2544 benchmark range: it
#                             exists only inside QEMU's user-mode network)
#   fleet_msc=1-1 fleet_kbd=1-2   remote busids of the devices the case uses
#   fleet_files=3 fleet_mib=4     msc: how many random files of how many MiB
#   fleet_shell=1             shell on the console instead of powering off
#   fleet_script=/path        host case: script to run from the host's file system
#                             (virtfs tag "hostroot", read-only) in a chroot
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s /bin 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# usbip attach records each connection under /var/run/vhci_hcd
mkdir -p /var/run/vhci_hcd /tmp /mnt/disk

up() { cut -d' ' -f1 /proc/uptime; }
RC=0
ok() { echo "FLEET-STEP $1 OK t=$(up)${2:+ $2}"; }
fail() { echo "FLEET-STEP $1 FAIL t=$(up)${2:+ $2}"; RC=1; }
act() { echo "FLEET-ACT $*" >&2; }   # stderr: keys() runs inside $(...)

finish() {
    echo "---- dmesg (usb) ----"
    dmesg | grep -iE 'usb [0-9]|vhci|usb-storage|sd[a-z]|input|disconnect' | tail -n 40
    echo "---- end dmesg ----"
    echo "FLEET-DONE rc=$RC"
    sync
    [ "$SHELL_AT_END" = 1 ] && exec setsid cttyhack sh
    poweroff -f; sleep 2; reboot -f
}

CASE=msc PORT=3240 SERVER=198.18.0.100 MSC=1-1 KBD=1-2 FILES=3 MIB=4 SHELL_AT_END=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        fleet_case=*) CASE=${arg#*=};;
        fleet_port=*) PORT=${arg#*=};;
        fleet_server=*) SERVER=${arg#*=};;
        fleet_msc=*) MSC=${arg#*=};;
        fleet_kbd=*) KBD=${arg#*=};;
        fleet_files=*) FILES=${arg#*=};;
        fleet_mib=*) MIB=${arg#*=};;
        fleet_shell=*) SHELL_AT_END=${arg#*=};;
        fleet_script=*) SCRIPT=${arg#*=};;
    esac
done
echo "FLEET-INIT case=$CASE server=$SERVER:$PORT kernel=$(uname -r) t=$(up)"

# ---------------------------------------------------------------- modules
# busybox insmod ignores /proc/cmdline, so "module.param=value" words are passed on here
modargs() {
    m=$(echo "$1" | tr - _); a=""
    for w in $(cat /proc/cmdline); do
        case "$w" in *.*=*) k=$(echo "${w%%.*}" | tr - _); [ "$k" = "$m" ] && a="$a ${w#*.}";; esac
    done
    echo "$a"
}
bad=""
while read -r ko; do
    name=${ko##*/}; name=${name%.ko}
    insmod "$ko" $(modargs "$name") 2>/tmp/insmod.err || grep -q 'File exists' /tmp/insmod.err || bad="$bad $name"
done < /etc/fleet/modules
[ -d /sys/devices/platform/vhci_hcd.0 ] && ok modules "${bad:+failed:$bad}" || { fail modules "no vhci_hcd.0;$bad"; finish; }

# ---------------------------------------------------------------- network
ip link set lo up
IF=""
for i in $(seq 20); do
    for d in /sys/class/net/*; do [ "${d##*/}" != lo ] && IF=${d##*/}; done
    [ -n "$IF" ] && break; sleep 0.1
done
[ -n "$IF" ] || { fail net "no interface"; finish; }
ip link set "$IF" up
ip addr add 198.18.0.15/24 dev "$IF"
# slirp holds a second small segment until the guest ACKs the first, and Linux
# delays ACKs by up to 40 ms: quickack keeps URB round trips short.
[ -x /usr/sbin/ip2 ] && /usr/sbin/ip2 route replace 198.18.0.0/24 dev "$IF" src 198.18.0.15 quickack 1
ok net "if=$IF"

# ---------------------------------------------------------------- helpers
LAST_DEV=""
# attach BUSID: imports the remote device and waits for it to enumerate; sets LAST_DEV
attach() {
    before=" $(ls /sys/bus/usb/devices | tr '\n' ' ') "
    if ! usbip --tcp-port "$PORT" attach -r "$SERVER" -b "$1" 2>/tmp/attach.err; then
        fail "attach_$1" "$(tr '\n' ' ' < /tmp/attach.err)"; return 1
    fi
    LAST_DEV=""
    for i in $(seq 100); do
        for d in /sys/bus/usb/devices/*; do
            n=${d##*/}
            case "$n" in usb*|*:*) continue;; esac
            case "$before" in *" $n "*) continue;; esac
            [ -f "$d/idVendor" ] && LAST_DEV=$n
        done
        [ -n "$LAST_DEV" ] && break; sleep 0.1
    done
    [ -n "$LAST_DEV" ] || { fail "attach_$1" "no device enumerated"; return 1; }
    D=/sys/bus/usb/devices/$LAST_DEV
    ok "attach_$1" "dev=$LAST_DEV id=$(cat $D/idVendor):$(cat $D/idProduct) speed=$(cat $D/speed) product=\"$(cat $D/product 2>/dev/null)\""
}

# vhci port that carries remote BUSID (from `usbip port`)
port_of() {
    usbip port 2>/dev/null | awk -v b="$1" '/^Port [0-9]+:/{p=$2; sub(":","",p); p+=0} $0 ~ "/" b "$" {print p; exit}'
}

detach() {
    p=$(port_of "$1")
    [ -n "$p" ] || { fail "detach_$1" "not in usbip port"; return 1; }
    dev=$2
    usbip detach -p "$p" >/tmp/detach.out 2>&1 || { fail "detach_$1" "$(tr '\n' ' ' < /tmp/detach.out)"; return 1; }
    for i in $(seq 50); do [ -e "/sys/bus/usb/devices/$dev" ] || break; sleep 0.1; done
    [ -e "/sys/bus/usb/devices/$dev" ] && { fail "detach_$1" "device still present"; return 1; }
    ok "detach_$1" "port=$p"
}

# disk_of USBDEV: the sd* block device below that USB device
disk_of() {
    for i in $(seq 100); do
        for b in /sys/block/sd*; do
            [ -e "$b" ] || continue
            case "$(readlink -f "$b")" in */"$1"/*) [ "$(cat "$b/size")" != 0 ] && { echo "${b##*/}"; return 0; };; esac
        done
        sleep 0.1
    done
    return 1
}

# event_of USBDEV: the evdev node below that USB device
event_of() {
    for i in $(seq 100); do
        for e in /sys/bus/usb/devices/"$1"/"$1":*/*/input/input*/event*; do
            [ -e "$e" ] && { echo "${e##*/}"; return 0; }
        done
        sleep 0.1
    done
    return 1
}

# keys EVENT BUSID TEXT: asks the host to type TEXT, prints the Linux key codes pressed
keys() {
    : > /tmp/ev
    cat "/dev/input/$1" > /tmp/ev &
    reader=$!
    sleep 0.2   # usbhid polls the interrupt endpoint only while the node is open
    act type "$2" "$3"
    want=$(echo -n "$3" | wc -c)
    for i in $(seq 100); do
        n=$(od -An -v -tu2 -w24 /tmp/ev | awk '$9==1 && $11==1' | wc -l)
        [ "$n" -ge "$want" ] && break
        sleep 0.1
    done
    kill $reader 2>/dev/null; wait $reader 2>/dev/null
    od -An -v -tu2 -w24 /tmp/ev | awk '$9==1 && $11==1 {printf "%s ", $10}'
}

KEYS_USBIP="22 31 48 23 25 "   # KEY_U KEY_S KEY_B KEY_I KEY_P

check_keys() {
    got=$(keys "$1" "$2" usbip)
    [ "$got" = "$KEYS_USBIP" ] && ok "$3" "keys=$got" || fail "$3" "keys=\"$got\" expected \"$KEYS_USBIP\""
}

# msc_files DISK: file system, random files, remount, compare checksums
msc_files() {
    disk=$1
    mkdosfs -F 32 -n FLEET "/dev/$disk" >/tmp/mkfs.out 2>&1 || mkdosfs -n FLEET "/dev/$disk" >/tmp/mkfs.out 2>&1 \
        || { fail mkfs "$(tr '\n' ' ' < /tmp/mkfs.out)"; return 1; }
    mount -t vfat "/dev/$disk" /mnt/disk 2>/tmp/mount.err || { fail mount "$(tr "\n" " " < /tmp/mount.err) $(dmesg | tail -n 3 | tr "\n" " ")"; return 1; }
    ok mkfs "vfat on /dev/$disk"
    : > /tmp/sums
    s=$(up)
    for i in $(seq "$FILES"); do
        dd if=/dev/urandom of="/mnt/disk/f$i.bin" bs=1M count="$MIB" 2>/dev/null
        echo "$(sha256sum < "/mnt/disk/f$i.bin" | cut -d' ' -f1) f$i.bin" >> /tmp/sums
    done
    sync
    umount /mnt/disk
    echo 3 > /proc/sys/vm/drop_caches
    e=$(up)
    ok write "$FILES x $MIB MiB in $(awk -v s=$s -v e=$e 'BEGIN{printf "%.2f", e-s}') s"
    mount -t vfat "/dev/$disk" /mnt/disk || { fail remount; return 1; }
    bad=0
    while read -r sum name; do
        got=$(sha256sum < "/mnt/disk/$name" | cut -d' ' -f1)
        [ "$got" = "$sum" ] || { bad=1; echo "mismatch $name: wrote $sum read $got"; }
        echo "FLEET-SUM $name $got"
    done < /tmp/sums
    umount /mnt/disk
    [ $bad = 0 ] && ok readback "$FILES files, sha256 equal after remount" || fail readback "checksum mismatch"
}

# ---------------------------------------------------------------- cases
if [ "$CASE" = host ]; then
    # The project's own code (python, the venv, fleet) runs from the host's file system,
    # against this kernel's vhci-hcd; writable places are the guest's own tmpfs.
    mkdir -p /mnt/host
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose hostroot /mnt/host \
        || { fail hostfs "mount 9p hostroot failed"; finish; }
    mount -t proc proc /mnt/host/proc && mount -t sysfs sysfs /mnt/host/sys \
        && mount -t devtmpfs devtmpfs /mnt/host/dev || { fail hostfs "proc/sys/dev in the chroot"; finish; }
    mount -t tmpfs tmpfs /mnt/host/run && mkdir -p /mnt/host/run/vhci_hcd
    ok hostfs "$(ls /mnt/host | wc -l) entries"
    chroot /mnt/host /bin/sh "$SCRIPT" && ok script || fail script "rc=$?"
    finish
fi
usbip --tcp-port "$PORT" list -r "$SERVER" > /tmp/list 2>&1 && ok list "$(grep -c '^ *[0-9]-[0-9.]*:' /tmp/list) devices" \
    || { cat /tmp/list; fail list; finish; }
cat /tmp/list

case "$CASE" in
msc)
    attach "$MSC" || finish
    dev=$LAST_DEV
    disk=$(disk_of "$dev") || { fail disk "no sd* below $dev"; finish; }
    ok disk "/dev/$disk sectors=$(cat /sys/block/$disk/size)"
    msc_files "$disk"
    detach "$MSC" "$dev"
    ;;
hid)
    attach "$KBD" || finish
    ev=$(event_of "$LAST_DEV") || { fail input "no event node"; finish; }
    ok input "/dev/input/$ev"
    check_keys "$ev" "$KBD" keys
    detach "$KBD" "$LAST_DEV"
    ;;
two)
    attach "$MSC" || finish
    mdev=$LAST_DEV
    attach "$KBD" || finish
    kdev=$LAST_DEV
    disk=$(disk_of "$mdev") || { fail disk "no sd* below $mdev"; finish; }
    ev=$(event_of "$kdev") || { fail input "no event node"; finish; }
    ok both "disk=/dev/$disk event=/dev/input/$ev ports=$(usbip port 2>/dev/null | grep -c '^Port')"
    # both working at the same time: a disk read in flight while keys arrive
    dd if="/dev/$disk" of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null &
    rd=$!
    check_keys "$ev" "$KBD" keys
    wait $rd && ok read "4 MiB from /dev/$disk" || fail read "dd failed"
    detach "$KBD" "$kdev"
    detach "$MSC" "$mdev"
    ;;
reattach)
    for round in 1 2; do
        attach "$MSC" || finish
        dev=$LAST_DEV
        disk=$(disk_of "$dev") || { fail disk "no sd* below $dev (round $round)"; finish; }
        dd if=/dev/urandom of=/tmp/blk bs=64k count=4 2>/dev/null
        dd if=/tmp/blk of="/dev/$disk" bs=64k seek=$round oflag=direct conv=fsync 2>/dev/null
        echo 3 > /proc/sys/vm/drop_caches
        a=$(sha256sum < /tmp/blk | cut -d' ' -f1)
        b=$(dd if="/dev/$disk" bs=64k skip=$round count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$a" = "$b" ] && ok "io_round$round" "/dev/$disk 256 KiB written and read back" || fail "io_round$round" "$a != $b"
        detach "$MSC" "$dev" || finish
    done
    ;;
unplug)
    attach "$MSC" || finish
    mdev=$LAST_DEV
    attach "$KBD" || finish
    kdev=$LAST_DEV
    disk=$(disk_of "$mdev") || { fail disk "no sd* below $mdev"; finish; }
    ev=$(event_of "$kdev") || { fail input "no event node"; finish; }
    ( while dd if="/dev/$disk" of=/dev/null bs=120k iflag=direct 2>/dev/null; do :; done ) &
    reader=$!
    sleep 0.5
    [ -e "/sys/bus/usb/devices/$mdev" ] && ok reading "/dev/$disk busy"
    act unplug "$MSC"
    for i in $(seq 150); do [ -e "/sys/bus/usb/devices/$mdev" ] || break; sleep 0.1; done
    if [ -e "/sys/bus/usb/devices/$mdev" ]; then
        fail gone "$mdev still present 15 s after unplug"
    else
        ok gone "$(dmesg | grep 'USB disconnect' | tail -n 1)"
    fi
    for i in $(seq 50); do kill -0 $reader 2>/dev/null || break; sleep 0.1; done
    kill -0 $reader 2>/dev/null && { fail reader "disk reader still running"; kill $reader; } || ok reader "disk reader ended"
    [ -e "/sys/bus/usb/devices/$kdev" ] && ok survivor "$kdev still attached" || fail survivor "$kdev vanished too"
    check_keys "$ev" "$KBD" keys_after
    detach "$KBD" "$kdev"
    ;;
*)
    fail case "unknown fleet_case=$CASE"
    ;;
esac
finish
