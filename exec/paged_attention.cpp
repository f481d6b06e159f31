#include "exec/paged_attention.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace spin::exec {

void DecodeAttention::plan(const DecodeAttentionShape& shape, std::span<const std::uint32_t> indptr,
                           std::span<const std::uint32_t> last_page_tokens,
                           const DecodeAttentionOptions& options) {
  fence_.wait();  // the last run may still read what this plan replaces
  if (shape.head_dim != kAttentionHeadDim) {
    throw std::invalid_argument(
        fmt::format("decode attention: head_dim {} is not supported (only {})", shape.head_dim,
                    kAttentionHeadDim));
  }
  if (shape.group == 0 || shape.group > kAttentionMaxGroup) {
    throw std::invalid_argument(fmt::format("decode attention: group {} is outside 1..{}",
                                            shape.group, kAttentionMaxGroup));
  }
  if (shape.page_tokens == 0 || (shape.page_tokens & (shape.page_tokens - 1)) != 0 ||
      shape.page_tokens > 4096) {
    throw std::invalid_argument(fmt::format(
        "decode attention: page_tokens {} is not a power of two ≤ 4096", shape.page_tokens));
  }
  const std::uint32_t rows = shape.rows();
  if (rows == 0) throw std::invalid_argument("decode attention: no rows (batch · kv_heads = 0)");
  if (indptr.size() != rows + 1ull || last_page_tokens.size() != rows || indptr[0] != 0) {
    throw std::invalid_argument(fmt::format(
        "decode attention: indptr needs {} entries starting at 0 and last_page_tokens {}", rows + 1,
        rows));
  }
  std::vector<std::uint32_t> tokens(rows);
  total_tokens_ = 0;
  for (std::uint32_t r = 0; r < rows; ++r) {
    if (indptr[r + 1] <= indptr[r]) {
      throw std::invalid_argument(fmt::format("decode attention: row {} has an empty list", r));
    }
    if (last_page_tokens[r] == 0 || last_page_tokens[r] > shape.page_tokens) {
      throw std::invalid_argument(
          fmt::format("decode attention: row {}: last_page_tokens {} is outside 1..{}", r,
                      last_page_tokens[r], shape.page_tokens));
    }
    const std::uint64_t t =
        std::uint64_t{indptr[r + 1] - indptr[r] - 1} * shape.page_tokens + last_page_tokens[r];
    if (t > 0xFFFFFFF0ull) {
      throw std::invalid_argument(fmt::format("decode attention: row {} lists too many tokens", r));
    }
    tokens[r] = static_cast<std::uint32_t>(t);
    total_tokens_ += t;
  }
  shape_ = shape;
  options_ = options;
  const auto round_to_pages = [&](std::uint64_t t) {
    t = (t + shape.page_tokens - 1) / shape.page_tokens * shape.page_tokens;
    return static_cast<std::uint32_t>(t < 0xFFFFFFF0ull ? t : 0xFFFFFFF0ull);
  };
  double ideal = 0;  // automatic: tokens per item if one wave of blocks covered the total
  if (options.split_tokens == 0) {
    int device = 0, sms = 0;
    SPIN_CUDA_CHECK(cudaGetDevice(&device));
    SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const std::uint64_t blocks =
        static_cast<std::uint64_t>(sms) *
        decode_attention_blocks_per_sm(shape.group, options.prefetch, options.l2_prefetch_chunks);
    ideal = static_cast<double>(total_tokens_) / static_cast<double>(blocks);
    if (ideal < kMinSplitTokens) ideal = kMinSplitTokens;
  }
  work_.clear();
  merge_.clear();
  split_tokens_ = 0;
  std::uint32_t partials = 0;
  for (std::uint32_t r = 0; r < rows; ++r) {
    std::uint32_t split = 0;
    if (options.split_tokens != 0) {
      split = round_to_pages(options.split_tokens);
    } else {
      const double items = std::floor(tokens[r] / ideal + 0.5);
      split = round_to_pages(items <= 1 ? tokens[r]
                                        : (tokens[r] + static_cast<std::uint64_t>(items) - 1) /
                                              static_cast<std::uint64_t>(items));
    }
    if (split > split_tokens_) split_tokens_ = split;
    if (tokens[r] <= split) {
      work_.push_back(DecodeWorkItem{r, 0, tokens[r], kNoPartial, kNoPartial});
      continue;
    }
    const std::uint32_t first = partials;
    // In 64 bits: b + split may pass 2^32 on a row of over 2^31 tokens.
    for (std::uint64_t b = 0; b < tokens[r]; b += split) {
      const std::uint64_t e = std::min<std::uint64_t>(b + split, tokens[r]);
      work_.push_back(DecodeWorkItem{r, static_cast<std::uint32_t>(b),
                                     static_cast<std::uint32_t>(e), partials++,
                                     static_cast<std::uint32_t>(merge_.size())});
    }
    merge_.push_back(DecodeMergeItem{r, first, partials});
  }
  if (d_work_.size() < work_.size()) d_work_ = DeviceArray<DecodeWorkItem>(work_.size());
  d_work_.upload(work_);
  if (d_merge_.size() < merge_.size()) d_merge_ = DeviceArray<DecodeMergeItem>(merge_.size());
  d_merge_.upload(merge_);
  if (merge_arrivals_.size() < merge_.size())
    merge_arrivals_ = DeviceArray<std::uint32_t>(merge_.size());
  if (merge_arrivals_.size() > 0) merge_arrivals_.fill_bytes(0);
  const std::uint64_t partial_floats = std::uint64_t{partials} * shape.group * shape.head_dim;
  if (partial_out_.size() < partial_floats) partial_out_ = DeviceArray<float>(partial_floats);
  if (partial_lse_.size() < std::uint64_t{partials} * shape.group)
    partial_lse_ = DeviceArray<float>(std::uint64_t{partials} * shape.group);
}

