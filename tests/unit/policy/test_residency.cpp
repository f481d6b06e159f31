// The residency rule and its replacement policies (common/policy/residency.h) driven through the
// Engine, against the independent reference models of reference.h.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "common/error.h"
#include "common/policy/engine.h"
#include "common/policy/policy_registry.h"
#include "common/policy/residency.h"
#include "tests/unit/policy/reference.h"

namespace spin::policy::test {
namespace {

// The policy interface as a concept (residency.h): every built-in policy meets it, and a struct
// that lacks a member, or gives one the wrong type, does not (compile-time checks).
namespace interface_check {
using spin::policy::PolicyParams;
using spin::policy::PoolView;
struct NoOrderOfLastUse {
  static constexpr bool kUsesAux = false;
  static constexpr bool kEvictsAllUnpinned = true;
  static void on_access(PoolView&, std::uint32_t, std::uint32_t, std::uint32_t, bool,
                        std::uint32_t) {}
};
struct WideOrderBits {
  static constexpr bool kUsesAux = false;
  static constexpr bool kEvictsAllUnpinned = false;
  static constexpr bool kOrderOfLastUse = false;
  static constexpr bool kTryOldestFirst = false;
  static constexpr bool kSkipCommonDigits = false;
  static void on_access(PoolView&, std::uint32_t, std::uint32_t, std::uint32_t, bool,
                        std::uint32_t) {}
  static std::uint64_t order(const PoolView&, const PolicyParams&, std::uint32_t, std::uint32_t) {
    return 0;
  }
  static std::uint64_t order_bits(const PolicyParams&) { return 64; }  // must be uint32_t
  static std::uint32_t min_victim_age(const PolicyParams&, std::uint32_t, std::uint64_t) {
    return 0;
  }
};
static_assert(spin::policy::ResidencyPolicy<spin::policy::BucketedLru> &&
              spin::policy::ResidencyPolicy<spin::policy::ExactLru> &&
              spin::policy::ResidencyPolicy<spin::policy::Fifo> &&
              spin::policy::ResidencyPolicy<spin::policy::PreviousStep> &&
              spin::policy::ResidencyPolicy<spin::policy::Belady>);
static_assert(!spin::policy::ResidencyPolicy<NoOrderOfLastUse>);
static_assert(!spin::policy::ResidencyPolicy<WideOrderBits>);
}  // namespace interface_check

using Sequence = std::vector<std::vector<std::uint32_t>>;  // [step] → pages of one stream

RefDecision to_ref(const PoolDecisions& d) {
  RefDecision r;
  std::set<std::uint32_t> fetched(d.fetch_index.begin(), d.fetch_index.end());
  for (std::size_t i = 0; i < d.keys.size(); ++i) {
    if (d.slot_of[i] >= 0 && !fetched.count(static_cast<std::uint32_t>(i))) {
      r.hits.push_back({d.keys[i], d.slot_of[i]});
    }
  }
  for (std::size_t v = 0; v < d.victim_slot.size(); ++v) {
    r.victims.push_back({d.victim_key[v], d.victim_slot[v]});
  }
  for (const std::uint32_t i : d.fetch_index) r.fetches.push_back({d.keys[i], d.slot_of[i]});
  for (const std::uint32_t i : d.bypass_index) r.bypassed.push_back(d.keys[i]);
  return r;
}

std::uint32_t step_now(std::uint32_t step) { return 3 * step + 1; }  // steps need not be dense

struct Setup {
  PolicyParams policy{PolicyKind::kBucketedLru, 64, 0};
  PoolScope scope = PoolScope::kRequestLayer;
  std::uint32_t layers = 2;
  std::uint32_t heads = 2;
  std::uint32_t pages = 64;
  std::uint64_t cache_pages = 40;
  bool vary_capacity = false;  // change the request's cache now and then
  PageTableLayout page_table = PageTableLayout::kTwoLevel;
  bool age_counts = true;  // EngineOptions::age_counts
};

// Replays per-stream sequences through the Engine and, pool by pool, through RefPools; checks
// decisions and invariants after every step. Returns the engine's totals.
PolicyStats replay_and_compare(const Setup& setup, const std::vector<Sequence>& streams,
                               std::mt19937_64& rng) {
  Engine engine(EngineOptions{512, false, setup.page_table, setup.age_counts});
  RequestSpec spec;
  spec.model = ModelShape{setup.layers, setup.heads, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = setup.pages;
  spec.scope = setup.scope;
  spec.policy = setup.policy;
  spec.cache_pages = setup.cache_pages;
  const RequestId id = engine.add_request(spec);
  const std::uint32_t stream_count = setup.layers * setup.heads;
  const std::uint32_t per_pool = setup.scope == PoolScope::kStream         ? 1
                                 : setup.scope == PoolScope::kRequestLayer ? setup.heads
                                                                           : stream_count;
  const std::uint32_t pools = stream_count / per_pool;
  REQUIRE(engine.pool_count(id) == pools);
  const std::size_t steps = streams[0].size();
  const bool belady = setup.policy.kind == PolicyKind::kBelady;

  // next_use[stream][step][page] for Belady, by a forward scan.
  std::vector<std::vector<std::map<std::uint32_t, std::uint32_t>>> next_use(stream_count);
  for (std::uint32_t k = 0; k < stream_count; ++k) {
    next_use[k].resize(steps);
    for (std::size_t s = 0; s < steps; ++s) {
      for (const std::uint32_t p : streams[k][s]) {
        std::uint32_t next = kNeverUsed;
        for (std::size_t t = s + 1; t < steps && next == kNeverUsed; ++t) {
          if (std::binary_search(streams[k][t].begin(), streams[k][t].end(), p)) {
            next = step_now(static_cast<std::uint32_t>(t));
          }
        }
        next_use[k][s][p] = next;
      }
    }
    if (belady) {
      StreamFuture future;
      for (std::size_t s = 0; s < steps; ++s) {
        future.push_step(step_now(static_cast<std::uint32_t>(s)), streams[k][s]);
      }
      engine.set_future(id, k / setup.heads, k % setup.heads, std::move(future));
    }
  }

  std::vector<RefPool> refs;
  const auto set_ref_capacities = [&](std::uint64_t total) {
    // Cumulative floors of equal shares.
    for (std::uint32_t p = 0; p < pools; ++p) {
      refs[p].set_capacity(static_cast<std::uint32_t>(total * (p + 1) / pools - total * p / pools));
    }
  };
  for (std::uint32_t p = 0; p < pools; ++p) {
    refs.emplace_back(setup.policy.kind, setup.policy.buckets, setup.policy.bucket_shift);
  }
  set_ref_capacities(setup.cache_pages);

  std::uniform_real_distribution<double> unit(0, 1);
  for (std::size_t s = 0; s < steps; ++s) {
    const std::uint32_t now = step_now(static_cast<std::uint32_t>(s));
    if (setup.vary_capacity && unit(rng) < 0.1) {
      const std::uint64_t total =
          std::uniform_int_distribution<std::uint64_t>(0, 2 * setup.cache_pages)(rng);
      engine.set_cache_pages(id, total);
      set_ref_capacities(total);
    }
    engine.begin_step(id, now, setup.pages);
    for (std::uint32_t k = 0; k < stream_count; ++k) {
      // An empty selection is either given or not given; both mean "selected nothing".
      if (!streams[k][s].empty() || unit(rng) < 0.5) {
        engine.select(id, k / setup.heads, k % setup.heads, streams[k][s]);
      }
    }
    engine.end_step(id);
    engine.check_invariants();
    for (std::uint32_t p = 0; p < pools; ++p) {
      std::vector<Key> keys;
      std::map<Key, std::uint32_t> uses;
      for (std::uint32_t j = 0; j < per_pool; ++j) {
        const std::uint32_t k = p * per_pool + j;
        for (const std::uint32_t page : streams[k][s]) {
          keys.push_back(make_page_key(j, page));
          uses[keys.back()] = next_use[k][s][page];
        }
      }
      const RefDecision expected = refs[p].step(now, keys, uses);
      const RefDecision got = to_ref(engine.decisions(id, p));
      INFO("step " << s << " pool " << p << " policy " << policy_name(setup.policy.kind));
      REQUIRE(got.hits == expected.hits);
      REQUIRE(got.victims == expected.victims);
      REQUIRE(got.fetches == expected.fetches);
      REQUIRE(got.bypassed == expected.bypassed);
    }
  }
  return engine.total_stats();
}

std::vector<Sequence> random_streams(std::mt19937_64& rng, std::uint32_t count, std::uint32_t steps,
                                     const SequenceShape& shape) {
  std::vector<Sequence> streams;
  for (std::uint32_t k = 0; k < count; ++k) {
    streams.push_back(random_stream_sequence(rng, steps, shape));
  }
  return streams;
}

const std::vector<std::string> kPolicies = {"bucketed-lru", "lru", "fifo", "prev-step", "belady"};

}  // namespace

TEST_CASE("residency: every policy matches its reference model on random sequences",
          "[unit][policy]") {
  PolicyStats all;
  for (const std::string& name : kPolicies) {
    for (const PoolScope scope :
         {PoolScope::kRequestLayer, PoolScope::kStream, PoolScope::kRequest}) {
      for (std::uint64_t seed = 1; seed <= 4; ++seed) {
        std::mt19937_64 rng(seed * 7919 + static_cast<std::uint64_t>(scope));
        Setup setup;
        setup.scope = scope;
        setup.policy = policy_registry().make(
            name, PolicyOptions{seed % 2 ? 64u : 5u, seed % 3 == 0 ? 1u : 0u});
        setup.cache_pages = 16 + 12 * seed;
        setup.vary_capacity = name != "belady" && seed % 2 == 0;
        // Decisions do not depend on where the page table keeps the resident pages.
        setup.page_table = seed % 2 ? PageTableLayout::kTwoLevel : PageTableLayout::kHashed;
        // Nor on whether bucketed LRU keeps its age counts (off: the executor kernel's path).
        setup.age_counts = (seed + static_cast<std::uint64_t>(scope)) % 2 == 0;
        INFO(name << " seed " << seed << " scope " << static_cast<int>(scope) << " page table "
                  << static_cast<int>(setup.page_table) << " age counts " << setup.age_counts);
        all += replay_and_compare(setup, random_streams(rng, setup.layers * setup.heads, 120, {}),
                                  rng);
      }
    }
  }
  // The sequences exercised hits, evictions and bypass.
  CHECK(all.hits > 0);
  CHECK(all.victims > 0);
  CHECK(all.bypassed > 0);
}

TEST_CASE("residency: block floors stay lower bounds and leave decisions unchanged",
          "[unit][policy]") {
  // Pools of dozens of floor blocks (PoolView::block_floor), hot sets that keep some blocks
  // young, capacity changes (new blocks, evictions down to nothing) and bursts over capacity
  // (bypass): check_invariants checks every floor after every step, and the decisions are the
  // reference model's, as without floors (the kernel's path, compared in the tests above).
  PolicyStats all;
  std::uint64_t seed = 1;
  for (const std::string& name : kPolicies) {
    for (const bool age_counts : {true, false}) {
      std::mt19937_64 rng(seed++ * 104729);
      Setup setup;
      setup.policy = policy_registry().make(name, PolicyOptions{seed % 2 ? 64u : 6u, 0u});
      setup.layers = 1;
      setup.pages = 1500;
      setup.cache_pages = 500;
      setup.vary_capacity = name != "belady";
      setup.age_counts = age_counts;
      setup.page_table = seed % 3 == 0 ? PageTableLayout::kHashed : PageTableLayout::kTwoLevel;
      INFO(name << " age counts " << age_counts);
      const SequenceShape shape{1500, 110, 700, 0.85, 0.04};
      all += replay_and_compare(setup, random_streams(rng, setup.heads, 150, shape), rng);
    }
  }
  CHECK(all.hits > 0);
  CHECK(all.victims > 0);
  CHECK(all.bypassed > 0);
}

TEST_CASE("residency: lowest_bit finds the lowest set bit", "[unit][policy]") {
  for (std::uint32_t b = 0; b < 32; ++b) {
    const std::uint32_t bit = 1u << b;
    CHECK(lowest_bit(bit) == b);
    CHECK(lowest_bit(bit | (bit << 1)) == b);
    CHECK(lowest_bit(~(bit - 1)) == b);
  }
  std::mt19937_64 rng(3);
  for (int i = 0; i < 1000; ++i) {
    const auto v = static_cast<std::uint32_t>(rng()) | 0x80000000u;
    CHECK(lowest_bit(v) == static_cast<std::uint32_t>(std::countr_zero(v)));
  }
}

TEST_CASE("residency: FloorScan finds the blocks a scan of every floor finds", "[unit][policy]") {
  // As in the victim pass: ascending queries, limits that only fall, and the floor of each block
  // found rewritten before the next query (plus jumps ahead, which the pass does not need).
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto blocks = static_cast<std::uint32_t>(rng() % 70);
    std::vector<std::uint32_t> floors(blocks);
    for (std::uint32_t& f : floors) f = static_cast<std::uint32_t>(rng() % 20);
    auto limit = static_cast<std::uint32_t>(rng() % 24);
    FloorScan scan{floors.data(), blocks};
    for (std::uint32_t b = 0;;) {
      std::uint32_t expected = b;
      while (expected < blocks && floors[expected] > limit) ++expected;
      const std::uint32_t found = scan.next(b, limit);
      REQUIRE(found == (expected < blocks ? expected : blocks));
      if (found >= blocks) break;
      floors[found] = static_cast<std::uint32_t>(rng() % 20);
      if (rng() % 3 == 0) limit -= static_cast<std::uint32_t>(rng() % (limit + 1));
      b = found + 1 + (rng() % 4 == 0 ? static_cast<std::uint32_t>(rng() % 20) : 0);
    }
  }
}

TEST_CASE("belady: never more misses than any other policy", "[unit][policy]") {
  // Capacities at least the largest selection, so no policy bypasses.
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    SequenceShape shape;
    shape.burst = 0;
    shape.max_select = 10;
    shape.keep = 0.3 + 0.05 * static_cast<double>(seed);
    std::mt19937_64 gen(seed);
    const std::vector<Sequence> streams = random_streams(gen, 4, 150, shape);
    std::map<std::string, std::uint64_t> misses;
    for (const std::string& name : kPolicies) {
      std::mt19937_64 rng(seed);
      Setup setup;
      setup.policy = policy_registry().make(name);
      setup.cache_pages = 2 * (10 + 2 * seed);  // two pools of 10 + 2·seed pages
      misses[name] = replay_and_compare(setup, streams, rng).misses;
    }
    for (const auto& [name, count] : misses) {
      INFO("seed " << seed << ": belady " << misses["belady"] << " vs " << name << " " << count);
      CHECK(misses["belady"] <= count);
    }
  }
}

