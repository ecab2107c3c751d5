#!/bin/sh
# Runs inside the vhci guest, chrooted into the host's file system (read-only 9p): the
# project's own `fleet` CLI drives Debian's usbip against the guest kernel's vhci-hcd.
# Parameters come from the file named by fleet_env= on the kernel command line.
# Prints FLEET-STEP lines (verdicts) and FLEET-ACT lines (host actions) like guest_init.sh.
ENVFILE=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^fleet_env=//p')
. "$ENVFILE"   # FLEET_URL FLEET_TOKEN FLEET_USER FLEET_CLIENT_ADDRESS FLEET_DONGLE_ROUTES REPO DISK KBDBUS DPORT SERVER
export FLEET_URL FLEET_TOKEN FLEET_USER FLEET_CLIENT_ADDRESS FLEET_DONGLE_ROUTES
export HOME=/run/home XDG_CONFIG_HOME=/run/home/.config XDG_STATE_HOME=/run/home/.state PYTHONDONTWRITEBYTECODE=1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$HOME"
FLEET="$REPO/.venv/bin/fleet"
LOG=$XDG_STATE_HOME/fleet/keeper.log
RC=0
up() { cut -d' ' -f1 /proc/uptime; }
ok() { echo "FLEET-STEP $1 OK t=$(up)${2:+ $2}"; }
fail() { echo "FLEET-STEP $1 FAIL t=$(up)${2:+ $2}"; RC=1; }
act() { echo "FLEET-ACT $*"; }
one_line() { tr '\n' ' ' < "$1"; }
used_ports() { usbip port 2>/dev/null | grep -c '^Port'; }
no_ports() { for i in $(seq 25); do [ "$(used_ports)" = 0 ] && return 0; sleep 0.2; done; return 1; }
# io DEV STEP: 256 KiB written and read back, bypassing the page cache
io() {
    dd if=/dev/urandom of=/run/blk bs=64k count=4 2>/dev/null
    dd if=/run/blk of="$1" bs=64k seek=1 oflag=direct conv=fsync 2>/dev/null
    a=$(sha256sum < /run/blk | cut -d' ' -f1)
    b=$(dd if="$1" bs=64k skip=1 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$a" = "$b" ] && ok "$2" "256 KiB written and read back on $1" || fail "$2" "$a != $b"
}

# 1. fleet attach: lease, grant, usbip attach, vhci port, local device
if $FLEET attach "$DISK" --for 10m --interval 0.5 > /run/attach.out 2> /run/attach.err; then
    ok attach "$(one_line /run/attach.out)"
else
    fail attach "$(one_line /run/attach.err)"; exit 1
fi
dev=$(grep -o '/dev/sd[a-z]*' /run/attach.out | head -n 1)
[ -b "$dev" ] && ok node "$dev" || fail node "no block device named in the attach output"
[ "$(used_ports)" = 1 ] && ok vhci_port "$(usbip port | grep '^Port')" || fail vhci_port "$(used_ports) ports in use"
io "$dev" io

# 2. someone else's lease: plain usbip attach of that device is refused by the dongle
act lease-other
for i in $(seq 50); do $FLEET who "$KBDNAME" 2>/dev/null | grep -q bob && break; sleep 0.2; done
if msg=$(usbip --tcp-port "$DPORT" attach -r "$SERVER" -b "$KBDBUS" 2>&1); then
    fail nonholder "usbip attach of a device leased to bob succeeded"
else
    ok nonholder "$(echo "$msg" | tr '\n' ' ')"
fi

# 3. the dongle reboots: the keeper re-attaches by itself while the lease is valid
act reboot
for i in $(seq 150); do grep -q 're-attached' "$LOG" 2>/dev/null && break; sleep 0.2; done
if grep -q 're-attached' "$LOG" 2>/dev/null; then
    ok reattach "$(grep -E 'dropped|re-attached' "$LOG" | tr '\n' ' ')"
    dev2=$(grep 're-attached' "$LOG" | tail -n 1 | grep -o '/dev/sd[a-z]*' | head -n 1)
    [ -b "$dev2" ] && io "$dev2" io_after_reattach || fail io_after_reattach "no block device after re-attach: $(cat "$LOG")"
else
    fail reattach "$(cat "$LOG" 2>/dev/null | tr '\n' ' ')"
fi

# 4. fleet detach: no vhci port in use
if $FLEET detach "$DISK" > /run/detach.out 2>&1; then ok detach "$(one_line /run/detach.out)"; else fail detach "$(one_line /run/detach.out)"; fi
# (the host checks afterwards that the service holds no lease on it)
no_ports && ok no_port || fail no_port "$(usbip port | tr '\n' ' ')"

# 5. fleet lease -- COMMAND: the command sees the device in its environment, fails like
#    `false`, and fleet passes that status on after detaching and releasing
$FLEET lease "$DISK" --for 5m -- sh -c 'test -b "$FLEET_DEV" || exit 9; echo "FLEET_DEV=$FLEET_DEV"; false' \
    > /run/lease.out 2>&1
rc=$?
grep -q "FLEET_DEV=/dev/sd" /run/lease.out && ok lease_env "$(grep FLEET_DEV= /run/lease.out)" \
    || fail lease_env "rc=$rc $(one_line /run/lease.out)"
[ $rc = 1 ] && ok lease_false "rc=$rc" || fail lease_false "rc=$rc $(one_line /run/lease.out)"
no_ports && ok no_port_after_lease || fail no_port_after_lease "$(usbip port | tr '\n' ' ')"
exit $RC
