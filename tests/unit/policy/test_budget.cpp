// Budgets (common/policy/budget.h): mandatory pages, admission, grow/shrink, the split to pools.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/policy/budget.h"

namespace spin::policy::test {

TEST_CASE("budget: mandatory pages per stream for the paper's algorithms", "[unit][policy]") {
  BudgetParams ratio;  // 1.56% of the context
  // ShadowKV: 8-token partitions = pages: 1.56% of 128K = 2045 tokens = 256 pages.
  CHECK(mandatory_pages_per_stream(ratio, PartitionGeometry{PartitionKind::kFixed, 8, 8}, 131072) ==
        256);
  // SeerAttention-R: 2048 tokens in 32-token blocks = pages.
  BudgetParams tokens;
  tokens.kind = BudgetKind::kTokens;
  tokens.tokens = 2048;
  CHECK(mandatory_pages_per_stream(tokens, PartitionGeometry{PartitionKind::kFixed, 32, 32},
                                   131072) == 64);
  // Token-level top-2048 over 8-token pages: up to one page per token.
  CHECK(mandatory_pages_per_stream(tokens, PartitionGeometry{PartitionKind::kFixed, 8, 1},
                                   131072) == 2048);
  // 16-token blocks over 8-token pages: two pages each.
  CHECK(mandatory_pages_per_stream(tokens, PartitionGeometry{PartitionKind::kFixed, 8, 16},
                                   131072) == 256);
  // 12-token blocks over 8-token pages start at page offsets 0 or 4: at most 2 pages each.
  CHECK(max_pages_per_partition(12, 8) == 2);
  CHECK(max_pages_per_partition(12, 16) == 2);  // offsets 0, 4, 8, 12: [12, 24) spans 2
  CHECK(max_pages_per_partition(7, 8) == 2);
  CHECK(max_pages_per_partition(1, 8) == 1);
  CHECK(max_pages_per_partition(32, 8) == 4);
  CHECK(mandatory_pages_per_stream(tokens, PartitionGeometry{PartitionKind::kFixed, 8, 12},
                                   131072) == 171 * 2);
  // RetroInfer: 1.8% (2360 tokens) in ~16-token clusters: 295 pages + 148 clusters × 1 headroom.
  BudgetParams retro;
  retro.ratio = 0.018;
  CHECK(mandatory_pages_per_stream(retro, PartitionGeometry{PartitionKind::kVariable, 8, 16},
                                   131072) == 295 + 148);
  // Never more than the stream's pages.
  CHECK(mandatory_pages_per_stream(tokens, PartitionGeometry{PartitionKind::kFixed, 8, 1}, 100) ==
        13);
  // The request: over every layer and KV head, plus the static region.
  const RequestFootprint f =
      request_footprint(ratio, PartitionGeometry{PartitionKind::kFixed, 8, 8},
                        StaticRegionParams{16, 64}, 40 * 8, 131072, 100);
  CHECK(f.mandatory_pages == 40 * 8 * 256);
  CHECK(f.static_pages == 40 * 8 * (2 + 8));
  CHECK(f.summary_pages == 100);
  CHECK(f.dynamic_pages == 40 * 8 * (16384 - (2 + 8)));
}

TEST_CASE("budget: a ratio's token count is the ceiling of the exact product", "[unit][policy]") {
  BudgetParams p;
  p.ratio = 0.07;  // 0.07 · 800 is 56.000000000000007 in doubles: 56 tokens, not 57
  CHECK(budget_tokens(p, 800) == 56);
  CHECK(budget_tokens(p, 801) == 57);  // 56.07
  p.ratio = 0.0156;
  CHECK(budget_tokens(p, 131072) == 2045);  // 2044.7
  // Every ratio of whole per-mille against every context up to 5000: ceil of the exact
  // product, computed in integers.
  for (std::uint32_t permille = 1; permille <= 1000; ++permille) {
    p.ratio = permille / 1000.0;
    for (std::uint32_t c = 1; c <= 5000; c += 7) {
      INFO(permille << " per mille of " << c);
      REQUIRE(budget_tokens(p, c) == (std::uint64_t{permille} * c + 999) / 1000);
    }
  }
}

TEST_CASE("budget: a cache never exceeds the pages outside the static region", "[unit][policy]") {
  // Token-level top-2048 at a 16K context: M = 2048 pages a stream, against 1024 pages of which
  // 2 are static (the unfinished page and the local window's). (1 + k)·M would be 5 × 2048.
  BudgetParams tokens;
  tokens.kind = BudgetKind::kTokens;
  tokens.tokens = 2048;
  const RequestFootprint f =
      request_footprint(tokens, PartitionGeometry{PartitionKind::kFixed, 16, 1},
                        StaticRegionParams{0, 16}, 4, 16384, 0);
  CHECK(f.mandatory_pages == 4 * 1024);  // M is capped at the stream's pages already
  CHECK(f.dynamic_pages == 4 * (1024 - f.static_pages / 4));
  CHECK(cache_pages(f, 4.0) == f.dynamic_pages);
  CHECK(cache_pages(f, 0.0) == f.dynamic_pages);
  CHECK(cache_pages(RequestFootprint{1000, 0, 0, 3000}, 4.0) == 3000);
  CHECK(cache_pages(RequestFootprint{1000, 0, 0, 3000}, 1.0) == 2000);
  // Admission and the pool's use count the capped cache: two such requests fit where uncapped
  // ones (2 × (2 × 4096 + static)) would not.
  BudgetParams params;  // k_min 1, k_max 5
  BudgetManager budget(params, 2 * (f.dynamic_pages + f.static_pages));
  CHECK(budget.admission_pages(f) == f.dynamic_pages + f.static_pages);
  budget.admit(1, f);
  budget.admit(2, f);
  budget.rebalance();
  CHECK(budget.cache_pages(1) == f.dynamic_pages);
  CHECK(budget.used_pages() == 2 * (f.dynamic_pages + f.static_pages));
  budget.check_invariants();
}

TEST_CASE("budget: admission needs (1 + k_min)·M plus static pages and summaries",
          "[unit][policy]") {
  BudgetParams params;  // k_min 1, k_max 5, watermark 5%
  BudgetManager budget(params, 10000);
  const RequestFootprint f{1000, 100, 50};
  CHECK(budget.admission_pages(f) == 2000 + 150);
  CHECK(budget.can_admit(f));
  budget.admit(1, f);
  CHECK(budget.buffer_ratio(1) == 1.0);
  CHECK(budget.cache_pages(1) == 2000);
  budget.admit(2, f);
  budget.admit(3, f);
  budget.admit(4, f);  // 4 × 2150 = 8600
  CHECK_FALSE(budget.can_admit(f));
  CHECK_THROWS_AS(budget.admit(5, f), InvariantError);
  budget.check_invariants();
}

TEST_CASE("budget: buffers grow toward k_max above the watermark and shrink for admission",
          "[unit][policy]") {
  BudgetParams params;
  params.k_min = 1;
  params.k_max = 5;
  params.watermark = 0.1;
  BudgetManager budget(params, 10000);
  budget.admit(1, RequestFootprint{1000, 0, 0});
  budget.rebalance();  // alone: k_max = 5 → 6000 pages, below the 9000 limit
  CHECK(budget.buffer_ratio(1) == 5.0);
  CHECK(budget.cache_pages(1) == 6000);
  budget.admit(2, RequestFootprint{1000, 0, 0});  // starts at k_min; 8000 used
  CHECK(budget.buffer_ratio(2) == 1.0);
  CHECK(budget.used_pages() == 8000);
  budget.rebalance();  // bottom-up: request 2 rises until 9000 are used (k ≈ 2)
  CHECK(budget.cache_pages(2) == 3000);
  CHECK(budget.buffer_ratio(2) == Approx(2.0).margin(1e-3));
  CHECK(budget.used_pages() == 9000);
  budget.check_invariants();
  // A third request needs 2000: top-down, the largest buffer (request 1) comes down first, to
  // k = 4, just enough; request 2 (k = 2) keeps its buffer.
  REQUIRE(budget.can_admit(RequestFootprint{1000, 0, 0}));
  budget.admit(3, RequestFootprint{1000, 0, 0});
  CHECK(budget.used_pages() <= 10000);
  CHECK(budget.cache_pages(1) == 5000);
  CHECK(budget.cache_pages(2) == 3000);
  CHECK(budget.buffer_ratio(3) == 1.0);
  budget.check_invariants();
  // Context growth raises M_r: request 1 shrinks to k = 3.6; when even k_min no longer fits,
  // update says so and every buffer is at k_min.
  CHECK(budget.update(3, RequestFootprint{1200, 0, 0}));
  CHECK(budget.cache_pages(1) == 4600);
  CHECK(budget.cache_pages(2) == 3000);
  CHECK_FALSE(budget.update(3, RequestFootprint{4000, 0, 0}));
  CHECK(budget.buffer_ratio(1) == 1.0);
  CHECK(budget.buffer_ratio(2) == 1.0);
  budget.check_invariants();
  budget.release(3);
  budget.rebalance();
  CHECK(budget.used_pages() <= 9000);
  CHECK(budget.buffer_ratio(1) > 1.0);
  budget.check_invariants();
}

TEST_CASE("budget: random admissions and releases keep the invariants", "[unit][policy]") {
  std::mt19937_64 rng(17);
  BudgetParams params;
  BudgetManager budget(params, 50000);
  std::vector<std::uint64_t> live;
  for (std::uint64_t id = 0; id < 300; ++id) {
    const RequestFootprint f{rng() % 3000 + 1, rng() % 200, rng() % 50};
    if (budget.can_admit(f)) {
      budget.admit(id, f);
      live.push_back(id);
    } else if (!live.empty()) {
      budget.release(live.front());
      live.erase(live.begin());
    }
    if (id % 3 == 0) budget.rebalance();
    budget.check_invariants();
    CHECK(budget.used_pages() <= 50000);
  }
}

// The water-filling rules of budget.h written plainly, with every sum taken over every request
// at every call: what BudgetManager's kept sums must reproduce decision for decision.
struct ReferenceBudget {
  BudgetParams params;
  std::uint64_t hbm = 0;
  std::map<std::uint64_t, std::pair<RequestFootprint, double>> entries;  // id → (footprint, k)