TEST_CASE("belady: equals the brute-force optimum on tiny sequences", "[unit][policy]") {
  // Optimum over every demand schedule: after step t the cache Y holds S_t, |Y| <= C and
  // Y ⊆ (cache before) ∪ S_t; a step costs |S_t \ cache before|.
  constexpr std::uint32_t kPages = 7;
  constexpr std::uint32_t kCapacity = 3;
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    SequenceShape shape{kPages, kCapacity, kCapacity, 0.4, 0.0};
    const Sequence seq = random_stream_sequence(rng, 10, shape);
    std::map<std::uint32_t, std::uint64_t> best{{0u, 0}};  // cache bitmask → fewest misses
    for (const auto& step : seq) {
      std::uint32_t need = 0;
      for (const std::uint32_t p : step) need |= 1u << p;
      std::map<std::uint32_t, std::uint64_t> next;
      for (const auto& [cache, cost] : best) {
        const std::uint64_t step_cost = static_cast<std::uint64_t>(std::popcount(need & ~cache));
        const std::uint32_t pool = cache | need;
        for (std::uint32_t y = pool;; y = (y - 1) & pool) {  // subsets of pool
          if ((y & need) == need && static_cast<std::uint32_t>(std::popcount(y)) <= kCapacity) {
            const auto it = next.find(y);
            if (it == next.end() || it->second > cost + step_cost) next[y] = cost + step_cost;
          }
          if (y == 0) break;
        }
      }
      best = std::move(next);
    }
    std::uint64_t optimum = ~std::uint64_t{0};
    for (const auto& [cache, cost] : best) optimum = std::min(optimum, cost);

    Setup setup;
    setup.policy = policy_registry().make("belady");
    setup.scope = PoolScope::kStream;
    setup.layers = 1;
    setup.heads = 1;
    setup.pages = kPages;
    setup.cache_pages = kCapacity;
    INFO("seed " << seed);
    CHECK(replay_and_compare(setup, {seq}, rng).misses == optimum);
  }
}

