// `spin bench gpu`: transfer paths and the residency kernel on the GPU at hand
// (docs/gpu-kernels.md). Part 1 moves a fetch list of scattered pages with the gather kernel and,
// on the same buffers in the same run, with one cudaMemcpyAsync per page, one
// cudaMemcpyBatchAsync, and one bulk cudaMemcpyAsync of the same bytes, both ways. Part 2 times
// the residency kernel per layer at batch 64 on generated selections. Part 3 times paged decode
// attention (sparse lists on scattered pages, dense lists) against a device-to-device copy in the
// same run; exec/bench/sdpa_bench.py times PyTorch's SDPA on the dense shapes. Part 4 times
// selection (scores + top-k) per algorithm against the same copy. Part 5 times causal
// prefill attention (16K and 64K-token prompts, 40 or 32 query heads over 8 KV heads, and one
// chunk of a chunked prefill) for each tiling; sdpa_bench.py --prefill times SDPA on the same.
// Part 6 times the dense layers' GEMMs through cuBLASLt (exec/gemm.h): Qwen3-14B's QKV, O,
// gate+up and down projections at m = 1, 8, 64, 256 (decode batches) and 8192 (a prefill chunk),
// as TFLOP/s against the bf16 peak and as weight bytes per second against the same copy.
#pragma once

#include "sim/cli/command.h"

namespace spin::exec {

int bench_gpu(const cli::Args& args);

}  // namespace spin::exec