  std::uint64_t usage(double level, bool grow) const {
    std::uint64_t used = 0;
    for (const auto& [id, e] : entries) {
      const double k = grow ? std::max(e.second, level) : std::min(e.second, level);
      used += static_cast<std::uint64_t>(
                  std::floor((1 + k) * static_cast<double>(e.first.mandatory_pages))) +
              e.first.static_pages + e.first.summary_pages;
    }
    return used;
  }
  std::uint64_t admission(const RequestFootprint& f) const {
    return static_cast<std::uint64_t>(
               std::ceil((1 + params.k_min) * static_cast<double>(f.mandatory_pages))) +
           f.static_pages + f.summary_pages;
  }
  bool can_admit(const RequestFootprint& f) const {
    std::uint64_t needed = admission(f);
    for (const auto& [id, e] : entries) needed += admission(e.first);
    return needed <= hbm;
  }
  // The highest level in [k_min, k_max] whose usage is within `limit` (by the same bisection).
  double level(std::uint64_t limit, bool grow) const {
    double low = params.k_min, high = params.k_max;
    if (usage(high, grow) <= limit) return high;
    for (int i = 0; i < 64; ++i) {
      const double mid = 0.5 * (low + high);
      (usage(mid, grow) <= limit ? low : high) = mid;
    }
    return low;
  }
  void shrink() {
    const double l = level(hbm, false);
    for (auto& [id, e] : entries) e.second = std::min(e.second, l);
  }
  void rebalance() {
    const auto limit =
        static_cast<std::uint64_t>(std::floor((1.0 - params.watermark) * static_cast<double>(hbm)));
    if (usage(params.k_min, true) > limit) return;
    const double l = level(limit, true);
    for (auto& [id, e] : entries) e.second = std::max(e.second, l);
  }
};

TEST_CASE("budget: kept sums decide as sums over every request would", "[unit][policy]") {
  for (const std::uint64_t seed : {3u, 29u, 71u}) {
    std::mt19937_64 rng(seed);
    BudgetParams params;
    params.k_min = 0.5 + static_cast<double>(seed % 3) * 0.5;
    params.k_max = params.k_min + 3.5;
    const std::uint64_t hbm = 60000;
    BudgetManager budget(params, hbm);
    ReferenceBudget reference{params, hbm, {}};
    std::vector<std::uint64_t> live;
    std::uint64_t next_id = 0;
    int all_at_k_max = 0, some_between = 0;  // states seen after a rebalance
    const auto footprint = [&] { return RequestFootprint{rng() % 4000, rng() % 300, rng() % 60}; };
    for (int op = 0; op < 3000; ++op) {
      // Phases of 250 operations that fill the pool, then drain it, so that the buffers both
      // shrink under pressure and grow back to k_max.
      const bool filling = op / 250 % 2 == 0;
      const std::uint64_t kind = rng() % 10;
      if (kind < (filling ? 4u : 1u)) {  // an arrival
        const RequestFootprint f = footprint();
        REQUIRE(budget.can_admit(f) == reference.can_admit(f));
        if (budget.can_admit(f)) {
          budget.admit(next_id, f);
          reference.entries[next_id] = {f, params.k_min};
          reference.shrink();
          live.push_back(next_id);
        }
        ++next_id;
      } else if (kind < (filling ? 9u : 6u) && !live.empty()) {  // growth (rarely a shrink)
        const std::uint64_t id = live[rng() % live.size()];
        RequestFootprint f = reference.entries[id].first;
        f.mandatory_pages = rng() % 8 == 0 ? rng() % 4000 : f.mandatory_pages + rng() % 200;
        const bool fits = budget.update(id, f);
        reference.entries[id].first = f;
        reference.shrink();
        REQUIRE(fits == (reference.usage(params.k_max, false) <= hbm));
        if (!fits) {  // the scheduler would preempt: the newest request goes
          budget.release(live.back());
          reference.entries.erase(live.back());
          live.pop_back();
        }
      } else if (!live.empty()) {  // a finish
        const std::size_t at = rng() % live.size();
        budget.release(live[at]);
        reference.entries.erase(live[at]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
      }
      budget.rebalance();
      reference.rebalance();
      budget.check_invariants();
      REQUIRE(budget.used_pages() == reference.usage(params.k_max, false));
      bool top = !live.empty(), between = false;
      for (const std::uint64_t id : live) {
        const double k = budget.buffer_ratio(id);
        REQUIRE(k == reference.entries[id].second);
        top = top && k == params.k_max;
        between = between || (k > params.k_min && k < params.k_max);
      }
      all_at_k_max += top ? 1 : 0;
      some_between += between ? 1 : 0;
    }
    CHECK(next_id > 500);
    CHECK(all_at_k_max > 100);
    CHECK(some_between > 100);
  }
}

TEST_CASE("budget: split_pages divides in proportion and sums to the total", "[unit][policy]") {
  CHECK(split_pages(10, {1, 1, 1}) == std::vector<std::uint64_t>{3, 3, 4});
  CHECK(split_pages(12, {1, 2, 1}) == std::vector<std::uint64_t>{3, 6, 3});
  CHECK(split_pages(0, {5, 5}) == std::vector<std::uint64_t>{0, 0});
  std::uint64_t sum = 0;
  for (const std::uint64_t part : split_pages(1000003, {7, 3, 11, 1})) sum += part;
  CHECK(sum == 1000003);
  CHECK_THROWS_AS(split_pages(5, {0, 0}), InvariantError);
}

TEST_CASE("budget: invalid parameters are input errors", "[unit][policy]") {
  BudgetParams p;
  p.ratio = 0;
  CHECK_THROWS_AS(validate(p), InputError);
  p = BudgetParams{};
  p.k_min = 3;
  p.k_max = 2;
  CHECK_THROWS_AS(validate(p), InputError);
  p = BudgetParams{};
  p.watermark = 1.5;
  CHECK_THROWS_AS(validate(p), InputError);
  // A watermark of 1 (the config key's bound) is valid: buffers stay at k_min.
  p.watermark = 1.0;
  CHECK_NOTHROW(validate(p));
  BudgetManager budget(p, 10000);
  budget.admit(1, RequestFootprint{1000, 0, 0});
  budget.rebalance();
  CHECK(budget.buffer_ratio(1) == p.k_min);
}

}  // namespace spin::policy::test