TEST_CASE("lru: misses equal a one-pass stack-distance computation", "[unit][policy]") {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    SequenceShape shape;
    shape.burst = 0;
    shape.max_select = 9;
    std::mt19937_64 gen(seed);
    const Sequence seq = random_stream_sequence(gen, 200, shape);
    std::size_t largest = 0;
    for (const auto& step : seq) largest = std::max(largest, step.size());
    std::vector<std::vector<Key>> steps;
    for (const auto& step : seq) steps.emplace_back(step.begin(), step.end());
    const std::vector<std::uint64_t> reference = stack_distance_misses(steps, 65);
    for (std::size_t capacity = largest; capacity <= 64; capacity += 3) {
      Setup setup;
      setup.policy = policy_registry().make("lru");
      setup.scope = PoolScope::kStream;
      setup.layers = 1;
      setup.heads = 1;
      setup.cache_pages = capacity;
      std::mt19937_64 rng(seed);
      INFO("seed " << seed << " capacity " << capacity);
      CHECK(replay_and_compare(setup, {seq}, rng).misses == reference[capacity]);
    }
  }
}

TEST_CASE("bucketed_lru: evicts the oldest bucket first, lowest slot on ties", "[unit][policy]") {
  // One stream, capacity 4, B = 4 buckets of width 1 step.
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 1, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.policy = policy_registry().make("bucketed-lru", PolicyOptions{4, 0});
  spec.cache_pages = 4;
  const RequestId id = engine.add_request(spec);
  const auto step = [&](std::uint32_t now, std::vector<std::uint32_t> pages) {
    engine.begin_step(id, now, 100);
    engine.select(id, 0, 0, pages);
    engine.end_step(id);
    engine.check_invariants();
    return engine.decisions(id, 0);
  };
  step(0, {10, 11});  // pages 10, 11 → slots 0, 1
  step(1, {12});      // → slot 2
  step(2, {13});      // → slot 3
  // At step 10 all four are in the oldest bucket (age >= 3): ties go to the lowest slots.
  PoolDecisions d = step(10, {20, 21});
  REQUIRE(d.victim_slot.size() == 2);
  CHECK(d.victim_slot[0] == 0);
  CHECK(d.victim_slot[1] == 1);
  CHECK(key_page(d.victim_key[0]) == 10);
  CHECK(key_page(d.keys[d.fetch_index[0]]) == 20);
  CHECK(d.slot_of[d.fetch_index[0]] == 0);
  CHECK(d.slot_of[d.fetch_index[1]] == 1);
  step(11, {20});
  // Buckets at step 12: 20 (slot 0) 1, 21 (slot 1) 2, 12 (slot 2) and 13 (slot 3) 3. The oldest
  // bucket goes first although its slots are higher; the lowest of them (2) breaks the tie.
  d = step(12, {30});
  REQUIRE(d.victim_slot.size() == 1);
  CHECK(d.victim_slot[0] == 2);
  // Buckets at step 13: 20 (slot 0) 2, 21 (slot 1) 3, 30 (slot 2) 1, 13 (slot 3) 3: 21 and 13
  // share the oldest bucket and the lower slot, 1, goes.
  d = step(13, {31});
  REQUIRE(d.victim_slot.size() == 1);
  CHECK(d.victim_slot[0] == 1);
}

