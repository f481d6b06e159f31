// Causal prefill attention kernel (DESIGN.md §6): FlashAttention-2 style, on tensor cores
// (mma.sync m16n8k16, bf16 in, fp32 accumulate), for several requests per launch (varlen) and
// chunked prefill. The host side is exec/prefill_attention.h (plan/run), which fills the plain
// PrefillAttentionParams below.
//
// Layouts (PyTorch's [tokens, heads, head_dim], bf16, row-major, requests packed one after the
// other): q and out [total_q, q_heads, head_dim]; k and v [total_kv, kv_heads, head_dim]; lse
// (optional) [total_q, q_heads] fp32. Request b owns query rows [cu_q[b], cu_q[b+1]) and key rows
// [cu_k[b], cu_k[b+1]); with q_len ≤ kv_len its queries are the last q_len positions
// [kv_len − q_len, kv_len) of its kv_len keys (a chunk of a chunked prefill; q_len = kv_len is a
// whole prompt), and query i attends to keys 0 .. kv_len − q_len + i (causal).
//
// Contract of one launch
// - Query head h uses KV head h / group (GQA, as PyTorch's enable_gqa).
// - out = softmax(scale · q · kᵀ + causal mask) · v per (query, head), fp32 accumulation and
//   softmax, bf16 out; lse = ln Σ_j exp(scale · q · k_j) over the unmasked keys (natural log, as
//   FlashAttention's softmax_lse), if lse is not null: two chunks' outputs of the same queries
//   merge as Σ exp(lse_c − lse_max) · out_c / Σ exp(lse_c − lse_max).
// - The plan cuts each request's queries into tiles of tile_rows queries (PrefillTile, listed
//   longest first: most key tiles first, for causal load balance); block (x = head, y = tile).
//
// Kernels (PrefillTiling picks one; docs/gpu-kernels.md has the tiling and the timings):
// - mma.sync (this file's .cu, sm_90): a block runs one (query tile, query head); its warps each
//   own 16 · m_tiles query rows; K/V tiles of 64 keys stream through two cp.async buffers in
//   shared memory (16-byte row chunks XOR-swizzled by row, so ldmatrix and cp.async are
//   bank-conflict free); S = Q·Kᵀ and O += P·V with mma.sync m16n8k16 (B fragments by ldmatrix,
//   .trans for V; Q's A fragments by ldmatrix, kept in registers when a warp owns one m-tile).
// - wgmma (prefill_attention_wgmma.cu, sm_90a): two warpgroups of 64 query rows each, 128-key
//   tiles, Q/K/V in the 128-byte-swizzled layout wgmma reads through descriptors, P from
//   registers; optionally staggered (warpgroup 1 half a tile behind, so that one warpgroup's
//   softmax overlaps the other's tensor-core work).
// Both: online softmax in exp2 with scale · log2(e) folded into one FMA, O rescaled lazily (only
// when a row's max grows by more than a factor 2^8, and skipped by a warp none of whose rows
// moved), the causal mask only on tiles that cross a warp's diagonal, key tiles past a warp's (or
// warpgroup's) last query skipped, and the output staged through shared memory for 16-byte stores.
#pragma once

#include <cstdint>
#include <type_traits>

struct CUstream_st;  // cudaStream_t without CUDA's headers

namespace spin::exec {

inline constexpr std::uint32_t kPrefillHeadDim = 128;  // the head_dim instantiated
inline constexpr std::uint32_t kPrefillKeyTile = 64;   // keys per K/V tile
inline constexpr std::uint32_t kPrefillMaxGroup = 16;  // query heads per KV head

// The block shapes instantiated (measured in `spin bench gpu`, docs/gpu-kernels.md).
enum class PrefillTiling : std::uint32_t {
  kQ128W4 = 0,    // 128 queries, 4 warps × 32 rows (2 m-tiles), Q fragments from shared memory
  kQ128W8 = 1,    // 128 queries, 8 warps × 16 rows, Q fragments from shared memory
  kQ64W4 = 2,     // 64 queries, 4 warps × 16 rows, Q fragments in registers
  kQ256W8 = 3,    // 256 queries, 8 warps × 32 rows, Q fragments from shared memory
  kWgmma128 = 4,  // 128 queries, 2 warpgroups × 64 rows, wgmma (sm_90a), 128-key tiles
  kWgmma128Staggered = 5,  // the same, warpgroup 1 half a tile behind warpgroup 0, 3 stages
};
inline constexpr std::uint32_t kPrefillTilings = 6;

// Queries per tile of a tiling.
constexpr std::uint32_t prefill_tile_rows(PrefillTiling t) {
  return t == PrefillTiling::kQ64W4 ? 64u : t == PrefillTiling::kQ256W8 ? 256u : 128u;
}

// One query tile: query rows [q_row, q_row + q_rows) (q_rows ≤ tile rows) of one request, the
// first at key position q_pos; its keys are rows [kv_row, kv_row + key_end) of k and v, where
// key_end = q_pos + q_rows (the last query's causal end).
struct PrefillTile {
  std::uint32_t q_row;
  std::uint32_t q_rows;
  std::uint32_t q_pos;
  std::uint32_t kv_row;
  std::uint32_t key_end;
};
static_assert(std::is_trivially_copyable_v<PrefillTile>);

struct PrefillAttentionParams {
  const std::uint16_t* q;    // [total_q, q_heads, head_dim] bf16
  const std::uint16_t* k;    // [total_kv, kv_heads, head_dim] bf16
  const std::uint16_t* v;    // [total_kv, kv_heads, head_dim] bf16
  std::uint16_t* out;        // [total_q, q_heads, head_dim] bf16
  float* lse;                // [total_q, q_heads] natural log-sum-exp, or null (not written)
  const PrefillTile* tiles;  // [tile_count], longest first
  std::uint32_t tile_count;  // ≤ 65535 (grid y)
  std::uint32_t q_heads;     // kv_heads · group, ≤ 65535 (grid x)
  std::uint32_t kv_heads;
  std::uint32_t group;     // 1..kPrefillMaxGroup
  std::uint32_t head_dim;  // kPrefillHeadDim
  float scale_log2;        // softmax scale · log2(e)
  PrefillTiling tiling;
  std::uint32_t lazy_rescale;  // 1: rescale O only when a row's max grows by > 2^8 (else always)
};
static_assert(std::is_trivially_copyable_v<PrefillAttentionParams>);

// Launches the kernel (grid q_heads × tile_count) on `stream`. The host wrapper
// (PrefillAttention::run) has validated the params; this checks only what the kernel was compiled
// for, and the launch. Does not synchronise.
void launch_prefill_attention(const PrefillAttentionParams& params, CUstream_st* stream);

// The kWgmma128 kernels (prefill_attention_wgmma.cu, compiled for sm_90a only); called by
// launch_prefill_attention after its checks.
void launch_prefill_attention_wgmma(const PrefillAttentionParams& params, bool stagger,
                                    CUstream_st* stream);

}  // namespace spin::exec
