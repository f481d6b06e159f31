// The cooperative formulation of the residency rule (common/policy/residency_coop.h), its phases
// run range after range on the CPU, against pool_step (residency.h) on a twin pool: the same
// decisions, slot arrays, resident count and page-table mapping after every step, on random
// selections (hot sets, empty selections, selections over capacity), random numbers of ranges
// (1 to more than the slots), capacity changes, step gaps, tiny segments and every policy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "common/policy/policy_registry.h"
#include "common/policy/residency.h"
#include "common/policy/residency_coop.h"

namespace spin::policy::test {
namespace {

// One pool's host storage: slots, two-level page table, its own segment pool.
struct PoolStore {
  std::vector<PageKey> slot_key;
  std::vector<std::uint32_t> last_use;
  std::vector<std::uint32_t> aux;
  std::vector<std::uint32_t> directory;
  std::vector<std::int32_t> entries;
  std::vector<std::uint32_t> used;
  std::vector<std::uint32_t> free_stack;
  PoolView view{};
  SegmentPoolView segments{};

  PoolStore(std::uint32_t max_extent, std::uint32_t capacity, std::uint32_t streams,
            std::uint32_t dir_entries, std::uint32_t seg_log2, bool uses_aux) {
    const std::uint32_t seg_count = std::min(streams * dir_entries, max_extent) + max_extent;
    slot_key.assign(max_extent, kNoPage);
    last_use.assign(max_extent, kEmptyStamp);
    aux.assign(max_extent, 0);
    directory.assign(std::size_t{streams} * dir_entries, kNoSegment);
    entries.assign(std::size_t{seg_count} << seg_log2, kAbsentSlot);
    used.assign(seg_count, 0);
    free_stack.resize(seg_count);
    for (std::uint32_t i = 0; i < seg_count; ++i) free_stack[i] = seg_count - 1 - i;
    view.extent = capacity;
    view.capacity = capacity;
    view.resident = 0;
    view.slot_key = slot_key.data();
    view.slot_last_use = last_use.data();
    view.slot_aux = uses_aux ? aux.data() : nullptr;
    view.table = DirectoryView{directory.data(), streams, dir_entries, nullptr, nullptr, 0};
    segments = SegmentPoolView{entries.data(), used.data(), free_stack.data(),
                               seg_count,      seg_count,   seg_log2};
  }
  void set_capacity(std::uint32_t capacity) {
    view.capacity = capacity;
    view.extent = std::max(view.extent, capacity);
  }
};

// A step's output buffers.
struct Outputs {
  std::vector<std::int32_t> slot_of, victim_slot;
  std::vector<std::uint32_t> fetch_index, bypass_index;
  std::vector<PageKey> victim_key;
  StepOutput out{};
  Outputs(std::size_t n, std::size_t extent)
      : slot_of(n + 1, 12345),
        victim_slot(extent + 1, 12345),
        fetch_index(n + 1, 12345),
        bypass_index(n + 1, 12345),
        victim_key(extent + 1, 12345) {
    out = StepOutput{slot_of.data(),
                     fetch_index.data(),
                     bypass_index.data(),
                     victim_slot.data(),
                     victim_key.data(),
                     0,
                     0,
                     0,
                     0};
  }
};

template <class T>
std::vector<T> head(const std::vector<T>& v, std::uint32_t n) {
  return std::vector<T>(v.begin(), v.begin() + n);
}

struct Case {
  std::string name;
  PolicyParams policy;
  std::uint32_t streams;
  std::uint32_t pages;     // per stream
  std::uint32_t seg_log2;  // segment pages = 2^seg_log2
  std::uint32_t max_extent;
  std::uint32_t hot;         // hot-set size per stream
  std::uint32_t max_select;  // per stream per step
};

void run_case(const Case& c, std::uint64_t seed, std::uint32_t steps) {
  INFO("case " << c.name << " seed " << seed);
  std::mt19937_64 rng(seed);
  const std::uint32_t dir_entries = ((c.pages - 1) >> c.seg_log2) + 1;
  const bool aux = policy_uses_aux(c.policy.kind);
  std::uint32_t capacity =
      c.max_extent / 2 + static_cast<std::uint32_t>(rng() % (c.max_extent / 2 + 1));
  PoolStore a(c.max_extent, capacity, c.streams, dir_entries, c.seg_log2, aux);
  PoolStore b(c.max_extent, capacity, c.streams, dir_entries, c.seg_log2, aux);
  std::vector<std::vector<std::uint32_t>> hot(c.streams);
  for (auto& h : hot) {
    for (std::uint32_t j = 0; j < c.hot; ++j)
      h.push_back(static_cast<std::uint32_t>(rng() % c.pages));
  }
  std::uint32_t histogram_a[kHistogramBins], histogram_b[kHistogramBins];
  std::uint32_t now = 1;
  std::uint64_t victims = 0, bypassed = 0, hits = 0;
  for (std::uint32_t step = 0; step < steps; ++step) {
    INFO("step " << step);
    if (rng() % 7 == 0) {  // capacity changes, down to 0
      capacity = static_cast<std::uint32_t>(rng() % (c.max_extent + 1));
      a.set_capacity(capacity);
      b.set_capacity(capacity);
    }
    for (auto& h : hot) {
      for (auto& p : h) {
        if (rng() % 8 == 0) p = static_cast<std::uint32_t>(rng() % c.pages);
      }
    }
    // Selection: ascending distinct keys; sometimes empty, sometimes huge (bypass).
    std::vector<PageKey> keys;
    const std::uint32_t mode = static_cast<std::uint32_t>(rng() % 10);
    for (std::uint32_t s = 0; s < c.streams; ++s) {
      std::vector<std::uint32_t> pages;
      const std::uint32_t count = mode == 0 ? 0
                                  : mode == 1
                                      ? c.pages
                                      : static_cast<std::uint32_t>(rng() % (c.max_select + 1));
      for (std::uint32_t j = 0; j < count; ++j) {
        pages.push_back(mode == 1        ? j
                        : rng() % 4 != 0 ? hot[s][rng() % hot[s].size()]
                                         : static_cast<std::uint32_t>(rng() % c.pages));
      }
      std::sort(pages.begin(), pages.end());
      pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
      for (const std::uint32_t p : pages) keys.push_back(make_page_key(s, p));
    }
    const std::uint32_t n = static_cast<std::uint32_t>(keys.size());
    std::vector<std::uint32_t> next_use(n);
    for (auto& u : next_use)
      u = rng() % 3 == 0 ? kNeverUsed : now + 1 + static_cast<std::uint32_t>(rng() % 50);
    const StepInput in{keys.data(), next_use.data(), n, now};
    Outputs oa(n, c.max_extent), ob(n, c.max_extent);
    // 1 range, a few, about one per slot, or more ranges than slots and keys.
    const std::uint32_t choice = static_cast<std::uint32_t>(rng() % 4);
    const std::uint32_t ranges = choice == 0   ? 1
                                 : choice == 1 ? 2 + static_cast<std::uint32_t>(rng() % 7)
                                 : choice == 2 ? std::max<std::uint32_t>(1, a.view.extent / 3)
                                               : a.view.extent + n + 5;
    INFO("ranges " << ranges << " n " << n << " capacity " << capacity);
    std::vector<std::uint32_t> offsets(ranges);
    std::vector<TargetCounts> counts(ranges);
    const StepStatus sa = pool_step(a.view, c.policy, a.segments, in, histogram_a, oa.out);
    const StepStatus sb = coop_pool_step(b.view, c.policy, b.segments, in, histogram_b, ob.out,
                                         ranges, offsets.data(), counts.data());
    REQUIRE(sa == sb);
    REQUIRE(sa == StepStatus::kOk);
    REQUIRE(oa.out.hits == ob.out.hits);
    REQUIRE(oa.out.fetches == ob.out.fetches);
    REQUIRE(oa.out.bypassed == ob.out.bypassed);
    REQUIRE(oa.out.victims == ob.out.victims);
    REQUIRE(head(oa.slot_of, n) == head(ob.slot_of, n));
    REQUIRE(head(oa.fetch_index, oa.out.fetches) == head(ob.fetch_index, ob.out.fetches));
    REQUIRE(head(oa.bypass_index, oa.out.bypassed) == head(ob.bypass_index, ob.out.bypassed));
    REQUIRE(head(oa.victim_slot, oa.out.victims) == head(ob.victim_slot, ob.out.victims));
    REQUIRE(head(oa.victim_key, oa.out.victims) == head(ob.victim_key, ob.out.victims));
    REQUIRE(a.view.resident == b.view.resident);
    REQUIRE(a.slot_key == b.slot_key);
    REQUIRE(a.last_use == b.last_use);
    if (aux) REQUIRE(a.aux == b.aux);
    REQUIRE(a.segments.free_count == b.segments.free_count);
    // The page table maps the same keys to the same slots; one range at a time, the very same
    // segments.
    for (std::uint32_t s = 0; s < c.streams; ++s) {
      for (std::uint32_t p = 0; p < c.pages; ++p) {
        const PageKey key = make_page_key(s, p);
        REQUIRE(page_table_lookup(a.view.table, a.segments, key) ==
                page_table_lookup(b.view.table, b.segments, key));
      }
    }
    if (ranges == 1) {
      REQUIRE(a.directory == b.directory);
      REQUIRE(head(a.free_stack, a.segments.free_count) ==
              head(b.free_stack, b.segments.free_count));
    }
    // Used counts agree with the entries (the parallel counts are exact).
    for (std::uint32_t h = 0; h < b.segments.capacity; ++h) {
      std::uint32_t mapped = 0;
      for (std::uint32_t e = 0; e < (1u << c.seg_log2); ++e) {
        mapped += b.entries[(std::size_t{h} << c.seg_log2) + e] != kAbsentSlot;
      }
      if (std::find(b.directory.begin(), b.directory.end(), h) != b.directory.end()) {
        REQUIRE(b.used[h] == mapped);
        REQUIRE(mapped > 0);
      } else {
        REQUIRE(mapped == 0);
      }
    }
    victims += oa.out.victims;
    bypassed += oa.out.bypassed;
    hits += oa.out.hits;
    now += 1 + static_cast<std::uint32_t>(rng() % 4);  // gaps: ages cross bucket widths
  }
  CHECK(victims > 0);
  CHECK(bypassed > 0);
  CHECK(hits > 0);
}

}  // namespace

TEST_CASE(
    "residency_coop: the cooperative phases make pool_step's decisions, any ranges, every policy",
    "[unit][policy]") {
  const PolicyParams policies[] = {
      {PolicyKind::kBucketedLru, 64, 0},  {PolicyKind::kBucketedLru, 4, 0},
      {PolicyKind::kBucketedLru, 1, 0},   {PolicyKind::kBucketedLru, 8, 1},
      {PolicyKind::kBucketedLru, 256, 0}, {PolicyKind::kExactLru, 0, 0},
      {PolicyKind::kFifo, 0, 0},          {PolicyKind::kPreviousStep, 0, 0},
      {PolicyKind::kBelady, 0, 0}};
  // Every registered policy is in the list (a new one must be added above).
  for (const PolicyInfo& info : policy_registry().list()) {
    const PolicyKind kind = policy_registry().make(info.name).kind;
    INFO(info.name);
    CHECK(std::ranges::any_of(policies, [&](const PolicyParams& p) { return p.kind == kind; }));
  }
  std::uint64_t seed = 11;
  for (const PolicyParams& pol : policies) {
    const std::string p = std::to_string(static_cast<int>(pol.kind)) +
                          " B=" + std::to_string(pol.buckets) +
                          " shift=" + std::to_string(pol.bucket_shift);
    // Small pools with many ties; many tiny segments; a larger pool with several streams.
    run_case({"small " + p, pol, 2, 40, 2, 24, 10, 12}, seed++, 120);
    run_case({"segments of 1 page " + p, pol, 3, 64, 0, 48, 16, 20}, seed++, 80);
    run_case({"wide " + p, pol, 8, 300, 4, 600, 60, 90}, seed++, 40);
  }
}

namespace {

// FIFO whose min_victim_age claims every victim is at least 1000 steps old: a contract breach
// that skips every block of pool_step's victim pass (the cooperative phases do not skip blocks).
struct OverAgedFifo : Fifo {
  static std::uint32_t min_victim_age(const PolicyParams&, std::uint32_t, std::uint64_t) {
    return 1000;
  }
};

// FIFO whose on_access pins every resident page (sets its last use to now): a contract breach
// (on_access may change only its own slot's aux) that leaves no slot to evict after a hit.
struct PinningFifo : Fifo {
  static void on_access(PoolView& pool, std::uint32_t slot, std::uint32_t index,
                        std::uint32_t next_use, bool inserted, std::uint32_t now) {
    Fifo::on_access(pool, slot, index, next_use, inserted, now);
    for (std::uint32_t s = 0; s < pool.extent; ++s) {
      if (pool.slot_key[s] != kNoPage) pool.slot_last_use[s] = now;
    }
  }
};

// Fills a pool of 8 slots, then selects one of its pages and 3 new ones (3 victims needed),
// through pool_step or, with `coop`, the cooperative phases in 3 ranges.
template <class Policy>
StepStatus fill_then_overflow(bool coop, std::uint32_t* victims) {
  PoolStore store(8, 8, 1, 4, 2, true);
  std::vector<std::uint32_t> histogram(kHistogramBins);
  std::vector<std::uint32_t> offsets(3);
  std::vector<TargetCounts> counts(3);
  const PolicyParams params{PolicyKind::kFifo, 0, 0};
  const auto step = [&](const std::vector<PageKey>& keys, std::uint32_t now, Outputs& o) {
    const StepInput in{keys.data(), nullptr, static_cast<std::uint32_t>(keys.size()), now};
    return coop ? coop_pool_step_with<Policy>(store.view, params, store.segments, in,
                                              histogram.data(), o.out, 3, offsets.data(),
                                              counts.data())
                : pool_step_with<Policy>(store.view, params, store.segments, in, histogram.data(),
                                         o.out);
  };
  std::vector<PageKey> keys;
  for (std::uint32_t p = 0; p < 8; ++p) keys.push_back(make_page_key(0, p));
  Outputs first(keys.size(), 8);
  REQUIRE(step(keys, 1, first) == StepStatus::kOk);
  keys = {make_page_key(0, 0), make_page_key(0, 8), make_page_key(0, 9), make_page_key(0, 10)};
  Outputs second(keys.size(), 8);
  const StepStatus status = step(keys, 2, second);
  *victims = second.out.victims;
  return status;
}

}  // namespace

TEST_CASE("residency: a policy that finds too few victims is a status, not a fetch without a slot",
          "[unit][policy]") {
  for (const bool coop : {false, true}) {
    INFO((coop ? "cooperative phases" : "pool_step"));
    std::uint32_t victims = 0;
    CHECK(fill_then_overflow<Fifo>(coop, &victims) == StepStatus::kOk);
    CHECK(victims == 3);
    CHECK(fill_then_overflow<PinningFifo>(coop, &victims) == StepStatus::kTooFewVictims);
  }
  std::uint32_t victims = 0;
  CHECK(fill_then_overflow<OverAgedFifo>(false, &victims) == StepStatus::kTooFewVictims);
  CHECK(victims == 0);
}

}  // namespace spin::policy::test