TEST_CASE("residency: the fetch list is ascending (stream, page) into ascending free slots",
          "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 2, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.cache_pages = 8;
  const RequestId id = engine.add_request(spec);
  engine.begin_step(id, 0, 100);
  engine.select(id, 0, 1, std::vector<std::uint32_t>{5, 7});  // heads in any order
  engine.select(id, 0, 0, std::vector<std::uint32_t>{3, 9});
  engine.end_step(id);
  const PoolDecisions d = engine.decisions(id, 0);
  REQUIRE(d.fetch_index.size() == 4);
  const std::vector<PageKey> expected = {make_page_key(0, 3), make_page_key(0, 9),
                                         make_page_key(1, 5), make_page_key(1, 7)};
  for (std::size_t f = 0; f < 4; ++f) {
    CHECK(d.keys[d.fetch_index[f]] == expected[f]);
    CHECK(d.slot_of[d.fetch_index[f]] == static_cast<std::int32_t>(f));
  }
  CHECK(d.victim_slot.empty());
  CHECK(d.hits == 0);
}

TEST_CASE("residency: a selection over capacity bypasses its highest keys", "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 1, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.cache_pages = 3;
  const RequestId id = engine.add_request(spec);
  engine.begin_step(id, 0, 100);
  engine.select(id, 0, 0, std::vector<std::uint32_t>{1, 2});
  engine.end_step(id);
  engine.begin_step(id, 1, 100);
  engine.select(id, 0, 0, std::vector<std::uint32_t>{0, 1, 2, 3, 4});
  const PolicyStats stats = engine.end_step(id);
  engine.check_invariants();
  const PoolDecisions d = engine.decisions(id, 0);
  // Hits 1, 2 are pinned; one slot is left for the lowest miss (0); 3 and 4 are bypassed.
  CHECK(d.hits == 2);
  REQUIRE(d.fetch_index.size() == 1);
  CHECK(key_page(d.keys[d.fetch_index[0]]) == 0);
  REQUIRE(d.bypass_index.size() == 2);
  CHECK(key_page(d.keys[d.bypass_index[0]]) == 3);
  CHECK(key_page(d.keys[d.bypass_index[1]]) == 4);
  CHECK(d.slot_of[d.bypass_index[0]] == kBypassSlot);
  CHECK(stats.misses == 3);
  CHECK(stats.bypassed == 2);
  CHECK(stats.hits == 2);
}

