// DecodeAttention: the host side of paged decode attention (paged_attention_kernel.h), in
// FlashInfer's plan/run split. plan() looks at the page lists' lengths on the host, cuts the work
// into (row, token range) items (split-KV) and uploads them; run() only launches the attention
// kernel and, for rows cut into several items, the log-sum-exp merge kernel (or, with
// options.fused_merge, the last block of each such row merges it).
//
// The same object serves sparse attention (each row's list = the selected pages of one stream)
// and the dense baseline (each row's list = all pages of the stream: dense_page_lists()).
//
// Call order: construct → { plan(shape, indptr, last_page_tokens) → run(args)* }*. A plan holds
// for any inputs with the same list lengths (the pages, slots and queries may change between
// runs). plan() is synchronous (it waits for the last run, then uploads; O(rows + work items) host
// work); run() is asynchronous on the given stream. Split rule: the ideal item = the total tokens
// spread over the blocks that fit on the device at once (one wave), at least kMinSplitTokens; each
// row gets max(1, round(tokens / ideal)) items of equal size in whole pages (or items of
// options.split_tokens, rounded up to pages, when set); a row of one item writes its output
// directly. Memory: 20 bytes per work item, 16 per merged row, and (head_dim + 1) · group · 4
// bytes per partial. Runs of one plan must not overlap in time (the fused merge's per-row
// counters are shared): run them on one stream.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "exec/memory.h"
#include "exec/paged_attention_kernel.h"

namespace spin::exec {

struct DecodeAttentionShape {
  std::uint32_t batch = 1;
  std::uint32_t kv_heads = 8;
  std::uint32_t group = 1;  // query heads per KV head, 1..16
  std::uint32_t head_dim = kAttentionHeadDim;
  std::uint32_t page_tokens = 16;  // a power of two
  std::uint32_t rows() const { return batch * kv_heads; }
  std::uint32_t query_heads() const { return kv_heads * group; }
  std::uint64_t page_bytes() const { return 2ull * page_tokens * head_dim * 2; }
};

struct DecodeAttentionOptions {
  std::uint32_t split_tokens = 0;        // tokens per work item (rounded up to pages); 0: automatic
  bool prefetch = true;                  // each warp loads its next chunk while computing this one
  std::uint32_t l2_prefetch_chunks = 0;  // bulk-prefetch into L2 this many chunks ahead (0: off)
  bool fused_merge = false;  // split rows merged by their last block instead of a second kernel
                             // (measured slower: the last block merges alone, at the tail)
};

// Device pointers of one run (layouts as DecodeAttentionParams).
struct DecodeAttentionArgs {
  const std::uint16_t* q;                 // [batch, kv_heads · group, head_dim] bf16
  const std::uint8_t* pages;              // HbmPagePool::data(): [slots, 2, page_tokens, head_dim]
  const std::uint32_t* indptr;            // [rows + 1]
  const std::uint32_t* indices;           // [indptr[rows]] slots
  const std::uint32_t* last_page_tokens;  // [rows]
  std::uint16_t* out;                     // [batch, kv_heads · group, head_dim] bf16
  float scale = 0;                        // softmax scale; 0: 1 / sqrt(head_dim)
};

inline constexpr std::uint32_t kMinSplitTokens = 128;

class DecodeAttention {
 public:
  DecodeAttention() = default;

  // indptr: [rows + 1] (host copy of the CSR offsets the run will use); last_page_tokens: [rows].
  // Throws std::invalid_argument on an unsupported shape or an invalid list.
  void plan(const DecodeAttentionShape& shape, std::span<const std::uint32_t> indptr,
            std::span<const std::uint32_t> last_page_tokens,
            const DecodeAttentionOptions& options = {});
  void run(const DecodeAttentionArgs& args, CUstream_st* stream = nullptr) const;

  std::uint32_t work_items() const { return static_cast<std::uint32_t>(work_.size()); }
  std::uint32_t merged_rows() const { return static_cast<std::uint32_t>(merge_.size()); }
  std::uint32_t split_tokens() const { return split_tokens_; }  // the largest item's tokens
  std::uint64_t total_tokens() const { return total_tokens_; }
  const DecodeAttentionShape& shape() const { return shape_; }

 private:
  DecodeAttentionShape shape_{};
  DecodeAttentionOptions options_{};
  std::uint32_t split_tokens_ = 0;
  std::uint64_t total_tokens_ = 0;
  std::vector<DecodeWorkItem> work_;
  std::vector<DecodeMergeItem> merge_;
  DeviceArray<DecodeWorkItem> d_work_;
  DeviceArray<DecodeMergeItem> d_merge_;
  DeviceArray<std::uint32_t> merge_arrivals_;
  DeviceArray<float> partial_out_;
  DeviceArray<float> partial_lse_;
  mutable LaunchFence fence_;  // the last run, which plan() waits for
};

// The dense baseline's lists: row r (request r / kv_heads, head r % kv_heads) lists the
// ceil(tokens[request] / page_tokens) slots first_slot[r] + 0, 1, …; fills indptr [rows + 1],
// indices and last_page_tokens [rows].
void dense_page_lists(std::span<const std::uint32_t> tokens, std::uint32_t kv_heads,
                      std::uint32_t page_tokens, std::span<const std::uint32_t> first_slot,
                      std::vector<std::uint32_t>& indptr, std::vector<std::uint32_t>& indices,
                      std::vector<std::uint32_t>& last_page_tokens);

}  // namespace spin::exec
