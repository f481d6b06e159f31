#include "exec/selection.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace spin::exec {
namespace {

std::uint32_t log2_of_page_tokens(std::uint32_t page_tokens, const char* what) {
  if (page_tokens == 0 || (page_tokens & (page_tokens - 1)) != 0 || page_tokens > 4096) {
    throw std::invalid_argument(
        fmt::format("{}: page_tokens {} is not a power of two ≤ 4096", what, page_tokens));
  }
  std::uint32_t log2 = 0;
  while ((1u << log2) < page_tokens) ++log2;
  return log2;
}

void check_indptr(std::span<const std::uint32_t> indptr, std::uint32_t rows, const char* what) {
  if (indptr.size() != rows + 1ull || indptr[0] != 0) {
    throw std::invalid_argument(fmt::format("{}: indptr needs {} entries starting at 0, got {}",
                                            what, rows + 1, indptr.size()));
  }
  for (std::uint32_t r = 0; r < rows; ++r) {
    if (indptr[r + 1] < indptr[r]) {
      throw std::invalid_argument(fmt::format("{}: indptr decreases at row {} ({} > {})", what, r,
                                              indptr[r], indptr[r + 1]));
    }
  }
}

}  // namespace

void Selection::plan(const SelectionShape& shape, std::span<const std::uint32_t> indptr,
                     std::span<const std::uint32_t> k, const SelectionOptions& options) {
  fence_.wait();  // the last run may still read what this plan replaces
  if (static_cast<std::uint32_t>(shape.algorithm) >
      static_cast<std::uint32_t>(SelectionAlgorithm::kRetroInfer)) {
    throw std::invalid_argument(fmt::format("selection: unknown algorithm {}",
                                            static_cast<std::uint32_t>(shape.algorithm)));
  }
  if (shape.head_dim != kSelectionHeadDim) {
    throw std::invalid_argument(fmt::format("selection: head_dim {} is not supported (only {})",
                                            shape.head_dim, kSelectionHeadDim));
  }
  if (shape.group == 0 || shape.group > kSelectionMaxGroup) {
    throw std::invalid_argument(
        fmt::format("selection: group {} is outside 1..{}", shape.group, kSelectionMaxGroup));
  }
  const std::uint32_t rows = shape.rows();
  if (rows == 0) throw std::invalid_argument("selection: no rows (batch · kv_heads = 0)");
  check_indptr(indptr, rows, "selection");
  if (k.size() != rows && k.size() != 1) {
    throw std::invalid_argument(
        fmt::format("selection: k needs {} entries (one per row) or 1, got {}", rows, k.size()));
  }
  if (options.topk_threads != 0 && options.topk_threads != kTopkThreadsSmall &&
      options.topk_threads != kTopkThreadsLarge) {
    throw std::invalid_argument(fmt::format("selection: topk_threads {} is not 0, {} or {}",
                                            options.topk_threads, kTopkThreadsSmall,
                                            kTopkThreadsLarge));
  }
  shape_ = shape;
  indptr_.assign(indptr.begin(), indptr.end());
  out_indptr_.assign(rows + 1, 0);
  std::uint64_t selected = 0;
  std::uint32_t longest = 0;
  for (std::uint32_t r = 0; r < rows; ++r) {
    const std::uint32_t n = indptr[r + 1] - indptr[r];
    longest = std::max(longest, n);
    selected += std::min(k.size() == 1 ? k[0] : k[r], n);
    out_indptr_[r + 1] = static_cast<std::uint32_t>(selected);  // ≤ indptr[rows]: fits
  }
  const bool quest = shape.algorithm == SelectionAlgorithm::kQuest;
  const std::uint32_t query_rows = shape.algorithm == SelectionAlgorithm::kSeer ? 1 : shape.group;
  const std::uint64_t total = indptr.back();
  int device = 0, sms = 0;
  SPIN_CUDA_CHECK(cudaGetDevice(&device));
  SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  grid_ = static_cast<std::uint32_t>(sms) * selection_score_blocks_per_sm(quest, query_rows);
  if (options.chunk_partitions != 0) {
    chunk_ = (std::min(options.chunk_partitions, 1u << 30) + 31) / 32 * 32;
  } else {
    const double ideal = std::ceil(static_cast<double>(total) / (grid_ * kScoreItemsPerBlock));
    chunk_ =
        static_cast<std::uint32_t>(std::clamp<double>(ideal, kMinScoreChunk, kMaxScoreChunk) + 31) /
        32 * 32;
  }
  work_.clear();
  for (std::uint32_t r = 0; r < rows; ++r) {
    const std::uint32_t n = indptr[r + 1] - indptr[r];
    if (n == 0) continue;
    const std::uint32_t items = (n + chunk_ - 1) / chunk_;
    const std::uint32_t size = ((n + items - 1) / items + 31) / 32 * 32;
    for (std::uint32_t b = 0; b < n; b += size) work_.push_back({r, b, std::min(n, b + size)});
  }
  staged_elems_ = options.stage_keys && longest <= kTopkMaxStaged ? longest : 0;
  // Few rows leave SMs idle: bigger blocks then finish each row sooner.
  topk_threads_ = options.topk_threads != 0                     ? options.topk_threads
                  : rows < 2u * static_cast<std::uint32_t>(sms) ? kTopkThreadsLarge
                                                                : kTopkThreadsSmall;
  d_indptr_ = DeviceArray<std::uint32_t>(indptr_);
  d_out_indptr_ = DeviceArray<std::uint32_t>(out_indptr_);
  d_work_ = DeviceArray<ScoreWorkItem>(work_);
  scores_ = DeviceArray<float>(std::max<std::uint64_t>(total, 1));
  gate_q_ = shape.algorithm == SelectionAlgorithm::kSeer
                ? DeviceArray<std::uint16_t>(std::uint64_t{rows} * kSeerGateDim)
                : DeviceArray<std::uint16_t>();
}