TEST_CASE("prev_step: keeps exactly the previous step's pages", "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 1, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.policy = policy_registry().make("prev-step");
  spec.cache_pages = 10;
  const RequestId id = engine.add_request(spec);
  const std::vector<std::vector<std::uint32_t>> steps = {{1, 2, 3}, {2, 3, 4}, {9}, {2, 9}};
  std::vector<std::uint32_t> previous;
  for (std::uint32_t s = 0; s < steps.size(); ++s) {
    engine.begin_step(id, s, 100);
    engine.select(id, 0, 0, steps[s]);
    const PolicyStats stats = engine.end_step(id);
    engine.check_invariants();
    std::uint64_t expected_hits = 0;
    for (const std::uint32_t p : steps[s]) {
      expected_hits += std::count(previous.begin(), previous.end(), p) ? 1 : 0;
    }
    CHECK(stats.hits == expected_hits);
    CHECK(stats.victims == previous.size() - expected_hits);
    previous = steps[s];
  }
}

TEST_CASE("residency: a lowered capacity evicts at the next step, pinned pages last",
          "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 1, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.policy = policy_registry().make("lru");
  spec.cache_pages = 6;
  const RequestId id = engine.add_request(spec);
  engine.begin_step(id, 0, 100);
  engine.select(id, 0, 0, std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5});
  engine.end_step(id);
  engine.set_cache_pages(id, 1);
  engine.begin_step(id, 1, 100);
  engine.select(id, 0, 0, std::vector<std::uint32_t>{4, 5, 6});
  const PolicyStats stats = engine.end_step(id);
  engine.check_invariants();
  // 4, 5 hit and stay pinned above the new capacity of 1; 0..3 go; 6 is bypassed.
  CHECK(stats.hits == 2);
  CHECK(stats.victims == 4);
  CHECK(stats.bypassed == 1);
  engine.begin_step(id, 2, 100);
  engine.select(id, 0, 0, std::vector<std::uint32_t>{5});
  engine.end_step(id);
  engine.check_invariants();
  REQUIRE(engine.decisions(id, 0).victim_slot.size() == 1);  // unpinned, 4 leaves
  CHECK(key_page(engine.decisions(id, 0).victim_key[0]) == 4);
}

