// Selection: the host side of the selection kernels (selection_kernel.h), in FlashInfer's
// plan/run split, and the summary builders that feed them.
//
// Selection scores one decode query per request against the summaries of each (request, KV head)
// row's partitions and writes the top-k partitions of every row (row-local indices, ascending;
// equal scores: lower index first). Algorithms (selection_kernel.h has the formulas):
// kShadowKv (mean keys, max over the GQA group), kQuest (min/max bounds, max over the group),
// kSeer (gate projections, one gate query per KV head, the row's last block always selected),
// kRetroInfer (cluster centroids, max over the group; ClusterPages turns the selected clusters
// into pages).
//
// Call order: construct → { plan(shape, indptr, k) → run(args)* }*. A plan holds for any inputs
// with the same partition counts and k (queries and summaries change between runs). plan() is
// synchronous (it waits for the last run, then uploads; O(rows + work items) host work); run() is
// asynchronous on the given stream and launches the score kernel (Seer: after the gate-query
// kernel) and the top-k kernel. k_r = min(k[r], partitions of row r): k above a row's partition
// count is clamped (a budget larger than a short context selects everything), 0 selects nothing.
// The selection's CSR offsets are selected_indptr() (host) and device_selected_indptr(). Runs of
// one plan share its score buffer: run them on one stream.
//
// Work split: the score kernel's items are (row, partition range) of equal size in multiples of
// 32 partitions; the ideal size gives each block of one wave (occupancy API) kScoreItemsPerBlock
// items, within [kMinScoreChunk, kMaxScoreChunk] partitions; one wave of blocks takes the items
// round-robin (persistent), so blocks finish within about one small item of each other. The top-k
// is one block per row, keys in shared memory for rows up to kTopkMaxStaged partitions. Memory: 12
// bytes per work item, 4 bytes per partition (scores), 8 per row, Seer 256 bytes per row (gate
// queries).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "exec/memory.h"
#include "exec/selection_kernel.h"

namespace spin::exec {

struct SelectionShape {
  SelectionAlgorithm algorithm = SelectionAlgorithm::kShadowKv;
  std::uint32_t batch = 1;
  std::uint32_t kv_heads = 8;
  std::uint32_t group = 1;  // query heads per KV head, 1..16
  std::uint32_t head_dim = kSelectionHeadDim;
  std::uint32_t rows() const { return batch * kv_heads; }
  std::uint32_t query_heads() const { return kv_heads * group; }
  std::uint32_t summary_dim() const { return exec::summary_dim(algorithm); }
};

struct SelectionOptions {
  std::uint32_t chunk_partitions = 0;  // partitions per score block (rounded up to 32); 0: auto
  bool stage_keys = true;              // top-k keys in shared memory where a row fits
  std::uint32_t topk_threads = 0;      // top-k block: 512 or 1024; 0: 1024 when rows < 2 · SMs
};

// Device pointers of one run.
struct SelectionArgs {
  const std::uint16_t* q;              // [batch, kv_heads · group, head_dim] bf16
  const std::uint16_t* summaries;      // [partitions, summary_dim] bf16, rows packed by indptr
  std::uint32_t* selected;             // [selected_indptr()[rows]] row-local indices, ascending
  const std::uint16_t* w_q = nullptr;  // Seer: [group · head_dim, kSeerGateDim] bf16
};

inline constexpr std::uint32_t kMinScoreChunk = 128;
inline constexpr std::uint32_t kMaxScoreChunk = 4096;
inline constexpr std::uint32_t kScoreItemsPerBlock = 8;

class Selection {
 public:
  Selection() = default;

  // indptr: [rows + 1] partition offsets of the rows (host copy); k: [rows] partitions to select
  // per row, or one value for every row. Throws std::invalid_argument on an unsupported shape or
  // invalid offsets.
  void plan(const SelectionShape& shape, std::span<const std::uint32_t> indptr,
            std::span<const std::uint32_t> k, const SelectionOptions& options = {});
  // score() then select().
  void run(const SelectionArgs& args, CUstream_st* stream = nullptr) const;
  // The scores only (Seer: the gate queries first), into scores().
  void score(const SelectionArgs& args, CUstream_st* stream = nullptr) const;
  // The top-k of scores() only.
  void select(const SelectionArgs& args, CUstream_st* stream = nullptr) const;

  const SelectionShape& shape() const { return shape_; }
  const std::vector<std::uint32_t>& selected_indptr() const { return out_indptr_; }
  const std::uint32_t* device_selected_indptr() const { return d_out_indptr_.data(); }
  const std::uint32_t* device_indptr() const { return d_indptr_.data(); }
  float* scores() const { return scores_.data(); }                      // [partitions]
  const std::uint16_t* gate_queries() const { return gate_q_.data(); }  // Seer: [rows, 128]
  std::uint64_t partitions() const { return indptr_.empty() ? 0 : indptr_.back(); }
  std::uint32_t work_items() const { return static_cast<std::uint32_t>(work_.size()); }
  std::uint32_t score_blocks() const { return std::min(grid_, work_items()); }
  std::uint32_t chunk_partitions() const { return chunk_; }
  bool keys_staged() const { return staged_elems_ > 0; }
  std::uint32_t topk_threads() const { return topk_threads_; }

