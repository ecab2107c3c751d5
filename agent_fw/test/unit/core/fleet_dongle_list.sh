#!/bin/sh
# fleet-dongle with an MSC and a keyboard: Debian's usbip must list both with
# the right VID:PID (the real tool is the client of the management phase);
# the control channel answers list/plug/stats, and SIGTERM exits 0.
set -u
BIN="$1"; USBIP="${2:-usbip}"
DIR=$(mktemp -d)
OUT="$DIR/out"; ERR="$DIR/err"; CTL="$DIR/ctl"
"$BIN" --listen 127.0.0.1:0 --device msc:size=8M --device hid-keyboard --control "$CTL" >"$OUT" 2>"$ERR" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do grep -q '^listening on' "$OUT" && break; sleep 0.1; done
PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$OUT")
[ -n "$PORT" ] || { echo "no banner"; cat "$ERR"; exit 1; }
LIST=$("$USBIP" --tcp-port "$PORT" list -r 127.0.0.1 2>&1)
echo "$LIST"
echo "$LIST" | grep -q '1-1: .*(1209:0001)' || { echo "msc 1-1 missing"; exit 1; }
echo "$LIST" | grep -q '1-2: .*(1209:0002)' || { echo "keyboard 1-2 missing"; exit 1; }
echo "$LIST" | grep -q 'Mass Storage' || { echo "msc interface missing"; exit 1; }

ctl() { printf '%s\n' "$1" | socat -t 5 - "UNIX-CONNECT:$CTL"; }
R=$(ctl "plug cdc-acm"); echo "plug: $R"
[ "$R" = "ok 1-3" ] || { echo "plug answered '$R'"; exit 1; }
R=$(ctl "list"); echo "list: $R"
echo "$R" | grep -q '"busid":"1-3"' || { echo "plugged device not listed"; exit 1; }
R=$(ctl "stats"); echo "stats: $R"
echo "$R" | grep -q '"copies":0' || { echo "stats without copies 0"; exit 1; }
R=$(ctl "grant 1-1"); echo "bad grant: $R"
echo "$R" | grep -q '^err usage' || { echo "bad grant accepted"; exit 1; }

kill -TERM $PID
wait $PID; RC=$?
[ "$RC" = 0 ] || { echo "fleet-dongle exited $RC on SIGTERM"; cat "$ERR"; exit 1; }
echo "ok"
