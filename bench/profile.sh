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
# Each line: "comm;frame;...;leaf weight"; comm is the thread's name (boundkv's: raft-N,
# sled-io-N, tokio-rt-worker, boundkv-server for the rest; the load generator: cluster; idle
# CPUs: swapper). Kernel frames end in _[k] (--all).
threads, kernel, idle, total = collections.Counter(), 0, 0, 0
for line in open(path):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    frames = stack.split(";")
    total += n
    if frames[0] == "swapper":
        idle += n
        continue
    threads[frames[0]] += n
    if frames[-1].endswith("_[k]"):
        kernel += n
busy = total - idle
print(f"{clients} client(s): CPUs idle {100 * idle / total:.1f} % of the time; of the busy samples, "
      f"{100 * kernel / busy:.1f} % in the kernel.")
print()
print(f"| {clients} client(s): thread | share of busy samples |")
print("|---|---:|")
for comm, n in threads.most_common(10):
    print(f"| {comm} | {100 * n / busy:.1f} % |")
print()
PY
done
# Off the CPU: the sync calls of every thread during a 64-client run (perf trace's summary:
# calls, total and mean time, per thread).
echo "== sync calls, 64 clients, $DURATION" >&2
perf trace -s -a -e fdatasync,fsync,sync_file_range -o "$work/trace.txt" -- \
    target/release/cluster --duration "$DURATION" --clients 64 --bounds 0 > "$work/bench-trace.txt" 2>&1
grep -E 'write|server side' "$work/bench-trace.txt" >&2 || true
python3 - "$work/trace.txt" <<'PY'
import collections, re, sys
calls, total = collections.Counter(), collections.Counter()
thread = None
for line in open(sys.argv[1]):
    m = re.match(r"\s*(.+?) \((\d+)\), \d+ events", line)
    if m:
        thread = re.sub(r"-?\d+$", "", m.group(1))
    m = re.match(r"\s*(fdatasync|fsync|sync_file_range)\s+(\d+)\s+\d+\s+([\d.]+)", line)
    if m and thread:
        calls[(thread, m.group(1))] += int(m.group(2))
        total[(thread, m.group(1))] += float(m.group(3))
print("| threads (all nodes) | call | calls | total ms | mean ms |")
print("|---|---|---:|---:|---:|")
for key in sorted(calls, key=lambda k: -total[k]):
    print(f"| {key[0]} | {key[1]} | {calls[key]} | {total[key]:.0f} | {total[key] / calls[key]:.3f} |")
PY
echo "bench/profile.sh: flame graphs in $OUT/flame-put-{1,64}-clients.svg" >&2