TEST_CASE("policy registry: names, descriptions, factories and errors", "[unit][policy]") {
  const PolicyRegistry& registry = policy_registry();
  std::vector<std::string> names;
  for (const PolicyInfo& info : registry.list()) {
    names.push_back(info.name);
    CHECK(!info.description.empty());
    CHECK(info.needs_future == (info.name == "belady"));
    CHECK(policy_name(registry.make(info.name).kind) == info.name);
  }
  CHECK(names == kPolicies);
  const PolicyParams p = registry.make("bucketed-lru", PolicyOptions{16, 2});
  CHECK(p.kind == PolicyKind::kBucketedLru);
  CHECK(p.buckets == 16);
  CHECK(p.bucket_shift == 2);
  CHECK_THROWS_WITH(registry.make("mru"),
                    Catch::Contains("unknown replacement policy 'mru'") &&
                        Catch::Contains("bucketed-lru, lru, fifo, prev-step, belady"));
  CHECK_THROWS_AS(registry.make("bucketed-lru", PolicyOptions{0, 0}), InputError);
  CHECK_THROWS_AS(registry.make("bucketed-lru", PolicyOptions{64, 32}), InputError);
  PolicyRegistry mine;
  register_builtin_policies(mine);
  CHECK_THROWS_AS(mine.add({"lru", "again", false}, nullptr), InvariantError);
}

}  // namespace spin::policy::test
