#!/usr/bin/env bash
# boundkv's consistency suite in one command: installs what it needs (tests/setup-jepsen.sh),
# builds boundkv and boundkv-jepsen (release), then runs boundkv-jepsen with the arguments given,
# or, with none, the standard matrix: every workload under each nemesis and a mix, then the
# network faults again through the peer proxy (--network proxy: what a machine without root
# gets), then the mutants (no commit wait; no clock defences). Prints a table; exits 1
# if any run that is expected to be valid was not (or the mutant went unnoticed). Installing the
# packages and network namespaces need root; without namespaces every run uses the proxy.
#
#   tests/jepsen.sh
#   tests/jepsen.sh --workload append --nemesis partition,clock-skew --time-limit 120
#   TIME=60 SEEDS="1 2" tests/jepsen.sh            # a longer matrix
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup-jepsen.sh
cargo build --release --locked -q -p boundkv-cli --bin boundkv -p boundkv-tests --bin boundkv-jepsen
# The oscillator library (clock-drift) apart: with --bin filters cargo would skip it.
cargo build --release --locked -q -p boundkv-oscillator
bin=target/release/boundkv-jepsen
export BOUNDKV_BIN="$PWD/target/release/boundkv"
if (($# > 0)); then
    exec "$bin" "$@"
fi
TIME=${TIME:-30}
SEEDS=${SEEDS:-1}
STORE=${STORE:-jepsen-store}
table=$(mktemp)
failed=0
run() { # expectation workload nemesis seed [extra...]
    local expect=$1 w=$2 n=$3 s=$4; shift 4
    local out status=0
    out=$("$bin" --workload "$w" ${n:+--nemesis "$n"} --time-limit "$TIME" --seed "$s" --store "$STORE" --progress-off "$@" 2>/dev/null) || status=$?
    local ops verdict anomalies dir
    ops=$(grep '^operations:' <<<"$out" | sed 's/operations: *//')
    verdict=$(grep '^verdict:' <<<"$out" | sed 's/verdict: *//')
    anomalies=$(grep '^anomalies:' <<<"$out" | sed 's/anomalies: *//')
    dir=$(grep '^run:' <<<"$out" | sed 's/run: *//')
    [ -z "$verdict" ] && verdict="ERROR($status)"
    local label=${n:-none}
    [[ " $* " == *" --network proxy "* ]] && label="$label (proxy)"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$w" "$label" "$s" "$expect" "$ops" "$verdict" "$anomalies" | tee -a "$table"
    if [ "$expect" = valid ] && [ "$verdict" != VALID ]; then failed=1; fi
    if [ "$expect" = invalid ] && [ "$verdict" != INVALID ]; then failed=1; fi
    return 0
}
echo "| workload | nemesis | seed | expected | operations | verdict | anomalies |"
echo "|---|---|---|---|---|---|---|"
for s in $SEEDS; do
    for w in register append bank causal; do
        for n in "" partition kill pause member clock-skew clock-bound clock-status clock-stale clock-step-restart clock-lie leap-step leap-mixed clock-strobe clock-drift partition,kill,pause,clock-skew; do
            run valid "$w" "$n" "$s"
        done
        for n in partition slow-net partition,slow-net,kill; do
            run valid "$w" "$n" "$s" --network proxy
        done
    done
    BOUNDKV_ALLOW_UNSAFE=1 run invalid causal clock-skew "$s" --unsafe-skip-commit-wait
    BOUNDKV_ALLOW_UNSAFE=1 run invalid append clock-skew "$s" --unsafe-skip-commit-wait
    BOUNDKV_ALLOW_UNSAFE=1 run invalid register clock-lie,leap-step "$s" --unsafe-no-step-guard --unsafe-no-peer-clock-checks
    # Drift needs time to grow: one fault held 25 s (the run's TIME should be 30 s or more).
    BOUNDKV_ALLOW_UNSAFE=1 run invalid register clock-drift "$s" --hold 25 --unsafe-no-peer-clock-checks
    run valid register "" "$s" --drift-experiment 200:2
done
rm -f "$table"
exit $failed
