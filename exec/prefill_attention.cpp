#include "exec/prefill_attention.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace spin::exec {

void PrefillAttention::plan(const PrefillAttentionShape& shape, std::span<const std::uint32_t> cu_q,
                            std::span<const std::uint32_t> cu_k,
                            const PrefillAttentionOptions& options) {
  fence_.wait();  // the last run may still read what this plan replaces
  if (shape.head_dim != kPrefillHeadDim) {
    throw std::invalid_argument(
        fmt::format("prefill attention: head_dim {} is not supported (only {})", shape.head_dim,
                    kPrefillHeadDim));
  }
  if (shape.group == 0 || shape.group > kPrefillMaxGroup) {
    throw std::invalid_argument(
        fmt::format("prefill attention: group {} is outside 1..{}", shape.group, kPrefillMaxGroup));
  }
  if (shape.kv_heads == 0 || std::uint64_t{shape.kv_heads} * shape.group > 65535) {
    throw std::invalid_argument(
        fmt::format("prefill attention: kv_heads {} · group {} must be 1..65535 query heads",
                    shape.kv_heads, shape.group));
  }
  if (static_cast<std::uint32_t>(options.tiling) >= kPrefillTilings) {
    throw std::invalid_argument(fmt::format("prefill attention: unknown tiling {}",
                                            static_cast<std::uint32_t>(options.tiling)));
  }
  if (options.tiling == PrefillTiling::kWgmma128 ||
      options.tiling == PrefillTiling::kWgmma128Staggered) {
    int device = 0, major = 0, minor = 0;
    SPIN_CUDA_CHECK(cudaGetDevice(&device));
    SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    if (major != 9 || minor != 0) {
      throw std::invalid_argument(fmt::format(
          "prefill attention: tiling {} uses wgmma, built for sm_90a only, but device {} is "
          "sm_{}{} (use PrefillTiling::kQ128W4)",
          static_cast<std::uint32_t>(options.tiling), device, major, minor));
    }
  }
  if (cu_q.size() < 2 || cu_k.size() != cu_q.size() || cu_q[0] != 0 || cu_k[0] != 0) {
    throw std::invalid_argument(fmt::format(
        "prefill attention: cu_q and cu_k need requests + 1 ≥ 2 entries each, starting at 0 "
        "(got {} and {})",
        cu_q.size(), cu_k.size()));
  }
  const std::uint32_t requests = static_cast<std::uint32_t>(cu_q.size() - 1);
  const std::uint32_t tile_rows = prefill_tile_rows(options.tiling);
  std::vector<PrefillTile> tiles;
  double pairs = 0;
  for (std::uint32_t b = 0; b < requests; ++b) {
    if (cu_q[b + 1] < cu_q[b] || cu_k[b + 1] < cu_k[b]) {
      throw std::invalid_argument(fmt::format(
          "prefill attention: request {}: offsets decrease (cu_q {} → {}, cu_k {} → {})", b,
          cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]));
    }
    const std::uint32_t q_len = cu_q[b + 1] - cu_q[b], kv_len = cu_k[b + 1] - cu_k[b];
    if (q_len > kv_len) {
      throw std::invalid_argument(fmt::format(
          "prefill attention: request {}: {} queries but only {} keys (the queries are the last "
          "q_len key positions, so q_len ≤ kv_len)",
          b, q_len, kv_len));
    }
    const std::uint32_t offset = kv_len - q_len;
    for (std::uint32_t r = 0; r < q_len; r += tile_rows) {
      const std::uint32_t rows = std::min(tile_rows, q_len - r);
      tiles.push_back(PrefillTile{cu_q[b] + r, rows, offset + r, cu_k[b], offset + r + rows});
    }
    // Σ_i (offset + i + 1) over the request's queries.
    pairs += static_cast<double>(q_len) * offset + 0.5 * q_len * (q_len + 1.0);
  }
  if (tiles.size() > 65535) {
    throw std::invalid_argument(
        fmt::format("prefill attention: {} query tiles of {} rows exceed 65535 per launch; "
                    "split the requests over several plans",
                    tiles.size(), tile_rows));
  }
  // Longest first; ties by position in the batch (a stable order, reproducible launches).
  std::stable_sort(tiles.begin(), tiles.end(), [&](const PrefillTile& a, const PrefillTile& b) {
    return (a.key_end + kPrefillKeyTile - 1) / kPrefillKeyTile >
           (b.key_end + kPrefillKeyTile - 1) / kPrefillKeyTile;
  });
  shape_ = shape;
  options_ = options;
  total_q_ = cu_q.back();
  total_kv_ = cu_k.back();
  causal_pairs_ = pairs;
  tiles_ = std::move(tiles);
  if (d_tiles_.size() < tiles_.size()) d_tiles_ = DeviceArray<PrefillTile>(tiles_.size());
  d_tiles_.upload(tiles_);
  planned_ = true;
}

void PrefillAttention::run(const PrefillAttentionArgs& args, CUstream_st* stream) const {
  if (!planned_) throw std::logic_error("prefill attention: run() before plan()");
  if (tiles_.empty()) return;
  if (args.q == nullptr || args.k == nullptr || args.v == nullptr || args.out == nullptr) {
    throw std::invalid_argument("prefill attention: a null device pointer in the args");
  }
  const auto misaligned = [](const void* ptr) {
    return reinterpret_cast<std::uintptr_t>(ptr) % 16 != 0;
  };
  if (misaligned(args.q) || misaligned(args.k) || misaligned(args.v) || misaligned(args.out)) {
    throw std::invalid_argument(
        "prefill attention: q, k, v and out must be 16-byte aligned (the kernel moves 16-byte "
        "rows chunks)");
  }
  if (!(args.scale >= 0) || std::isinf(args.scale)) {
    throw std::invalid_argument(
        fmt::format("prefill attention: scale {} must be positive (or 0: automatic)", args.scale));
  }
  const float scale =
      args.scale != 0 ? args.scale : 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
  const PrefillAttentionParams p{args.q,
                                 args.k,
                                 args.v,
                                 args.out,
                                 args.lse,
                                 d_tiles_.data(),
                                 static_cast<std::uint32_t>(tiles_.size()),
                                 shape_.query_heads(),
                                 shape_.kv_heads,
                                 shape_.group,
                                 shape_.head_dim,
                                 scale * 1.4426950408889634f,
                                 options_.tiling,
                                 options_.lazy_rescale ? 1u : 0u};
  launch_prefill_attention(p, stream);
  fence_.record(stream);
}

}  // namespace spin::exec