void Selection::score(const SelectionArgs& args, CUstream_st* stream) const {
  if (indptr_.empty()) throw std::logic_error("selection: run() before plan()");
  const bool seer = shape_.algorithm == SelectionAlgorithm::kSeer;
  if (seer) {
    if (args.w_q == nullptr) throw std::invalid_argument("selection: Seer needs the gate's w_q");
    launch_gate_query(
        GateQueryParams{args.q, args.w_q, gate_q_.data(), shape_.rows(), shape_.group}, stream);
  }
  launch_selection_scores(
      ScoreParams{seer ? gate_q_.data() : args.q, args.summaries, d_indptr_.data(), scores_.data(),
                  d_work_.data(), static_cast<std::uint32_t>(work_.size()), grid_,
                  seer ? 1u : shape_.group,
                  shape_.algorithm == SelectionAlgorithm::kQuest ? 1u : 0u},
      stream);
  fence_.record(stream);
}

void Selection::select(const SelectionArgs& args, CUstream_st* stream) const {
  if (indptr_.empty()) throw std::logic_error("selection: run() before plan()");
  launch_selection_topk(TopkParams{scores_.data(), d_indptr_.data(), d_out_indptr_.data(),
                                   args.selected, shape_.rows(), staged_elems_, topk_threads_,
                                   shape_.algorithm == SelectionAlgorithm::kSeer ? 1u : 0u},
                        stream);
  fence_.record(stream);
}

void Selection::run(const SelectionArgs& args, CUstream_st* stream) const {
  score(args, stream);
  select(args, stream);
}

void SummaryBuilder::plan(SelectionAlgorithm algorithm, std::uint32_t page_tokens,
                          std::span<const SummaryJob> jobs) {
  fence_.wait();  // the last run may still read what this plan replaces
  if (static_cast<std::uint32_t>(algorithm) >
      static_cast<std::uint32_t>(SelectionAlgorithm::kRetroInfer)) {
    throw std::invalid_argument(
        fmt::format("summary build: unknown algorithm {}", static_cast<std::uint32_t>(algorithm)));
  }
  page_tokens_log2_ = log2_of_page_tokens(page_tokens, "summary build");
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].token_end <= jobs[i].token_begin) {
      throw std::invalid_argument(
          fmt::format("summary build: job {} has an empty token range "
                      "[{}, {})",
                      i, jobs[i].token_begin, jobs[i].token_end));
    }
  }
  if (jobs.size() > 0xFFFFFFFFull) throw std::invalid_argument("summary build: too many jobs");
  algorithm_ = algorithm;
  job_count_ = static_cast<std::uint32_t>(jobs.size());
  d_jobs_ = DeviceArray<SummaryJob>(jobs);
}

void SummaryBuilder::run(const SummaryBuildArgs& args, CUstream_st* stream) const {
  if (algorithm_ == SelectionAlgorithm::kSeer && args.w_k == nullptr)
    throw std::invalid_argument("summary build: Seer needs the gate's w_k");
  launch_summary_build(SummaryBuildParams{reinterpret_cast<const std::uint16_t*>(args.pages),
                                          args.slots, d_jobs_.data(), args.summaries, args.w_k,
                                          job_count_, page_tokens_log2_, algorithm_},
                       stream);
  fence_.record(stream);
}

