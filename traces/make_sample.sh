#!/usr/bin/env bash
# Regenerates traces/sample.spt, the bundled sample trace of the default run (configs/default.yaml)
# and of the tests, with the calibrated ShadowKV generator (docs/trace-generators.md): Qwen3-14B
# (40 layers x 8 KV heads), 4 LongBench-v2-like requests with prompts capped at 8,192 tokens and
# 64 decode steps each. Deterministic: same spin version and seed, same file. Golden outputs that
# depend on it are regenerated with scripts/update_golden.sh afterwards. The golden suite runs the
# `build/spin` line below (with --out sent elsewhere) and compares the result with the file.
set -euo pipefail
cd "$(dirname "$0")/.."
build/spin trace gen --algorithm shadowkv --workload longbench-v2 --requests 4 --rate 1 \
  --max-prompt-tokens 8192 --max-output-tokens 64 --seed 2026 --out traces/sample.spt
