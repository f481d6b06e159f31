// Trace statistics: locality and cache behaviour of a trace or a generator (`spin trace stats`,
// docs/trace-generators.md, "Statistics").
//
// Per layer and over all layers:
// - selection sizes in partitions per stream step (mean, p50, p99, max);
// - step-to-step overlap Σ|S_t ∩ S_{t-1}| / Σ|S_t| over steps t >= 1 of every stream;
// - in_union(w): the share of S_t inside the union of the w previous steps, Σ over t >= w;
// - working_set(w): mean |S_{t-w+1} ∪ ... ∪ S_t| in partitions, over t >= w - 1;
//   (a window longer than every stream has no data: null in to_json, `-` in to_text)
// - reuse distances in steps (t minus the last step the stream selected the partition), log2
//   buckets [1], [2, 3], [4, 7], ..., plus first uses;
// - the exact-LRU hit ratio at capacities m · (mean pages per step) of each pool, in one pass.
//
// The LRU definition is the policy core's (DESIGN.md §4.2 with B = ∞): the unit is the page;
// selections map to distinct pages with policy::map_selection_pages, and pages in the static
// region (policy::make_static_region) are not cache accesses; the pool is one (request, layer)
// holding all KV heads, keyed by (head, page). Each step's accesses are measured against the LRU
// stack as it was at the end of the previous step; then the step's keys are pushed on top in
// ascending key order (head-major). A key's stack distance is the number of distinct keys used
// more recently (0 = most recent); at capacity C (C >= the pool's largest step) an access hits iff
// its distance < C. C_m = ceil(m · accesses / steps) of the pool.
//
// Complexity: O(1) per selected partition plus O(log T) per page access (a Fenwick tree over
// access times T, renumbered when full, so T <= 2 · keys + 4096); memory per pool O(keys + steps
// + partitions · heads), with at most kMaxPoolEntries (head, page) keys and (head, partition)
// entries per pool (a longer context is an InputError: 2^28 are 8 KV heads at 268 M tokens of
// 8-token pages). One pool is analysed at a time; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "common/trace/trace.h"

namespace spin::stats {

inline constexpr uint64_t kMaxPoolEntries = uint64_t{1} << 28;

struct StatsOptions {
  std::vector<double> capacity_multiples = {1, 1.5, 2, 3, 4, 5, 8};
  std::vector<uint32_t> windows = {1, 2, 4, 8, 12, 16};
};

// Counters of one layer or of all layers; derived values are methods.
struct GroupStats {
  uint64_t stream_steps = 0;
  uint64_t selected = 0;               // partitions over all stream steps
  std::vector<uint64_t> size_counts;   // [size] stream steps that selected `size` partitions
  std::vector<uint64_t> union_inside;  // [window] selected partitions inside the union ...
  std::vector<uint64_t> union_total;   // [window] ... out of these
  std::vector<uint64_t> ws_sum;        // [window] working-set sizes summed over stream steps
  std::vector<uint64_t> ws_steps;      // [window]
  std::vector<uint64_t> reuse;         // [b] reuse distances in [2^b, 2^(b+1)) steps
  uint64_t first_uses = 0;
  uint64_t pools = 0;
  uint64_t pool_steps = 0;
  uint64_t page_accesses = 0;            // cacheable pages selected, over pool steps
  uint64_t static_accesses = 0;          // static-region pages selected (not cache accesses)
  std::vector<uint64_t> hits;            // [multiple]
  std::vector<uint64_t> capacity_pages;  // [multiple] summed over pools

  double mean_selection() const;
  uint32_t size_quantile(double q) const;  // smallest size s with P(size <= s) >= q
  double overlap() const { return in_union(0); }
  double in_union(size_t window_index) const;
  double working_set(size_t window_index) const;
  double hit_ratio(size_t multiple_index) const;
  double misses_per_step(size_t multiple_index) const;
  double mean_step_pages() const;
  void merge(const GroupStats& other);
};

class StatsCollector {
 public:
  // `header` must be valid; options.windows must start with 1 (the overlap).
  StatsCollector(const trace::TraceHeader& header, StatsOptions options = {});
  ~StatsCollector();

  // Analyses one pool: every KV head of (request, layer) read from `stream`, a
  // trace::StepStream or trace::LayerCursor opened for all heads.
  template <class Stream>
  void add_layer(const trace::RequestInfo& request, uint32_t layer, Stream& stream) {
    begin_pool(request, layer);
    const uint32_t heads = header_.model.kv_heads;
    while (stream.next()) {
      for (uint32_t h = 0; h < heads; ++h) {
        add_selection(stream.step(), h, stream.selection(h), stream.partition_offsets(h));
      }
      end_step(stream.step());
    }
    end_pool();
  }

  const StatsOptions& options() const { return options_; }
  const std::vector<GroupStats>& layers() const { return layers_; }
  GroupStats overall() const;

  // The statistics as JSON: {"options", "overall", "layers": [...]}.
  nlohmann::json to_json() const;
  // Three text tables (selections, exact LRU, reuse distances): per layer and "all".
  std::string to_text() const;

 private:
  struct Pool;
  void begin_pool(const trace::RequestInfo& request, uint32_t layer);
  void add_selection(uint32_t step, uint32_t head, std::span<const uint32_t> ids,
                     std::span<const uint32_t> offsets);
  void end_step(uint32_t step);
  void end_pool();

  trace::TraceHeader header_;
  StatsOptions options_;
  std::vector<GroupStats> layers_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace spin::stats
