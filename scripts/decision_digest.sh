#!/usr/bin/env bash
# Fingerprints the policy core's decisions: generates small traces of three algorithms, replays
# each under every policy and a set of bucketed-LRU variants with `spin replay --decision-log`,
# and prints one line per replay: its name and the SHA-256 of its decision log. A change that
# must not alter decisions (a speed-up of the residency rule, the page table or the engine)
# leaves every line the same:
#
#   scripts/decision_digest.sh OLD/spin > before.txt
#   scripts/decision_digest.sh NEW/spin > after.txt
#   diff before.txt after.txt
#
# Usage: scripts/decision_digest.sh SPIN [WORKDIR]   (WORKDIR: default a temporary directory)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! -x $1 ]]; then
  echo "usage: $0 SPIN_BINARY [WORKDIR]" >&2
  exit 2
fi
spin=$1
work=${2:-$(mktemp -d)}
mkdir -p "$work"

# Traces: ShadowKV (2 × 32K prompts, 200 steps), RetroInfer (1100 steps: one re-index) and
# token-level top-k (16K prompt, 40 steps).
gen() {
  local name=$1
  shift
  [[ -s $work/$name.spt ]] || "$spin" trace gen --out "$work/$name.spt" --seed 5 "$@" >/dev/null 2>&1
}
gen shadowkv --algorithm shadowkv --requests 2 --max-prompt-tokens 32768 --max-output-tokens 200
gen retroinfer --algorithm retroinfer --requests 2 --max-prompt-tokens 32768 \
  --max-output-tokens 1100
gen token --algorithm token --requests 1 --max-prompt-tokens 16384 --max-output-tokens 40

replay() {
  local name=$1 trace=$2
  shift 2
  "$spin" replay --trace "$work/$trace.spt" --threads 1 --decision-log "$work/$name.log" "$@" \
    >/dev/null
  echo "$name $(sha256sum <"$work/$name.log" | cut -d' ' -f1)"
  rm "$work/$name.log"
}
for trace in shadowkv retroinfer token; do
  for policy in bucketed-lru lru fifo prev-step belady; do
    replay "$trace-$policy" "$trace" --policy "$policy"
  done
  replay "$trace-hashed" "$trace" --set cache.page_table=hashed
  replay "$trace-stream" "$trace" --pool-scope stream
  replay "$trace-request" "$trace" --pool-scope request
done
for variant in "b1 --buckets 1" "b8 --buckets 8" "b300 --buckets 300" "k1 --buffer-ratio 1" \
  "w4 --set cache.bucket_width_steps=4" "w8 --buckets 8 --set cache.bucket_width_steps=8" \
  "k0 --buffer-ratio 0" "hashed-stream --set cache.page_table=hashed --pool-scope stream"; do
  read -r name args <<<"$variant"
  # shellcheck disable=SC2086 # the variant's options split on purpose
  replay "shadowkv-$name" shadowkv $args
done
