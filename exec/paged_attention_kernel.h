// Paged decode attention kernels (DESIGN.md §6): one query token per request attends over a list
// of KV pages in the HBM page pool, for sparse attention (the selected pages) and for the dense
// baseline (all pages of the request). One kernel serves both; the host side is
// exec/paged_attention.h (plan/run), which fills the plain DecodeAttentionParams below.
//
// Page layout (HbmPagePool slot, HostKvStore page): a page holds page_tokens tokens of one stream
// (request, layer, KV head): first K [page_tokens, head_dim], then V [page_tokens, head_dim],
// bf16, row-major. page_bytes = 2 · page_tokens · head_dim · 2.
//
// Contract of one launch
// - rows = batch · kv_heads; row r = (request r / kv_heads, KV head r % kv_heads). Query head h
//   of a request uses KV head h / group (GQA, as PyTorch's enable_gqa).
// - Row r attends over the tokens of pages indices[indptr[r] .. indptr[r+1]) in list order; every
//   page is full except the last of the list, which holds last_page_tokens[r] valid tokens
//   (1..page_tokens; its other token rows are never read). Lists are non-empty.
// - out = softmax(scale · q · Kᵀ) · V per query head, fp32 accumulation, bf16 out.
// - Work is cut into items (row, token range) by the plan (split-KV). An item whose `partial` is
//   kNoPartial writes its row's output directly; otherwise it writes a normalised fp32 partial
//   output and its log2-sum-exp, and a row's partials are combined: by the last of the row's
//   blocks to finish (fused_merge: a per-row arrival counter, which that block resets to 0 for
//   the next launch), or by a second, merge kernel.
//
// Kernel: one block of kAttentionWarps warps per work item; each warp takes 16-token chunks of
// the item round-robin and runs mma.sync m16n8k16 (bf16 in, fp32 accumulate) with the group's
// query heads as the 16 rows of A (group ≤ 16), online softmax in fp32 registers; K and V are
// read straight from global memory into the MMA fragments with 16-byte loads (a fixed permutation
// of the head dimension makes each thread's fragment elements contiguous), the next chunk loaded
// into registers while this one is computed (prefetch), optionally chunks further ahead requested
// into L2 with bulk prefetches (l2_prefetch_chunks; measured slower); the warps' states are
// merged in shared memory at the end. docs/gpu-kernels.md has the fragment layout and timings.
#pragma once

#include <cstdint>
#include <type_traits>

struct CUstream_st;  // cudaStream_t without CUDA's headers

namespace spin::exec {

inline constexpr std::uint32_t kAttentionWarps = 4;         // warps per block
inline constexpr std::uint32_t kAttentionChunkTokens = 16;  // tokens per warp step
inline constexpr std::uint32_t kAttentionHeadDim = 128;     // the head_dim instantiated
inline constexpr std::uint32_t kAttentionMaxGroup = 16;     // query heads per KV head (MMA rows)
inline constexpr std::uint32_t kNoPartial = 0xFFFFFFFFu;

// One block's work: tokens [token_begin, token_end) of row `row`'s list.
struct DecodeWorkItem {
  std::uint32_t row;
  std::uint32_t token_begin;
  std::uint32_t token_end;
  std::uint32_t partial;  // index into the partial buffers, or kNoPartial (write out directly)
  std::uint32_t merge;    // the row's DecodeMergeItem (if partial != kNoPartial)
};
static_assert(std::is_trivially_copyable_v<DecodeWorkItem>);

// Rows split over several items: the row's partials are [partial_begin, partial_end).
struct DecodeMergeItem {
  std::uint32_t row;
  std::uint32_t partial_begin;
  std::uint32_t partial_end;
};
static_assert(std::is_trivially_copyable_v<DecodeMergeItem>);

struct DecodeAttentionParams {
  const std::uint16_t* q;                 // [batch, kv_heads · group, head_dim] bf16
  const std::uint16_t* pages;             // [slots, 2, page_tokens, head_dim] bf16 (K, then V)
  const std::uint32_t* indptr;            // [rows + 1]
  const std::uint32_t* indices;           // [indptr[rows]] HBM slot of each listed page
  const std::uint32_t* last_page_tokens;  // [rows] valid tokens of each list's last page
  std::uint16_t* out;                     // [batch, kv_heads · group, head_dim] bf16
  float* partial_out;                     // [partials, group, head_dim] fp32, normalised
  float* partial_lse;                     // [partials, group] log2-sum-exp of scaled scores
  const DecodeWorkItem* work;             // [work_items]
  const DecodeMergeItem* merge;           // [merge_items]
  std::uint32_t* merge_arrivals;          // [merge_items] zero between launches (fused_merge)
  std::uint32_t work_items;
  std::uint32_t merge_items;
  std::uint32_t kv_heads;
  std::uint32_t group;               // 1..kAttentionMaxGroup
  std::uint32_t head_dim;            // kAttentionHeadDim
  std::uint32_t page_tokens_log2;    // page_tokens = 2^page_tokens_log2
  float scale_log2;                  // softmax scale · log2(e)
  std::uint32_t prefetch;            // 1: load the next chunk while computing this one
  std::uint32_t l2_prefetch_chunks;  // bulk-prefetch into L2 this many chunks ahead (0: off)
  std::uint32_t fused_merge;         // 1: a row's last block merges its partials (no 2nd kernel)
};
static_assert(std::is_trivially_copyable_v<DecodeAttentionParams>);

// Launches the attention kernel (work_items blocks) and, if merge_items > 0 and the merge is not
// fused, the merge kernel on
// `stream`. The host wrapper (DecodeAttention::run) has validated the params; this checks only
// the shape it was compiled for, and each launch. Does not synchronise.
void launch_decode_attention(const DecodeAttentionParams& params, CUstream_st* stream);

// Blocks of the attention kernel that fit on one SM at once (occupancy API), for the plan.
std::uint32_t decode_attention_blocks_per_sm(std::uint32_t group, bool prefetch,
                                             std::uint32_t l2_prefetch_chunks);

// Fills `count` bf16 values with pseudo-random values in [-1, 1) from `seed` (never all zero):
// benchmark inputs without a host round trip.
void fill_random_bf16(std::uint16_t* data, std::uint64_t count, std::uint64_t seed,
                      CUstream_st* stream = nullptr);

}  // namespace spin::exec