void DecodeAttention::run(const DecodeAttentionArgs& args, CUstream_st* stream) const {
  if (work_.empty()) throw std::logic_error("decode attention: run() before plan()");
  if (args.q == nullptr || args.pages == nullptr || args.indptr == nullptr ||
      args.indices == nullptr || args.last_page_tokens == nullptr || args.out == nullptr) {
    throw std::invalid_argument("decode attention: a null device pointer in the args");
  }
  const float scale =
      args.scale != 0 ? args.scale : 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
  std::uint32_t log2 = 0;
  while ((1u << log2) < shape_.page_tokens) ++log2;
  const DecodeAttentionParams p{args.q,
                                reinterpret_cast<const std::uint16_t*>(args.pages),
                                args.indptr,
                                args.indices,
                                args.last_page_tokens,
                                args.out,
                                partial_out_.data(),
                                partial_lse_.data(),
                                d_work_.data(),
                                d_merge_.data(),
                                merge_arrivals_.data(),
                                static_cast<std::uint32_t>(work_.size()),
                                static_cast<std::uint32_t>(merge_.size()),
                                shape_.kv_heads,
                                shape_.group,
                                shape_.head_dim,
                                log2,
                                scale * 1.4426950408889634f,
                                options_.prefetch ? 1u : 0u,
                                options_.l2_prefetch_chunks,
                                options_.fused_merge ? 1u : 0u};
  launch_decode_attention(p, stream);
  fence_.record(stream);
}

void dense_page_lists(std::span<const std::uint32_t> tokens, std::uint32_t kv_heads,
                      std::uint32_t page_tokens, std::span<const std::uint32_t> first_slot,
                      std::vector<std::uint32_t>& indptr, std::vector<std::uint32_t>& indices,
                      std::vector<std::uint32_t>& last_page_tokens) {
  const std::size_t rows = tokens.size() * kv_heads;
  if (first_slot.size() != rows || page_tokens == 0) {
    throw std::invalid_argument("dense_page_lists: first_slot needs one entry per row");
  }
  indptr.assign(1, 0);
  indices.clear();
  last_page_tokens.clear();
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint32_t t = tokens[r / kv_heads];
    if (t == 0) throw std::invalid_argument("dense_page_lists: a request with no tokens");
    const std::uint32_t pages = (t + page_tokens - 1) / page_tokens;
    for (std::uint32_t p = 0; p < pages; ++p) indices.push_back(first_slot[r] + p);
    indptr.push_back(static_cast<std::uint32_t>(indices.size()));
    last_page_tokens.push_back(t - (pages - 1) * page_tokens);
  }
}

}  // namespace spin::exec
