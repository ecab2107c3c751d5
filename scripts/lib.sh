# Shared by scripts/demo and scripts/test: install what the project needs on a
# Debian machine and bring up local services. Sourced, not executed.
# Everything is idempotent: a second run only checks.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLEET_VENV:-$ROOT/.venv}"

say() { printf '\033[1m[fleet]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $* (run as root or install sudo)"; fi
}

# Debian packages by purpose; only missing ones are installed.
PKGS_BUILD=(build-essential cmake pkg-config clang libclang-rt-14-dev libmosquitto-dev libmbedtls-dev libcjson-dev libcurl4-openssl-dev openssl)
PKGS_PY=(python3 python3-venv python3-dev)
PKGS_SERVICES=(postgresql mosquitto mosquitto-clients)
PKGS_USBIP=(usbip iproute2 qemu-system-x86 busybox-static socat cpio kmod file time xz-utils zstd)

apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall only when the project metadata changed since the last install.
    local stamp="$VENV/.fleet-installed" sig
    sig="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$1"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$sig" ]; then
        say "installing fleet ($1) into $VENV"
        "$VENV/bin/pip" install -q -U pip >/dev/null
        "$VENV/bin/pip" install -q -e "$ROOT[$1]"
        echo "$sig" > "$stamp"
    fi
}

build_firmware() { # $1 = build dir, rest = extra cmake args
    local dir="$1"; shift
    cmake -S "$ROOT/agent_fw/host" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)" >/dev/null || cmake --build "$dir" -j1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_postgres() {
    port_open 5432 && return 0
    say "starting PostgreSQL"
    local ver; ver="$(ls /etc/postgresql | sort -V | tail -1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null \
        || as_root pg_ctlcluster "$ver" main start
    for _ in $(seq 50); do port_open 5432 && return 0; sleep 0.2; done
    die "PostgreSQL did not start on 127.0.0.1:5432"
}

start_mosquitto() {
    port_open 1883 && return 0
    say "starting Mosquitto"
    as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
    for _ in $(seq 50); do port_open 1883 && return 0; sleep 0.2; done
    die "Mosquitto did not start on 127.0.0.1:1883"
}

# The tests need a PostgreSQL role that may create databases. Trust auth on
# 127.0.0.1 (as on our CI machines) needs nothing; elsewhere a password role
# is created once through the postgres superuser's local socket.
postgres_test_url() {
    if PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null; then
        echo "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"; return
    fi
    as_root su postgres -c "psql -Atqc \"do \\\$\\\$ begin if not exists (select from pg_roles where rolname='fleet_test') then create role fleet_test login createdb password 'fleet_test'; end if; end \\\$\\\$;\"" >/dev/null
    echo "postgresql+psycopg://fleet_test:fleet_test@127.0.0.1:5432/postgres"
}
