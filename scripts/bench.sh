#!/usr/bin/env bash
# Benchmarks, measured side by side with peers in one run; prints a table and
# writes bench-results.json. Not a test: nothing here passes or fails.
#   bash scripts/bench.sh           full run
#   bash scripts/bench.sh --quick   a few minutes
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rewind-debugger
exec python3 scripts/bench.py "$@"
