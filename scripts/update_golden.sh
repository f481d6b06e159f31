#!/usr/bin/env bash
# Regenerates the golden outputs of tests/golden/ from build/spin. Run from a clean build after an
# intended change, then review `git diff tests/golden/data` before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
d=tests/golden/data
build/spin replay --threads 2 >"$d/replay_default.txt"
build/spin replay --policy belady --threads 1 >"$d/replay_belady.txt"
build/spin trace info traces/sample.spt >"$d/trace_info_sample.txt"
echo "updated $d; review with: git diff $d"
