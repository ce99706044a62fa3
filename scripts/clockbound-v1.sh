#!/usr/bin/env bash
# Runs a command against a REAL ClockBound 0.1.x daemon (clockboundd 0.1.4, protocol v1, a Unix
# datagram socket), fed by a real, synchronized chrony — on a machine with no network time:
#
#   chronyd "reference"   serves this machine's clock as a stratum-8 NTP server on
#                         127.0.0.1:11123 (`local stratum 8`); it disciplines nothing (-x)
#   chronyd "tracker"     polls the reference every 1/16 s and is synchronized within seconds;
#                         it disciplines nothing either (-x), and answers chrony's command
#                         protocol on [::1]:323 / 127.0.0.1:323, where clockboundd 0.1.x asks
#   clockboundd 0.1.4     built from crates.io, run in a scratch directory: its socket is
#                         DIR/clockboundd.sock
#
# The command runs with BOUNDKV_CLOCKBOUND_V1_SOCKET=DIR/clockboundd.sock. Without a command,
# runs the reader's tests against the daemon and `boundkv clock` on it.
#
#   scripts/clockbound-v1.sh                      # the default checks
#   scripts/clockbound-v1.sh boundkv --clock clockbound-v1:\$BOUNDKV_CLOCKBOUND_V1_SOCKET clock
#
# Installs what it needs (Debian's chrony; clockboundd into .tools/clockbound-v1) the first time.
# Needs root: chrony's command port is 323.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# clockboundd 0.1.x asks chrony at [::1]:323 and nowhere else.
if ! python3 -c 'import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::1", 0))' 2>/dev/null; then
    echo "clockbound-v1: SKIPPED: this machine has no IPv6 loopback (::1), the only address" \
        "clockboundd 0.1.x reaches chrony at; the protocol's tests against boundkv's own daemon" \
        "side (clockbound/tests/v1_states.rs) still run with the test suite" >&2
    exit 0
fi
if ! command -v chronyd >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "clockbound-v1: installing chrony" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chrony >/dev/null
    # The package starts its own chronyd where systemd runs; this script runs its own.
    $sudo systemctl disable --now chrony >/dev/null 2>&1 || true
fi
daemon=$root/.tools/clockbound-v1/bin/clockboundd
if [ ! -x "$daemon" ]; then
    echo "clockbound-v1: building clockboundd 0.1.4 from crates.io" >&2
    cargo install -q --locked clock-bound-d --version 0.1.4 --root "$root/.tools/clockbound-v1"
fi

dir=$(mktemp -d)
pids=()
sink_made=0
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$sink_made" = 1 ] && [ -S /dev/log ]; then rm -f /dev/log; fi
    rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/reference.conf" <<EOF
local stratum 8
allow 127.0.0.1
port 11123
cmdport 0
bindcmdaddress $dir/reference.sock
pidfile $dir/reference.pid
driftfile $dir/reference.drift
EOF
cat > "$dir/tracker.conf" <<EOF
server 127.0.0.1 port 11123 iburst minpoll -4 maxpoll -4
port 0
pidfile $dir/tracker.pid
driftfile $dir/tracker.drift
bindcmdaddress $dir/tracker.sock
bindcmdaddress 127.0.0.1
bindcmdaddress ::1
EOF
chronyd -x -d -f "$dir/reference.conf" >"$dir/reference.log" 2>&1 &
pids+=($!)
chronyd -x -d -f "$dir/tracker.conf" >"$dir/tracker.log" 2>&1 &
pids+=($!)

# Synchronized: chrony's leap status is no longer "Not synchronised".
for _ in $(seq 1 60); do
    if chronyc -h 127.0.0.1 -n tracking 2>/dev/null | grep -q '^Leap status *: Normal'; then
        break
    fi
    sleep 0.5
done
chronyc -h 127.0.0.1 -n tracking | sed 's/^/  chrony: /' >&2 || true
chronyc -h 127.0.0.1 -n tracking | grep -q '^Leap status *: Normal' || {
    echo "clockbound-v1: chrony did not synchronize; its logs:" >&2
    cat "$dir"/*.log >&2
    exit 1
}

# clockboundd 0.1.x logs to syslog and stops if it cannot connect to one. On a machine without
# a syslog daemon (containers, CI), a sink of our own listens at /dev/log for the run.
# (Only where /dev/log is nothing at all: not a socket, not a dangling link, not a file.)
if [ ! -S /dev/log ] && [ ! -S /var/run/syslog ] && [ ! -S /var/run/log ] \
    && [ ! -e /dev/log ] && [ ! -L /dev/log ]; then
    python3 - "$dir/syslog.log" <<'PY_SINK' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open(sys.argv[1], "ab", buffering=0) as out:
    try:
        while True:
            out.write(s.recv(65536) + b"\n")
    finally:
        os.unlink("/dev/log")
PY_SINK
    pids+=($!)
    for _ in $(seq 1 50); do [ -S /dev/log ] && break; sleep 0.1; done
    # Ours to remove only if our sink bound it.
    [ -S /dev/log ] && sink_made=1
fi

mkdir "$dir/clockboundd"
(cd "$dir/clockboundd" && exec "$daemon") >"$dir/clockboundd.log" 2>&1 &
pids+=($!)
export BOUNDKV_CLOCKBOUND_V1_SOCKET=$dir/clockboundd/clockboundd.sock
for _ in $(seq 1 50); do
    [ -S "$BOUNDKV_CLOCKBOUND_V1_SOCKET" ] && break
    sleep 0.1
done
[ -S "$BOUNDKV_CLOCKBOUND_V1_SOCKET" ] || {
    echo "clockbound-v1: clockboundd did not create its socket; its log:" >&2
    cat "$dir/clockboundd.log" >&2
    exit 1
}
echo "clockbound-v1: clockboundd 0.1.4 serves $BOUNDKV_CLOCKBOUND_V1_SOCKET" >&2

if (($# > 0)); then
    "$@"
else
    cargo test -q --locked -p boundkv-clockbound --test v1_states -- --ignored --nocapture
    cargo run -q --locked -p boundkv-cli --bin boundkv -- \
        --clock "clockbound-v1:$BOUNDKV_CLOCKBOUND_V1_SOCKET" clock
fi