std::vector<SummaryJob> partition_summary_jobs(std::span<const std::uint32_t> tokens,
                                               std::span<const std::uint32_t> list_begin,
                                               std::uint32_t partition_tokens,
                                               std::vector<std::uint32_t>& indptr) {
  if (tokens.size() != list_begin.size()) {
    throw std::invalid_argument(fmt::format("summary jobs: {} streams' tokens but {} list offsets",
                                            tokens.size(), list_begin.size()));
  }
  if (partition_tokens == 0) throw std::invalid_argument("summary jobs: partition_tokens is 0");
  std::vector<SummaryJob> jobs;
  indptr.assign(1, 0);
  std::uint64_t dst = 0;
  for (std::size_t s = 0; s < tokens.size(); ++s) {
    for (std::uint64_t b = 0; b < tokens[s]; b += partition_tokens) {
      const std::uint64_t e = std::min<std::uint64_t>(tokens[s], b + partition_tokens);
      if (dst >= 0xFFFFFFFFull) throw std::invalid_argument("summary jobs: too many partitions");
      jobs.push_back({list_begin[s], static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(e),
                      static_cast<std::uint32_t>(dst++)});
    }
    indptr.push_back(static_cast<std::uint32_t>(dst));
  }
  return jobs;
}

void ClusterPages::plan(std::span<const std::uint32_t> indptr,
                        std::span<const std::uint32_t> cluster_tokens, std::uint32_t page_tokens,
                        std::span<const std::uint32_t> selected_indptr) {
  fence_.wait();  // the last run may still read what this plan replaces
  if (indptr.empty()) throw std::invalid_argument("cluster pages: indptr is empty");
  const std::uint32_t rows = static_cast<std::uint32_t>(indptr.size() - 1);
  check_indptr(indptr, rows, "cluster pages");
  if (cluster_tokens.size() != std::uint64_t{indptr.back()} + rows) {
    throw std::invalid_argument(
        fmt::format("cluster pages: cluster_tokens needs {} entries (clusters + rows), got {}",
                    std::uint64_t{indptr.back()} + rows, cluster_tokens.size()));
  }
  if (selected_indptr.size() != rows + 1ull || selected_indptr[0] != 0) {
    throw std::invalid_argument(
        fmt::format("cluster pages: selected_indptr needs {} entries starting at 0", rows + 1));
  }
  page_tokens_log2_ = log2_of_page_tokens(page_tokens, "cluster pages");
  page_indptr_.assign(rows + 1, 0);
  std::uint64_t capacity = 0;
  for (std::uint32_t r = 0; r < rows; ++r) {
    const std::uint32_t* offsets = cluster_tokens.data() + indptr[r] + r;
    const std::uint32_t n = indptr[r + 1] - indptr[r];
    for (std::uint32_t c = 0; c < n; ++c) {
      if (offsets[c + 1] < offsets[c]) {
        throw std::invalid_argument(
            fmt::format("cluster pages: row {}: cluster {} ends before it starts ({} < {})", r, c,
                        offsets[c + 1], offsets[c]));
      }
    }
    const std::uint32_t k = selected_indptr[r + 1] - selected_indptr[r];
    if (selected_indptr[r + 1] < selected_indptr[r] || k > n) {
      throw std::invalid_argument(
          fmt::format("cluster pages: row {} selects {} of {} clusters", r, k, n));
    }
    // Every page the row's clusters can cover: [first page, last page].
    const std::uint64_t span =
        n == 0 || offsets[n] == offsets[0]
            ? 0
            : ((offsets[n] - 1) >> page_tokens_log2_) - (offsets[0] >> page_tokens_log2_) + 1;
    capacity += span;
    if (capacity > 0xFFFFFFFFull) throw std::invalid_argument("cluster pages: too many pages");
    page_indptr_[r + 1] = static_cast<std::uint32_t>(capacity);
  }
  rows_ = rows;
  d_indptr_ = DeviceArray<std::uint32_t>(indptr);
  d_out_indptr_ = DeviceArray<std::uint32_t>(selected_indptr);
  d_page_indptr_ = DeviceArray<std::uint32_t>(page_indptr_);
}

void ClusterPages::run(const ClusterPagesArgs& args, CUstream_st* stream) const {
  launch_cluster_pages(ClusterPagesParams{args.selected, d_out_indptr_.data(), d_indptr_.data(),
                                          args.cluster_tokens, d_page_indptr_.data(), args.pages,
                                          args.page_count, rows_, page_tokens_log2_},
                       stream);
  fence_.record(stream);
}

}  // namespace spin::exec
