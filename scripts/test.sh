#!/usr/bin/env bash
# The README's test command: install what the tests need, then run every test in the workspace.
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
