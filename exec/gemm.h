// Gemm: the executor's dense layers (QKV, O, MLP projections) through cuBLASLt (exec/cublaslt.h,
// loaded at run time), in FlashInfer's plan/run split.
//
//   Y = alpha · X · Wᵀ + beta · C + bias
//
// bf16 inputs and output, fp32 accumulation and scalars. Layouts are PyTorch's, row-major and
// contiguous: X [m, k] (m tokens of k input features), W [n, k] (nn.Linear's weight: n output
// features), Y and C [m, n], bias [n] broadcast over the rows. C may be Y itself (accumulate in
// place, e.g. a residual); with beta = 0 C is never read, so Y may hold anything (NaN too).
// A strided batch of `batch` independent problems packs them one after another: X [batch, m, k],
// W [batch, n, k], Y and C [batch, m, n]; bias [n] is shared by all.
//
// cuBLASLt is column-major: the row-major Y [m, n] is the column-major Yᵀ [n, m] (ld n), so a run
// computes Yᵀ = W · Xᵀ with A = W (k × n column-major, ld k, transposed: op(A) = n × k) and B = X
// (k × m, ld k, not transposed): the "TN" form, cuBLASLt's native one for every Hopper kernel.
//
// Call order: construct → { plan(shape, options) → run(args, stream)* }*. plan() loads cuBLASLt
// (first use in the process), creates the handle and descriptors, asks
// cublasLtMatmulAlgoGetHeuristic once for this shape and allocates the chosen algorithm's
// workspace (at most options.max_workspace_bytes); it throws std::invalid_argument for a shape
// cuBLASLt has no algorithm for (or n, k, batch = 0), InputError (common/error.h) if cuBLASLt
// cannot be loaded. run() checks its pointers and launches asynchronously on `stream` (no
// synchronisation, no allocation; it may be captured in a CUDA graph). The plan holds for any
// inputs of its shape. Runs of one plan share its workspace, so they must be ordered (one stream,
// or events); call run() of one plan from one host thread at a time. m = 0 is a valid plan whose
// runs do nothing.
#pragma once

#include <cstdint>
#include <memory>

#include "exec/memory.h"

namespace spin::exec {

struct GemmShape {
  std::uint32_t m = 0;      // rows of X and Y (tokens)
  std::uint32_t n = 0;      // rows of W, columns of Y (output features)
  std::uint32_t k = 0;      // columns of X and W (input features)
  std::uint32_t batch = 1;  // independent problems, packed
  double flops() const { return 2.0 * m * n * k * batch; }
  std::uint64_t weight_bytes() const { return std::uint64_t{2} * n * k * batch; }
};

struct GemmOptions {
  bool bias = false;  // add bias [n] (cuBLASLt's BIAS epilogue); runs must then pass one
  // Every pointer of a run is a multiple of this (a power of two, 2..256). The heuristic may pick
  // faster algorithms for larger alignments; cudaMalloc gives 256, a row slice x + r·k gives
  // 2 · k's largest power-of-two factor.
  std::uint32_t alignment_bytes = 16;
  std::uint64_t max_workspace_bytes = std::uint64_t{32} << 20;  // cuBLAS's own default on Hopper
};

// Device pointers of one run (layouts as above).
struct GemmArgs {
  const std::uint16_t* x;               // [batch, m, k] bf16
  const std::uint16_t* w;               // [batch, n, k] bf16
  std::uint16_t* y;                     // [batch, m, n] bf16
  const std::uint16_t* bias = nullptr;  // [n] bf16, iff the plan has bias
  const std::uint16_t* c = nullptr;     // [batch, m, n] bf16, read when beta != 0; null: y
  float alpha = 1;
  float beta = 0;
};

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(Gemm&&) noexcept;
  Gemm& operator=(Gemm&&) noexcept;
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void plan(const GemmShape& shape, const GemmOptions& options = {});
  // Throws std::invalid_argument (not planned, null or misaligned pointers, bias not matching the
  // plan), std::runtime_error naming the cuBLASLt status if the launch fails.
  void run(const GemmArgs& args, CUstream_st* stream = nullptr) const;

  bool planned() const;
  const GemmShape& shape() const;
  const GemmOptions& options() const;
  std::uint64_t workspace_bytes() const;  // of the chosen algorithm
  int algorithms() const;                 // algorithms the heuristic offered (the first is used)
  float waves() const;                    // the chosen one's wave count (1.0: fills the GPU once)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spin::exec
