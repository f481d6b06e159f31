#!/usr/bin/env bash
# How much of one core's speed a core keeps when every core is busy. Runs a single-threaded
# benchmark alone (REPEATS times), then COPIES copies of it at once (REPEATS rounds), and prints
# a table of its per-core figure (a rate per CPU second, so time spent waiting for a core does not
# count) alone and under load, and their ratio. Virtual machines can share physical cores between
# their virtual CPUs, and all-core clocks are lower than one-core clocks: a ratio below 1 on a
# benchmark whose state fits in its core's caches is the machine's, not the program's.
#
# The benchmarks: `spin bench core` (bucketed LRU, two-level table; its state is a few MB) and
# `spin bench gen` (ShadowKV), each on one thread; and a compute-only loop (python3, no memory
# traffic) as the machine's own reference.
#
# Usage: scripts/bench_all_cores.sh SPIN [COPIES] [REPEATS]   (defaults: nproc, 2)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || ! -x $1 ]]; then
  echo "usage: $0 SPIN_BINARY [COPIES] [REPEATS]" >&2
  exit 2
fi
spin=$1
copies=${2:-$(nproc)}
repeats=${3:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Each prints one number: the benchmark's rate per CPU second.
core() {
  "$spin" bench core --steps 1500 --skip-metadata --policies bucketed-lru |
    awk '$1 == "bucketed-lru" && $2 == "two-level" {print $6}'
}
gen() {
  "$spin" bench gen --algorithm shadowkv | awk '$1 == "shadowkv" {print $NF}'
}
loop() {
  python3 -c '
import time
t = time.process_time()
x = 0
for i in range(20_000_000):
    x += i
print(round(20 / (time.process_time() - t), 2))'
}

# Prints "min mean max" of the numbers in the files given.
stats() {
  cat "$@" | awk 'NF {v[n++] = $1; s += $1} END {
    if (n == 0) {print "- - -"; exit}
    min = max = v[0]; for (i = 1; i < n; ++i) {if (v[i] < min) min = v[i]; if (v[i] > max) max = v[i]}
    printf "%.1f %.1f %.1f\n", min, s / n, max}'
}

echo "alone: one copy at a time; loaded: ${copies} copies at once; ratio: loaded mean / alone mean"
printf '%-32s %10s %10s %10s %10s %10s %10s %6s\n' benchmark "alone min" "alone mean" \
  "alone max" "load min" "load mean" "load max" ratio
for bench in core gen loop; do
  for r in $(seq "$repeats"); do "$bench" > "$work/$bench.alone.$r"; done
  for r in $(seq "$repeats"); do
    for c in $(seq "$copies"); do "$bench" > "$work/$bench.load.$r.$c" & done
    wait
  done
  read -r a_min a_mean a_max < <(stats "$work/$bench".alone.*)
  read -r l_min l_mean l_max < <(stats "$work/$bench".load.*)
  ratio=$(awk -v a="$a_mean" -v l="$l_mean" 'BEGIN {printf "%.2f", l / a}')
  case $bench in
    core) name="bench core (M pages/cpu-s)" ;;
    gen) name="bench gen (M sel/cpu-s)" ;;
    loop) name="compute loop (M iter/cpu-s)" ;;
  esac
  printf '%-32s %10s %10s %10s %10s %10s %10s %6s\n' "$name" "$a_min" "$a_mean" "$a_max" \
    "$l_min" "$l_mean" "$l_max" "$ratio"
done
