#!/usr/bin/env bash
# The whole benchmark suite in one command: installs etcd and protoc (bench/setup.sh), builds
# boundkv and the benchmarks in release mode, runs the criterion micro-benchmarks, then the
# suite (boundkv against etcd, against raw sled, against its physical floor), and writes
# bench/results/report.md with its plots. Takes about 15 minutes; DURATION=5s halves it.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/setup.sh
scripts/setup.sh
export BOUNDKV_BIN="$PWD/target/release/boundkv"
cargo build --release --locked -q -p boundkv-cli --bin boundkv
# The micro-benchmarks first: `cargo bench` rebuilds the package's binaries with its own
# features, so the suite is built (with etcd) after it.
cargo bench --locked -q -p boundkv-bench --features etcd --bench clock --bench storage -- --warm-up-time 1 --measurement-time 3 >/dev/null
cargo build --release --locked -q -p boundkv-bench --features etcd --bins
target/release/suite --duration "${DURATION:-10s}" --out bench/results "$@"
echo "bench/run.sh: the report is bench/results/report.md"
