#!/usr/bin/env bash
# Where a put's time goes: the cluster benchmark (bench/src/bin/cluster.rs: 3 nodes on loopback,
# 256-byte puts, bound 0) under a system-wide `perf record`, once with 1 client and once with 64,
# and a flame graph of each (inferno; installed with `cargo install` if missing) plus a table of
# where the samples fell: per process and thread, and kernel against user space. Everything on
# the machine is sampled, the load generator too (it pays its share of this 2-core machine, as
# etcd's benchmark client does).
#
#   bench/profile.sh                    # writes bench/results/flame-put-{1,64}-clients.svg
#   OUT=/tmp/prof DURATION=10s bench/profile.sh
#
# Needs root (or kernel.perf_event_paranoid <= -1) and perf (`apt-get install linux-perf`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
DURATION=${DURATION:-10s}
FREQ=${FREQ:-499}
command -v perf >/dev/null || { echo "bench/profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null; then
    echo "bench/profile.sh: installing inferno (flame graphs) with cargo install" >&2
    cargo install --locked --quiet inferno --version 0.12.2
fi
cargo build --release --locked -q -p boundkv-cli --bin boundkv -p boundkv-bench --bin cluster
export BOUNDKV_BIN="$PWD/target/release/boundkv"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for clients in 1 64; do
    echo "== $clients client(s), $DURATION" >&2
    perf record -q -a --call-graph dwarf,16384 -F "$FREQ" -o "$work/perf-$clients.data" -- \
        target/release/cluster --duration "$DURATION" --clients "$clients" --bounds 0 \
        > "$work/bench-$clients.txt" 2>&1
    grep -E 'write|server side' "$work/bench-$clients.txt" >&2 || true
    perf script -i "$work/perf-$clients.data" 2>/dev/null \
        | inferno-collapse-perf --all > "$work/collapsed-$clients.txt"
    inferno-flamegraph --title "boundkv put, $clients client(s), 3 nodes on loopback, bound 0 ($DURATION, all CPUs)" \
        < "$work/collapsed-$clients.txt" > "$OUT/flame-put-$clients-clients.svg"
    python3 - "$work/collapsed-$clients.txt" "$clients" <<'PY'
import collections, sys
path, clients = sys.argv[1], sys.argv[2]
by_proc, by_thread, kernel, total = collections.Counter(), collections.Counter(), 0, 0
for line in open(path):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    frames = stack.split(";")
    total += n
    comm = frames[0]
    # inferno names a thread "comm" (and "comm-pid/tid" with --pid); perf's comm is the
    # thread's name: boundkv's are tokio-runtime-w, raft-…, sled-io, etc.
    by_thread[comm] += n
    leaf = frames[-1]
    if leaf.endswith("_[k]"):
        kernel += n
print(f"| {clients} client(s): thread (perf comm) | share of all samples |")
print("|---|---:|")
for comm, n in by_thread.most_common(12):
    print(f"| {comm} | {100 * n / total:.1f} % |")
print(f"| (kernel, any thread) | {100 * kernel / total:.1f} % |")
print(f"| (samples) | {total} |")
print()
PY
done
echo "bench/profile.sh: flame graphs in $OUT/flame-put-{1,64}-clients.svg" >&2