 private:
  SelectionShape shape_{};
  std::uint32_t chunk_ = 0;
  std::uint32_t grid_ = 0;
  std::uint32_t staged_elems_ = 0;
  std::uint32_t topk_threads_ = kTopkThreadsSmall;
  std::vector<std::uint32_t> indptr_;
  std::vector<std::uint32_t> out_indptr_;
  std::vector<ScoreWorkItem> work_;
  DeviceArray<std::uint32_t> d_indptr_;
  DeviceArray<std::uint32_t> d_out_indptr_;
  DeviceArray<ScoreWorkItem> d_work_;
  DeviceArray<float> scores_;
  DeviceArray<std::uint16_t> gate_q_;
  mutable LaunchFence fence_;  // the last run, which plan() waits for
};

// Device pointers of one summary build.
struct SummaryBuildArgs {
  const std::uint8_t* pages;           // HbmPagePool::data(): [slots, 2, page_tokens, head_dim]
  const std::uint32_t* slots;          // the page lists the jobs index
  std::uint16_t* summaries;            // [.., summary_dim] bf16
  const std::uint16_t* w_k = nullptr;  // Seer: [kSeerPooledDim, kSeerGateDim] bf16
};

// Builds summaries from paged K on the device: at prefill a job per partition of every stream
// (partition_summary_jobs), during decode a job per newly filled page (or re-indexed cluster).
// Job i summarises tokens [token_begin, token_end) of the stream whose logical page p sits in
// slot slots[list + p] into summary row dst: kShadowKv/kRetroInfer the mean key (fp32 sums,
// rounded to bf16), kQuest per-dim min then max (exact), kSeer the pooled keys (mean, max, min)
// through w_k (fp32, rounded to bf16). Destinations of one run are distinct.
class SummaryBuilder {
 public:
  // Throws std::invalid_argument on an unsupported page size or an empty job range.
  void plan(SelectionAlgorithm algorithm, std::uint32_t page_tokens,
            std::span<const SummaryJob> jobs);
  void run(const SummaryBuildArgs& args, CUstream_st* stream = nullptr) const;
  std::uint32_t jobs() const { return job_count_; }

 private:
  SelectionAlgorithm algorithm_ = SelectionAlgorithm::kShadowKv;
  std::uint32_t page_tokens_log2_ = 0;
  std::uint32_t job_count_ = 0;
  DeviceArray<SummaryJob> d_jobs_;
  mutable LaunchFence fence_;  // the last run, which plan() waits for
};

// Prefill jobs: stream s stores tokens[s] tokens with its page list at slots[list_begin[s] ..];
// its partitions of partition_tokens tokens (the last one partial) get consecutive summary rows,
// streams in order, so the rows' CSR offsets are the running partition counts (returned in
// indptr, [streams + 1]).
std::vector<SummaryJob> partition_summary_jobs(std::span<const std::uint32_t> tokens,
                                               std::span<const std::uint32_t> list_begin,
                                               std::uint32_t partition_tokens,
                                               std::vector<std::uint32_t>& indptr);

// Device pointers of one ClusterPages run.
struct ClusterPagesArgs {
  const std::uint32_t* selected;        // Selection's output (ascending cluster indices)
  const std::uint32_t* cluster_tokens;  // [clusters + rows] device copy of the plan's offsets
  std::uint32_t* pages;                 // [page_indptr()[rows]]
  std::uint32_t* page_count;            // [rows]
};

// RetroInfer: the pages that each row's selected clusters cover (clusters are contiguous runs in
// storage order; a page shared by two selected clusters is listed once), ascending, written to
// pages[page_indptr()[r] ..], their number to page_count[r].
class ClusterPages {
 public:
  // indptr: [rows + 1] cluster offsets (as Selection's); cluster_tokens: row r's n_r + 1 storage
  // offsets at [indptr[r] + r, indptr[r+1] + r], non-decreasing; selected_indptr: the
  // Selection's. Throws std::invalid_argument on invalid offsets.
  void plan(std::span<const std::uint32_t> indptr, std::span<const std::uint32_t> cluster_tokens,
            std::uint32_t page_tokens, std::span<const std::uint32_t> selected_indptr);
  void run(const ClusterPagesArgs& args, CUstream_st* stream = nullptr) const;
  const std::vector<std::uint32_t>& page_indptr() const { return page_indptr_; }

 private:
  std::uint32_t rows_ = 0;
  std::uint32_t page_tokens_log2_ = 0;
  std::vector<std::uint32_t> page_indptr_;
  DeviceArray<std::uint32_t> d_indptr_;
  DeviceArray<std::uint32_t> d_out_indptr_;
  DeviceArray<std::uint32_t> d_page_indptr_;
  mutable LaunchFence fence_;  // the last run, which plan() waits for
};

}  // namespace spin::exec
