// Selection kernels (DESIGN.md §6): score one decode query per request against per-partition
// summaries and take the top-k partitions per (request, KV head), and build those summaries from
// paged K. The host side is exec/selection.h (plan/run), which fills the plain params below.
//
// Rows. A launch covers rows = batch · kv_heads; row r = (request r / kv_heads, KV head
// r % kv_heads), as in paged_attention_kernel.h. Row r's partitions are summaries
// [indptr[r], indptr[r+1]) (CSR over one packed summary array); its selection is
// selected[out_indptr[r] .. out_indptr[r+1]) (k_r = min(k asked, partitions), set by the plan).
//
// Summaries (bf16, one row of summary_dim values per partition):
// - kShadowKv, kRetroInfer: mean key of the partition (page, or variable cluster), [128].
// - kQuest: per-dim min then per-dim max of K over the page, [2, 128].
// - kSeer: the gate's key projection of the block's pooled keys (mean, max, min: 384 values)
//   through a fixed gate matrix [384, 128], [128].
//
// Scores (fp32, [indptr[rows]]), one per (row, partition):
// - kShadowKv, kRetroInfer: max over the row's `group` query heads of q_h · summary.
// - kQuest: max over the group of Σ_d max(q_d·min_d, q_d·max_d) = q⁻·min + q⁺·max
//   (q⁻ = min(q, 0), q⁺ = max(q, 0)): a product with the query split by sign, so it is the same
//   MMA over a 256-wide summary.
// - kSeer: q_gate · summary, where q_gate = concat(group's query heads) · W_q [group·128, 128]
//   (one gate query per KV head, so no group reduction is left).
// Top-k per row: the k_r partitions of largest score (Seer: the row's last partition always,
// then the k_r − 1 largest of the others), output as row-local partition indices in ascending
// order; equal scores: the lower index wins. Scores compare as floats (−0 = +0); NaN is not
// expected (inputs are finite).
//
// Kernels (docs/gpu-kernels.md, "Selection", has the details and timings).
// - score: persistent blocks of 4 warps (one wave) take the plan's work items (row, partition
//   range) round-robin; each warp takes 8-partition n-tiles round-robin, 4 at a time (Quest 2),
//   and runs mma.sync m16n8k16 (bf16 in, fp32 accumulate) with the query heads as the 16 rows of
//   A (group ≤ 16) and the partitions as the 8 columns of B, the head dimension permuted as in
//   the attention kernel so that every thread loads 16 contiguous bytes; the max over the group
//   is 3 shuffles per n-tile.
// - top-k: one block per row (512 threads, or 1024 when rows are few); the row's scores become
//   order-preserving 32-bit keys (in shared memory when the row fits, else re-read from global
//   memory in each pass); a radix select over 8-bit digits from the top finds the k-th key
//   (stopping early when the digit's bucket holds exactly the elements still needed); then each
//   warp counts the "above" and "equal" elements of its contiguous range, one barrier gives it
//   its offsets, and it writes its selected indices ascending (ballot ranks).
// - gate query (Seer): a block per 4 rows, 8 slices of the input × 128 outputs.
// - summary build: one warp per job (a token range of one stream, through that stream's page
//   list), two tokens per step (16 lanes × 16 bytes each), fp32 sums, exact min/max; Seer adds
//   a per-warp projection through the gate matrix.
// - cluster pages (RetroInfer): one warp per row, max- and sum-scans over the selected clusters.
#pragma once

#include <cstdint>
#include <type_traits>

struct CUstream_st;  // cudaStream_t without CUDA's headers

