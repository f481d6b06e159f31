// The policy engine (common/policy/engine.h): mapping, static region, statistics, the decision
// log, Belady's future and call-order errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/policy/engine.h"
#include "common/policy/policy_registry.h"

namespace spin::policy::test {
namespace {

using Ids = std::vector<std::uint32_t>;

RequestSpec small_spec(std::uint32_t layers, std::uint32_t heads, std::uint64_t cache_pages) {
  RequestSpec spec;
  spec.model = ModelShape{layers, heads, 4, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 1, 1};
  spec.max_context_tokens = 100;
  spec.cache_pages = cache_pages;
  return spec;
}

}  // namespace

TEST_CASE("engine: static-region pages are counted apart, neither hits nor misses",
          "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 1, 128, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 8, 8};
  spec.static_region = StaticRegionParams{8, 16};
  spec.max_context_tokens = 1024;
  spec.cache_pages = 10;
  const RequestId id = engine.add_request(spec);
  // 100 tokens: page 0 holds the sinks, pages 10..12 the local window (84..99, 12 unfinished).
  engine.begin_step(id, 0, 100);
  engine.select(id, 0, 0, Ids{0, 5, 5, 10, 12});
  const PolicyStats stats = engine.end_step(id);
  CHECK(stats.static_accesses == 3);
  CHECK(stats.accesses == 1);
  CHECK(stats.misses == 1);
  CHECK(stats.hits == 0);
  CHECK(stats.fetched_bytes == 2 * 8 * 128 * 2);  // one page of K and V
  CHECK(engine.decisions(id, 0).static_pages == 3);
  // The window moves with the context: page 10 leaves the static region.
  engine.begin_step(id, 1, 120);
  engine.select(id, 0, 0, Ids{5, 10});
  const PolicyStats next = engine.end_step(id);
  CHECK(next.static_accesses == 0);
  CHECK(next.hits == 1);
  CHECK(next.misses == 1);
}

TEST_CASE("engine: statistics per layer add up to the totals in every pool scope",
          "[unit][policy]") {
  for (const PoolScope scope :
       {PoolScope::kStream, PoolScope::kRequestLayer, PoolScope::kRequest}) {
    Engine engine;
    RequestSpec spec = small_spec(3, 2, 18);
    spec.scope = scope;
    spec.static_region = StaticRegionParams{2, 0};
    const RequestId id = engine.add_request(spec);
    for (std::uint32_t s = 0; s < 30; ++s) {
      engine.begin_step(id, s, 100);
      for (std::uint32_t layer = 0; layer < 3; ++layer) {
        for (std::uint32_t head = 0; head < 2; ++head) {
          Ids ids;
          for (std::uint32_t i = 0; i < 3 + layer; ++i)
            ids.push_back((s * (head + 1) + 7 * i) % 50);
          std::sort(ids.begin(), ids.end());
          engine.select(id, layer, head, ids);
        }
      }
      engine.end_step(id);
      engine.check_invariants();
    }
    PolicyStats sum;
    for (const PolicyStats& layer : engine.layer_stats()) {
      CHECK(layer.hits + layer.misses == layer.accesses);
      sum += layer;
    }
    const PolicyStats& total = engine.total_stats();
    CHECK(sum.accesses == total.accesses);
    CHECK(sum.hits == total.hits);
    CHECK(sum.misses == total.misses);
    CHECK(sum.bypassed == total.bypassed);
    CHECK(sum.victims == total.victims);
    CHECK(sum.static_accesses == total.static_accesses);
    CHECK(sum.fetched_bytes == total.fetched_bytes);
    CHECK(total.static_accesses > 0);
    CHECK(engine.request_stats(id).accesses == total.accesses);
    // Layer 2 selects 5 pages per head and step, layer 0 selects 3.
    CHECK(engine.layer_stats()[2].accesses + engine.layer_stats()[2].static_accesses == 30 * 2 * 5);
  }
}

TEST_CASE("engine: a restored checkpoint decides as the engine did when it saved",
          "[unit][policy]") {
  // Two engines step alike; one saves, runs other steps (a cache change, a removed request),
  // restores and must then decide exactly as the other: same decision log, counts and metadata,
  // with its segments rebuilt (small segments, so that many are owned and released).
  for (const PageTableLayout layout : {PageTableLayout::kTwoLevel, PageTableLayout::kHashed}) {
    const EngineOptions options{4, true, layout};
    Engine engine(options);
    Engine reference(options);
    RequestSpec spec = small_spec(2, 2, 40);
    spec.max_context_tokens = 400;
    for (Engine* e : {&engine, &reference}) {
      e->add_request(spec);
      e->add_request(spec);
    }
    std::mt19937 rng(11);
    const auto run = [&](Engine& e, std::uint32_t step, std::uint32_t seed) {
      std::mt19937 draw(seed);
      for (RequestId id = 0; id < 2; ++id) {
        e.begin_step(id, step, 200 + step);
        for (std::uint32_t layer = 0; layer < 2; ++layer) {
          for (std::uint32_t head = 0; head < 2; ++head) {
            Ids ids(25);
            for (std::uint32_t& p : ids) p = draw() % (200 + step);
            std::sort(ids.begin(), ids.end());
            e.select(id, layer, head, ids);
          }
        }
        e.end_step(id);
      }
      e.check_invariants();
    };
    std::vector<std::uint32_t> seeds(40);
    for (std::uint32_t& seed : seeds) seed = rng();
    for (std::uint32_t s = 0; s < 10; ++s) {
      run(engine, s, seeds[s]);
      run(reference, s, seeds[s]);
    }
    Engine::Checkpoint checkpoint;
    engine.save(checkpoint);
    for (std::uint32_t s = 10; s < 20; ++s) run(engine, s, seeds[s] + 1);
    engine.set_cache_pages(0, 17);
    engine.begin_step(1, 20, 220);
    engine.end_step(1);
    engine.remove_request(1);
    engine.restore(checkpoint);
    engine.check_invariants();
    CHECK(engine.metadata().current == reference.metadata().current);
    for (std::uint32_t s = 10; s < 40; ++s) {
      run(engine, s, seeds[s]);
      run(reference, s, seeds[s]);
      REQUIRE(engine.metadata().current == reference.metadata().current);
    }
    CHECK(engine.decision_log() == reference.decision_log());
    CHECK(engine.total_stats() == reference.total_stats());
    CHECK(engine.metadata().peak == reference.metadata().peak);
    // A checkpoint saved again is reused; one from nowhere, or of another segment size, is not.
    engine.save(checkpoint);
    engine.restore(checkpoint);
    engine.check_invariants();
    CHECK_THROWS_AS(engine.restore(Engine::Checkpoint{}), InvariantError);
    Engine other(EngineOptions{8, false, layout});
    CHECK_THROWS_AS(other.restore(checkpoint), InvariantError);
  }
}

TEST_CASE("decision log: the documented text format", "[unit][policy]") {
  Engine engine(EngineOptions{512, true});
  const RequestId id = engine.add_request(small_spec(1, 2, 3));
  engine.begin_step(id, 0, 100);
  engine.select(id, 0, 0, Ids{1, 2});
  engine.select(id, 0, 1, Ids{4});
  engine.end_step(id);
  engine.begin_step(id, 5, 100);
  engine.select(id, 0, 0, Ids{2, 3});
  engine.select(id, 0, 1, Ids{4, 5});
  engine.end_step(id);
  CHECK(engine.decision_log() ==
        "# spin decision log v1\n"
        "step 0 req 0 pool 0 sel 3 hit 0 fetch 3 bypass 0 evict 0 static 0\n"
        "F 0:1@0 0:2@1 1:4@2\n"
        "step 5 req 0 pool 0 sel 4 hit 2 fetch 1 bypass 1 evict 1 static 0\n"
        "H 0:2@1 1:4@2\n"
        "E 0:1@0\n"
        "F 0:3@0\n"
        "B 1:5\n");
  const std::string taken = engine.take_decision_log();
  CHECK(taken.substr(0, 23) == "# spin decision log v1\n");
  CHECK(engine.decision_log().empty());
  engine.begin_step(id, 6, 100);
  engine.end_step(id);
  CHECK(engine.take_decision_log() ==
        "step 6 req 0 pool 0 sel 0 hit 0 fetch 0 bypass 0 evict 0 static 0\n");
}

TEST_CASE("decision log: two runs of the same workload are byte-identical", "[unit][policy]") {
  const auto run = [] {
    Engine engine(EngineOptions{64, true});
    RequestSpec spec;
    spec.model = ModelShape{2, 4, 128, 2};
    spec.geometry = PartitionGeometry{PartitionKind::kFixed, 8, 8};
    spec.max_context_tokens = 8192;
    spec.cache_pages = 2 * 4 * 40;
    const RequestId id = engine.add_request(spec);
    for (std::uint32_t s = 0; s < 40; ++s) {
      engine.begin_step(id, s, 8000 + s);
      for (std::uint32_t k = 0; k < 8; ++k) {
        Ids ids;
        for (std::uint32_t i = 0; i < 20; ++i) ids.push_back((i * 37 + s * (k + 3) + i * i) % 1000);
        std::sort(ids.begin(), ids.end());
        engine.select(id, k / 4, k % 4, ids);
      }
      engine.end_step(id);
    }
    return engine.decision_log();
  };
  const std::string first = run();
  CHECK(first.size() > 1000);
  CHECK(first == run());
}

TEST_CASE("engine: belady checks the replay against its future", "[unit][policy]") {
  RequestSpec spec = small_spec(1, 1, 4);
  spec.policy = policy_registry().make("belady");
  {
    Engine engine;
    const RequestId id = engine.add_request(spec);
    engine.begin_step(id, 0, 100);
    engine.select(id, 0, 0, Ids{1});
    CHECK_THROWS_WITH(engine.end_step(id), Catch::Contains("needs set_future"));
  }
  {
    Engine engine;
    const RequestId id = engine.add_request(spec);
    StreamFuture future;
    future.push_step(0, Ids{1, 2});
    future.push_step(1, Ids{2});
    engine.set_future(id, 0, 0, std::move(future));
    engine.begin_step(id, 0, 100);
    engine.select(id, 0, 0, Ids{1, 2});
    engine.end_step(id);
    engine.begin_step(id, 1, 100);
    engine.select(id, 0, 0, Ids{3});
    CHECK_THROWS_WITH(engine.end_step(id), Catch::Contains("differs from the future"));
  }
  Engine engine;
  const RequestId lru = engine.add_request(small_spec(1, 1, 4));
  CHECK_THROWS_AS(engine.set_future(lru, 0, 0, StreamFuture{}), InputError);
  StreamFuture bad;
  bad.push_step(3, Ids{});
  CHECK_THROWS_AS(bad.push_step(3, Ids{}), InputError);
  CHECK_THROWS_AS(bad.push_step(4, Ids{2, 2}), InputError);
}

TEST_CASE("engine: future next uses look forward by step", "[unit][policy]") {
  StreamFuture f;
  f.push_step(1, Ids{1, 2});
  f.push_step(4, Ids{2, 3});
  f.push_step(6, Ids{1});
  f.finalize();
  CHECK(std::vector<std::uint32_t>(f.next_uses(0).begin(), f.next_uses(0).end()) ==
        std::vector<std::uint32_t>{6, 4});
  CHECK(std::vector<std::uint32_t>(f.next_uses(1).begin(), f.next_uses(1).end()) ==
        std::vector<std::uint32_t>{kNeverUsed, kNeverUsed});
  // push_selection maps like Engine::select: 8-token partitions over 8-token pages, 20 tokens
  // stored (page 2 unfinished, hence static).
  PartitionMap map(PartitionGeometry{PartitionKind::kFixed, 8, 8});
  map.set_stored_tokens(20);
  f.push_selection(7, map.view(), static_region(StaticRegionParams{}, 8, 20), Ids{0, 2});
  CHECK(std::vector<std::uint32_t>(f.pages(3).begin(), f.pages(3).end()) == Ids{0});
}

TEST_CASE("engine: variable clusters are mapped through append_clusters", "[unit][policy]") {
  Engine engine;
  RequestSpec spec;
  spec.model = ModelShape{1, 2, 128, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kVariable, 8, 16};
  spec.max_context_tokens = 4096;
  spec.cache_pages = 64;
  const RequestId id = engine.add_request(spec);
  engine.begin_step(id, 0, 200);
  engine.append_clusters(id, 0, 0, 0, Ids{20, 5, 30});  // [0,20) [20,25) [25,55)
  engine.append_clusters(id, 0, 1, 0, Ids{100});
  engine.select(id, 0, 0, Ids{1, 2});  // tokens 20..54: pages 2..6
  engine.select(id, 0, 1, Ids{0});     // tokens 0..99: pages 0..12
  const PolicyStats stats = engine.end_step(id);
  CHECK(stats.accesses == 5 + 13);
  CHECK(engine.metadata().current.partition_offsets == (4 + 2) * 4);
  engine.begin_step(id, 1, 210);
  CHECK_THROWS_AS(engine.select(id, 0, 0, Ids{3}), InputError);  // no cluster 3 yet
  engine.end_step(id);
  CHECK_THROWS_AS(engine.append_clusters(id, 0, 0, 60, Ids{4}), InputError);  // gap after 55
  RequestSpec fixed = small_spec(1, 1, 4);
  const RequestId other = engine.add_request(fixed);
  CHECK_THROWS_AS(engine.append_clusters(other, 0, 0, 0, Ids{4}), InputError);
}

TEST_CASE("engine: calls out of order or out of range are input errors", "[unit][policy]") {
  Engine engine;
  const RequestId id = engine.add_request(small_spec(2, 2, 8));
  CHECK_THROWS_AS(engine.select(id, 0, 0, Ids{1}), InputError);  // outside a step
  CHECK_THROWS_AS(engine.end_step(id), InputError);
  CHECK_THROWS_AS(engine.begin_step(id, 0, 101), InputError);  // over max_context_tokens
  engine.begin_step(id, 3, 50);
  CHECK_THROWS_AS(engine.begin_step(id, 4, 50), InputError);
  CHECK_THROWS_AS(engine.select(id, 2, 0, Ids{1}), InputError);   // no layer 2
  CHECK_THROWS_AS(engine.select(id, 0, 0, Ids{50}), InputError);  // 50 tokens: ids 0..49
  engine.select(id, 0, 0, Ids{1});
  CHECK_THROWS_AS(engine.select(id, 0, 0, Ids{1}), InputError);  // twice
  CHECK_THROWS_WITH(
      engine.select(id, 0, 1, Ids{3, 2}),
      Catch::Contains("request 0 layer 0 head 1 step 3") && Catch::Contains("not sorted"));
  engine.end_step(id);
  CHECK_THROWS_AS(engine.begin_step(id, 3, 50), InputError);  // now must increase
  CHECK_THROWS_AS(engine.begin_step(id, 4, 40), InputError);  // context never shrinks
  engine.remove_request(id);
  CHECK_THROWS_WITH(engine.begin_step(id, 5, 50), Catch::Contains("no request 0"));
  CHECK_THROWS_AS(Engine(EngineOptions{500, false}), InputError);
  RequestSpec bad = small_spec(1, 1, 4);
  bad.geometry.page_tokens = 3;
  CHECK_THROWS_AS(engine.add_request(bad), InputError);
  engine.check_invariants();
}

}  // namespace spin::policy::test
