#!/usr/bin/env bash
# Two boundkv binaries, compared in one run: the same cluster benchmark (bench/src/bin/cluster.rs,
# 3 nodes on loopback, 256-byte puts, bound 0) alternating between them, ROUNDS times, so that a
# slow spell of this noisy machine falls on both; then the median of each, and their ratio.
#
#   bench/ab.sh OLD_BOUNDKV NEW_BOUNDKV            # e.g. a build of the commit before a change
#   bench/ab.sh OLD NEW OLD_CLUSTER NEW_CLUSTER    # each with its own cluster benchmark binary,
#                                                  # when the client protocol changed in between
#   ROUNDS=5 DURATION=5s CLIENTS=1,64 bench/ab.sh OLD NEW
#
# Prints a table: clients, old ops/s and p50, new ops/s and p50, new/old; then, for each side
# whose benchmark binary records it, what the servers said (commit latency, replication, commit
# wait beyond it, CPU of all three servers per commit). Nothing is judged.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/ab.sh OLD_BOUNDKV NEW_BOUNDKV}
new=${2:?usage: bench/ab.sh OLD_BOUNDKV NEW_BOUNDKV}
cargo build --release --locked -q -p boundkv-bench --bin cluster
old_bench=${3:-target/release/cluster}
new_bench=${4:-target/release/cluster}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CLIENTS=${CLIENTS:-1,64}
out=$(mktemp -d)
for r in $(seq 1 "$ROUNDS"); do
    for side in old new; do
        bin=$old bench=$old_bench
        [ "$side" = new ] && bin=$new bench=$new_bench
        BOUNDKV_BIN="$bin" "$bench" --duration "$DURATION" --clients "$CLIENTS" \
            --bounds 0 --json "$out/$side-$r.json" > /dev/null
        echo "round $r: $side done" >&2
    done
done
python3 - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(side):
    rows = {}
    for r in range(1, rounds + 1):
        for s in json.load(open(f"{out}/{side}-{r}.json")):
            if s["workload"] == "write":
                rows.setdefault(s["clients"], []).append(s)
    return rows
old, new = load("old"), load("new")
med = lambda rows, k: statistics.median(x[k] for x in rows)
print("| clients | old ops/s (median of %d) | old p50 | new ops/s | new p50 | new / old ops/s | every round, old → new ops/s |" % rounds)
print("|---:|---:|---:|---:|---:|---:|---|")
for c in sorted(old):
    o, n = old[c], new[c]
    rounds_txt = ", ".join(f"{a['ops_per_sec']:.0f} → {b['ops_per_sec']:.0f}" for a, b in zip(o, n))
    print(f"| {c} | {med(o,'ops_per_sec'):.0f} | {med(o,'p50_us')/1000:.2f} ms | {med(n,'ops_per_sec'):.0f} | {med(n,'p50_us')/1000:.2f} ms | {med(n,'ops_per_sec')/med(o,'ops_per_sec'):.3f} | {rounds_txt} |")
# What the servers said (bench/src/bin/cluster.rs, ServerSide), for each side whose benchmark
# binary records it: means over each round, then the median of the rounds.
keys = ["server_commit_mean_us", "durable_mean_us", "wait_added_mean_us", "cpu_us_per_commit"]
rows = [(c, name, side[c]) for c in sorted(old) for name, side in (("old", old), ("new", new))
        if all(k in x for x in side[c] for k in keys)]
if rows:
    print()
    print("| clients | side | commit, server (µs) | durable (µs) | commit wait beyond durable (µs) | CPU per commit (µs) |")
    print("|---:|---|---:|---:|---:|---:|")
    for c, name, r in rows:
        print(f"| {c} | {name} | " + " | ".join(f"{med(r, k):.1f}" for k in keys) + " |")
PY
rm -rf "$out"
