#!/usr/bin/env bash
# Regenerates the paper-reproduction study (docs/paper-reproduction.md): every sweep of
# configs/sweeps/paper-*.yaml into runs/paper/NAME/, then its figures (runs/paper/NAME/figures/)
# and one HTML report per sweep (runs/paper/NAME/report.html). Resumable: run it again after an
# interruption and only the missing points run.
#
#   scripts/paper.sh                 # all sweeps, jobs = cores
#   SPIN=build-gpu/spin JOBS=16 scripts/paper.sh paper-rate-a100   # some sweeps, another binary
set -euo pipefail
cd "$(dirname "$0")/.."
SPIN=${SPIN:-build/spin}
JOBS=${JOBS:-$(nproc)}
OUT=${OUT:-runs/paper}
PYTHON=${PYTHON:-/usr/bin/python3}
names=("$@")
if ((${#names[@]} == 0)); then
  for f in configs/sweeps/paper-*.yaml; do names+=("$(basename "$f" .yaml)"); done
fi
for name in "${names[@]}"; do
  echo "== $name" >&2
  status=0
  "$SPIN" sweep "configs/sweeps/$name.yaml" --out "$OUT/$name" --jobs "$JOBS" --no-timeline ||
    status=$?
  if ((status > 1)); then exit "$status"; fi  # 1: some points failed, recorded in results.csv
  if "$PYTHON" -c 'import pandas, matplotlib' 2>/dev/null; then
    "$PYTHON" analysis/plot.py all "$OUT/$name" --out "$OUT/$name/figures" >&2
    "$PYTHON" analysis/report.py "$OUT/$name" --out "$OUT/$name/report.html" >&2
  else
    echo "paper.sh: no Python with pandas and matplotlib here: figures skipped" >&2
  fi
done
