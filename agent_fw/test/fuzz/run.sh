#!/usr/bin/env bash
# Build every fuzz target with clang (libFuzzer + ASan + UBSan) and run each
# for SECONDS (default 20), seeded from corpus/<target>/. New inputs go to a
# scratch directory; crashes are kept in $FUZZ_OUT (default a temp dir) and
# fail the run. Usage: agent_fw/test/fuzz/run.sh [SECONDS]
set -euo pipefail
SECS="${1:-20}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW="$(cd "$HERE/../.." && pwd)"
CC="${FUZZ_CC:-$(command -v clang-14 || command -v clang)}"
OUT="${FUZZ_OUT:-$(mktemp -d /tmp/fleet-fuzz.XXXXXX)}"
mkdir -p "$OUT"

CORE_SRCS=("$FW"/components/usbip_core/src/*.c)
FLAGS=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$FW/components/usbip_core/include" -I"$FW/components/usbip_core/private_include"
       -I"$FW/test/unit/core" -DUSBIP_COUNT_COPIES=1)

build() { # target extra-sources...
    local t="$1"; shift
    "$CC" "${FLAGS[@]}" -o "$OUT/$t" "$HERE/$t.c" "$@" "${CORE_SRCS[@]}"
}

build fuzz_codec
build fuzz_usbip_stream "$FW/test/unit/core/fakes.c"

status=0
for t in fuzz_codec fuzz_usbip_stream; do
    mkdir -p "$OUT/$t.new"
    echo "== $t: ${SECS}s"
    if ! (cd "$OUT" && ASAN_OPTIONS=detect_leaks=1 "./$t" -max_total_time="$SECS" -max_len=65536 \
            -timeout=10 -rss_limit_mb=1024 -artifact_prefix="$OUT/$t-" -print_final_stats=1 \
            "$OUT/$t.new" "$HERE/corpus/$t" 2>&1 | tail -n 12); then
        status=1
    fi
    if ls "$OUT/$t-"crash-* "$OUT/$t-"leak-* "$OUT/$t-"timeout-* >/dev/null 2>&1; then
        echo "!! $t found a problem: $(ls "$OUT/$t-"*)"
        status=1
    fi
done
exit $status
