// PrefillAttention: the host side of causal prefill attention (prefill_attention_kernel.h), in
// FlashInfer's plan/run split. plan() reads the requests' query and key offsets (cu_seqlens, as
// FlashAttention's varlen API) on the host, cuts every request's queries into tiles, orders them
// longest first (most key tiles first: the causal diagonal makes late tiles the longest, and
// starting them first balances the SMs' tails) and uploads them; run() only launches.
//
// Layouts (contiguous, bf16): q and out [total_q, q_heads, head_dim], k and v
// [total_kv, kv_heads, head_dim], lse [total_q, q_heads] fp32 (optional). Request b's queries are
// rows [cu_q[b], cu_q[b+1]) and its keys rows [cu_k[b], cu_k[b+1]); q_len ≤ kv_len, and the
// queries sit at the last q_len key positions (chunked prefill: a chunk of q_len new tokens after
// kv_len − q_len cached ones; q_len = kv_len for a whole prompt). Query i of the request attends
// to keys 0 .. kv_len − q_len + i. A request with q_len = 0 is allowed and does nothing.
//
// Call order: construct → { plan(shape, cu_q, cu_k) → run(args)* }*. A plan holds for any inputs
// with the same offsets. plan() is synchronous (it waits for the last run, then uploads; O(tiles ·
// log tiles) host work); run() is asynchronous on the given stream and may overlap other runs of
// the same plan. Memory: 20 bytes per tile on the device.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "exec/memory.h"
#include "exec/prefill_attention_kernel.h"

namespace spin::exec {

struct PrefillAttentionShape {
  std::uint32_t kv_heads = 8;
  std::uint32_t group = 5;  // query heads per KV head, 1..16
  std::uint32_t head_dim = kPrefillHeadDim;
  std::uint32_t query_heads() const { return kv_heads * group; }
};

struct PrefillAttentionOptions {
  // Block shape and kernel (docs/gpu-kernels.md has each measured): the staggered wgmma kernel is
  // the fastest; the wgmma tilings need an sm_90 device (plan() checks), kQ128W4 is the fastest
  // mma.sync one.
  PrefillTiling tiling = PrefillTiling::kWgmma128Staggered;
  bool lazy_rescale = true;  // rescale O only when a row's max grows by more than 2^8
};

// Device pointers of one run (layouts as above).
struct PrefillAttentionArgs {
  const std::uint16_t* q;  // [total_q, q_heads, head_dim] bf16
  const std::uint16_t* k;  // [total_kv, kv_heads, head_dim] bf16
  const std::uint16_t* v;  // [total_kv, kv_heads, head_dim] bf16
  std::uint16_t* out;      // [total_q, q_heads, head_dim] bf16
  float* lse = nullptr;    // [total_q, q_heads] natural log-sum-exp of the scaled scores, or null
  float scale = 0;         // softmax scale (> 0); 0: 1 / sqrt(head_dim)
};

class PrefillAttention {
 public:
  PrefillAttention() = default;

  // cu_q, cu_k: [requests + 1] host copies of the offsets, starting at 0, non-decreasing, with
  // q_len ≤ kv_len for every request. Throws std::invalid_argument on an unsupported shape or
  // invalid offsets (the message names the request).
  void plan(const PrefillAttentionShape& shape, std::span<const std::uint32_t> cu_q,
            std::span<const std::uint32_t> cu_k, const PrefillAttentionOptions& options = {});
  void run(const PrefillAttentionArgs& args, CUstream_st* stream = nullptr) const;

  std::uint32_t tiles() const { return static_cast<std::uint32_t>(tiles_.size()); }
  std::uint32_t total_q() const { return total_q_; }
  std::uint32_t total_kv() const { return total_kv_; }
  // Query-key pairs the causal mask keeps, summed over requests (one head): FLOPs of a run are
  // 4 · head_dim · query_heads · this.
  double causal_pairs() const { return causal_pairs_; }
  const PrefillAttentionShape& shape() const { return shape_; }

 private:
  PrefillAttentionShape shape_{};
  PrefillAttentionOptions options_{};
  bool planned_ = false;
  std::uint32_t total_q_ = 0;
  std::uint32_t total_kv_ = 0;
  double causal_pairs_ = 0;
  std::vector<PrefillTile> tiles_;
  DeviceArray<PrefillTile> d_tiles_;
  mutable LaunchFence fence_;  // the last run, which plan() waits for
};

}  // namespace spin::exec