namespace spin::exec {

enum class SelectionAlgorithm : std::uint32_t { kShadowKv, kQuest, kSeer, kRetroInfer };

inline constexpr std::uint32_t kSelectionHeadDim = 128;  // the head_dim instantiated
inline constexpr std::uint32_t kSelectionMaxGroup = 16;  // query heads per KV head (MMA rows)
inline constexpr std::uint32_t kSeerGateDim = 128;       // Seer's gate space (summary width)
inline constexpr std::uint32_t kSeerPooledDim = 3 * kSelectionHeadDim;  // mean, max, min
inline constexpr std::uint32_t kScoreWarps = 4;
inline constexpr std::uint32_t kTopkThreadsSmall = 512;   // top-k block, many rows
inline constexpr std::uint32_t kTopkThreadsLarge = 1024;  // top-k block, few rows
// Rows of at most this many partitions keep their keys in shared memory during the top-k.
inline constexpr std::uint32_t kTopkMaxStaged = 24576;

// Width of one summary row in bf16 values.
constexpr std::uint32_t summary_dim(SelectionAlgorithm a) {
  return a == SelectionAlgorithm::kQuest  ? 2 * kSelectionHeadDim
         : a == SelectionAlgorithm::kSeer ? kSeerGateDim
                                          : kSelectionHeadDim;
}

// The algorithm's name, as the benchmark and tests print it.
constexpr const char* selection_algorithm_name(SelectionAlgorithm a) {
  return a == SelectionAlgorithm::kShadowKv ? "shadowkv"
         : a == SelectionAlgorithm::kQuest  ? "quest"
         : a == SelectionAlgorithm::kSeer   ? "seer"
                                            : "retroinfer";
}

// One score block's work: partitions [begin, end) (row-local) of row `row`.
struct ScoreWorkItem {
  std::uint32_t row;
  std::uint32_t begin;
  std::uint32_t end;
};
static_assert(std::is_trivially_copyable_v<ScoreWorkItem>);

struct ScoreParams {
  const std::uint16_t* query;      // [rows, query_rows, 128] bf16 (the attention's q layout)
  const std::uint16_t* summaries;  // [indptr[rows], summary_dim] bf16
  const std::uint32_t* indptr;     // [rows + 1]
  float* scores;                   // [indptr[rows]]
  const ScoreWorkItem* work;       // [work_items]
  std::uint32_t work_items;
  std::uint32_t grid;        // blocks launched (persistent, items round-robin); 0: one per item
  std::uint32_t query_rows;  // MMA rows used: group (1 for Seer's gate query), 1..16
  std::uint32_t quest;       // 1: 256-wide [min | max] summaries, query split by sign
};
static_assert(std::is_trivially_copyable_v<ScoreParams>);

struct TopkParams {
  const float* scores;              // [indptr[rows]]
  const std::uint32_t* indptr;      // [rows + 1]
  const std::uint32_t* out_indptr;  // [rows + 1]; k_r = out_indptr[r+1] − out_indptr[r] ≤ n_r
  std::uint32_t* selected;          // [out_indptr[rows]] row-local indices, ascending
  std::uint32_t rows;
  std::uint32_t staged_elems;  // 0: keys re-read from global; else shared memory for this many
  std::uint32_t threads;       // block size: kTopkThreadsSmall or kTopkThreadsLarge
  std::uint32_t force_last;    // 1: the row's last partition is always selected (Seer)
};
static_assert(std::is_trivially_copyable_v<TopkParams>);

// Seer's gate query: gate_q[r] = concat(q of row r's group heads) · w_q, bf16 out.
struct GateQueryParams {
  const std::uint16_t* q;    // [rows, group, 128] bf16
  const std::uint16_t* w_q;  // [group · 128, kSeerGateDim] bf16, row-major
  std::uint16_t* gate_q;     // [rows, kSeerGateDim] bf16
  std::uint32_t rows;
  std::uint32_t group;
};
static_assert(std::is_trivially_copyable_v<GateQueryParams>);

// One summary to build: tokens [token_begin, token_end) of one stream, whose logical page p is
// HBM slot slots[list + p]; the result goes to summary row `dst`.
struct SummaryJob {
  std::uint32_t list;
  std::uint32_t token_begin;
  std::uint32_t token_end;  // > token_begin
  std::uint32_t dst;
};
static_assert(std::is_trivially_copyable_v<SummaryJob>);

struct SummaryBuildParams {
  const std::uint16_t* pages;  // [slots, 2, page_tokens, 128] bf16 (K, then V)
  const std::uint32_t* slots;  // page lists the jobs index
  const SummaryJob* jobs;      // [jobs]
  std::uint16_t* summaries;    // [.., summary_dim] bf16
  const std::uint16_t* w_k;    // Seer: [kSeerPooledDim, kSeerGateDim] bf16; else unused
  std::uint32_t job_count;
  std::uint32_t page_tokens_log2;
  SelectionAlgorithm algorithm;
};
static_assert(std::is_trivially_copyable_v<SummaryBuildParams>);

// RetroInfer: the pages that a row's selected clusters cover. Cluster c of row r covers storage
// tokens [cluster_tokens[indptr[r] + r + c], cluster_tokens[indptr[r] + r + c + 1]) (each row
// has n_r + 1 ascending offsets); its pages are those the range overlaps. Row r writes its
// distinct pages ascending to pages[page_indptr[r] ..] and their number to page_count[r].
struct ClusterPagesParams {
  const std::uint32_t* selected;        // [out_indptr[rows]] ascending cluster indices
  const std::uint32_t* out_indptr;      // [rows + 1]
  const std::uint32_t* indptr;          // [rows + 1] clusters
  const std::uint32_t* cluster_tokens;  // [indptr[rows] + rows]
  const std::uint32_t* page_indptr;     // [rows + 1] capacity of each row's page list
  std::uint32_t* pages;                 // [page_indptr[rows]]
  std::uint32_t* page_count;            // [rows]
  std::uint32_t rows;
  std::uint32_t page_tokens_log2;
};
static_assert(std::is_trivially_copyable_v<ClusterPagesParams>);

// Launchers: each checks its launch, none synchronises. The host wrappers (selection.h) have
// validated the params.
void launch_selection_scores(const ScoreParams& params, CUstream_st* stream);
void launch_selection_topk(const TopkParams& params, CUstream_st* stream);
void launch_gate_query(const GateQueryParams& params, CUstream_st* stream);
void launch_summary_build(const SummaryBuildParams& params, CUstream_st* stream);
void launch_cluster_pages(const ClusterPagesParams& params, CUstream_st* stream);

// Score blocks that fit on one SM at once (occupancy API), for the plan's work split.
std::uint32_t selection_score_blocks_per_sm(bool quest, std::uint32_t query_rows);

}  // namespace spin::exec
