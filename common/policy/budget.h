// Locality-aware per-request HBM budgets (DESIGN.md §4.3).
//
// Terms
// - M_r, mandatory pages: the pages one step of request r may select, over all layers and KV
//   heads: per stream, the retrieval budget (a share of the context or a fixed token count) in
//   pages, the worst case of the partition geometry, plus headroom for variable clusters.
// - Buffer ratio k: the request's cache holds floor((1 + k)·M_r) pages (mandatory + k·M_r
//   buffering pages).
// - Admission needs ceil((1 + k_min)·M_r) pages plus the static region and the GPU-resident
//   summaries.
//
// BudgetManager keeps every admitted request's k in [k_min, k_max] and the sum of footprints
// within the HBM page pool:
// - admit/update shrink buffers top-down (water-filling: the largest k's come down to a common
//   level first, never below k_min) when the new footprint needs room;
// - rebalance grows buffers bottom-up (the smallest k's rise to a common level first, never above
//   k_max) while the pool stays at least `watermark` free.
// All functions are pure or deterministic; time and memory are injected, never read.
//
// Complexity: footprint functions O(1). BudgetManager keeps the pages in use, at k_max and at
// admission summed over its requests, so that can_admit, used_pages and the checks that settle
// most calls (everything fits; every buffer is at k_max already) take O(1) or O(log R); a call
// that moves buffers takes O(R), and O(R·64) when it must find the water level by bisection.
#pragma once

#include <cstdint>
#include <limits>
#include <map>

#include "common/policy/partition.h"

namespace spin::policy {

enum class BudgetKind { kRatio, kTokens };

struct BudgetParams {
  BudgetKind kind = BudgetKind::kRatio;  // how the retrieval budget is given
  double ratio = 0.0156;                 // kRatio: selected tokens per step / context tokens
  std::uint32_t tokens = 2048;           // kTokens: selected tokens per step
  double cluster_headroom_pages = 1.0;   // variable clusters: extra pages per selected cluster
  double k_min = 1.0;                    // buffer ratio kept under memory pressure
  double k_max = 5.0;                    // buffer ratio ceiling (hit ratio saturates near 4–5×)
  double watermark = 0.05;               // share of the HBM page pool buffers leave free
};

// Throws InputError naming the bad field.
void validate(const BudgetParams& params);

// Tokens selected per step and stream: ceil(ratio·context) or `tokens`, at most the context.
std::uint32_t budget_tokens(const BudgetParams& params, std::uint32_t context_tokens);

// Pages one stream may select in one step: K = ceil(budget / g) partitions; fixed partitions
// K × max_pages_per_partition(g, page_tokens); variable clusters (g = mean cluster tokens)
// ceil(budget / page_tokens) + ceil(cluster_headroom_pages × K); at most the stream's pages.
// A selection above it is still served (by bypass), so this is a sizing rule, not a limit: for
// variable clusters a step's clusters may hold more than the budget (docs/policy.md §6).
std::uint32_t mandatory_pages_per_stream(const BudgetParams& params,
                                         const PartitionGeometry& geometry,
                                         std::uint32_t context_tokens);

struct RequestFootprint {
  std::uint64_t mandatory_pages = 0;  // M_r, over all layers and KV heads
  std::uint64_t static_pages = 0;     // static region, over all streams
  std::uint64_t summary_pages = 0;    // GPU-resident summaries, in page units
  // Pages outside the static region, over all streams: the most its caches can ever hold.
  std::uint64_t dynamic_pages = std::numeric_limits<std::uint64_t>::max();
};

// The footprint of a request with `streams` = layers × KV heads at `context_tokens`.
RequestFootprint request_footprint(const BudgetParams& params, const PartitionGeometry& geometry,
                                   const StaticRegionParams& static_region, std::uint64_t streams,
                                   std::uint32_t context_tokens, std::uint64_t summary_pages);

// floor((1 + k)·M_r), at most the dynamic pages: the request's cache pages at buffer ratio k (a
// larger cache would hold nothing more, and would only keep HBM from other requests).
std::uint64_t cache_pages(const RequestFootprint& footprint, double k);

class BudgetManager {
 public:
  // hbm_pages: pages of HBM available to KV caches, static regions and summaries.
  BudgetManager(const BudgetParams& params, std::uint64_t hbm_pages);

  // ceil((1 + k_min)·M_r) + static + summaries.
  std::uint64_t admission_pages(const RequestFootprint& footprint) const;
  // Whether the request fits with every request, itself included, at k_min.
  bool can_admit(const RequestFootprint& footprint) const;
  // Admits at k_min, shrinking others as needed. Throws InvariantError if !can_admit or the id
  // is taken.
  void admit(std::uint64_t id, const RequestFootprint& footprint);
  // The request's footprint changed (M_r is recomputed when its context grows past a page).
  // Shrinks buffers as needed; returns false if the requests no longer fit even at k_min (the
  // scheduler must preempt), in which case every k is k_min.
  bool update(std::uint64_t id, const RequestFootprint& footprint);
  void release(std::uint64_t id);
  // Grows buffers toward k_max while at least `watermark` of the pool stays free.
  void rebalance();

  double buffer_ratio(std::uint64_t id) const;
  const RequestFootprint& footprint(std::uint64_t id) const;
  std::uint64_t cache_pages(std::uint64_t id) const;
  std::uint64_t used_pages() const;
  std::uint64_t hbm_pages() const { return hbm_pages_; }
  // k_min ≤ k ≤ k_max for every request; used ≤ hbm unless update reported false.
  void check_invariants() const;

 private:
  struct Entry {
    RequestFootprint footprint;
    double k;
  };
  // Pages summed over the entries (at each one's k, at k_max, at admission), and how many of
  // them have k below k_max.
  struct Sums {
    std::uint64_t used = 0, at_k_max = 0, admission = 0;
    std::size_t below_k_max = 0;  // entries whose k is below k_max
    Sums& operator+=(const Sums& o);
    Sums& operator-=(const Sums& o);
    bool operator==(const Sums&) const = default;
  };
  std::uint64_t pages(const Entry& e, double k) const;
  Sums share(const Entry& e) const;  // the entry's part of the sums
  void set_k(Entry& e, double k);
  std::uint64_t usage(double level, bool grow) const;
  void shrink_to_fit();
  const Entry& entry(std::uint64_t id) const;

  BudgetParams params_;
  std::uint64_t hbm_pages_;
  std::map<std::uint64_t, Entry> entries_;  // by id: deterministic iteration
  Sums sums_;
};

// Splits `total` pages among parts in proportion to `weights` (cumulative floors: the parts sum
// to `total`, each within one page of its exact share). Used to divide a request's cache pages
// among its pools by their streams.
std::vector<std::uint64_t> split_pages(std::uint64_t total,
                                       const std::vector<std::uint64_t>& weights);

}  // namespace spin::policy
