// Trace statistics: hand-computed values, LRU stack distances against a naive LRU cache, and a
// file against the generator it came from.
#include <catch2/catch.hpp>

#include <algorithm>
#include <list>

#include "common/policy/engine.h"
#include "common/policy/policy_registry.h"
#include "common/trace/reader.h"
#include "tests/support.h"
#include "traces/gen/generator.h"
#include "traces/gen/rng.h"
#include "traces/stats/stats.h"

using namespace spin;

namespace {

// A stream over in-memory selections of fixed partitions: [step][head] → ids.
struct VectorStream {
  std::vector<std::vector<std::vector<uint32_t>>> steps;
  int64_t at = -1;
  bool next() { return ++at < static_cast<int64_t>(steps.size()); }
  uint32_t step() const { return static_cast<uint32_t>(at); }
  std::span<const uint32_t> selection(uint32_t head) const { return steps[at][head]; }
  std::span<const uint32_t> partition_offsets(uint32_t) const { return {}; }
};

trace::TraceHeader header(uint32_t heads, uint32_t g, uint32_t page, uint32_t sink,
                          uint32_t window) {
  trace::TraceHeader h;
  h.model = {"tiny", 1, heads, heads, 8, 2};
  h.algorithms = {{"a", trace::PartitionKind::kFixed, g, page, 0, 4, sink, window, 0}};
  return h;
}

}  // namespace

TEST_CASE(
    "trace stats: a tiny trace gives the hand-computed overlap, unions, reuse and LRU "
    "stack distances",
    "[unit][gen][stats]") {
  // One head, 1-token partitions = pages, no static region but the (absent) unfinished page.
  stats::StatsCollector c(header(1, 1, 1, 0, 0));
  VectorStream s{{{{0, 1, 2}}, {{1, 2, 3}}, {{0, 3}}, {{0, 1}}}};
  const trace::RequestInfo r{0, 0, 8, 4, 4, 0};
  c.add_layer(r, 0, s);
  const stats::GroupStats g = c.overall();
  CHECK(g.stream_steps == 4);
  CHECK(g.mean_selection() == 2.5);
  CHECK(g.size_quantile(0.5) == 2);
  CHECK(g.size_quantile(0.99) == 3);
  CHECK(g.overlap() == Approx(4.0 / 7));
  CHECK(g.in_union(1) == 1.0);                  // window 2, steps 2 and 3: 4 of 4
  CHECK(g.working_set(1) == Approx(11.0 / 3));  // |S0∪S1| 4, |S1∪S2| 4, |S2∪S3| 3
  CHECK(g.working_set(0) == 2.5);
  CHECK(g.first_uses == 4);
  REQUIRE(g.reuse.size() == 2);
  CHECK(g.reuse[0] == 4);  // reused after 1 step
  CHECK(g.reuse[1] == 2);  // after 2 steps
  // Stacks (top first): [2 1 0] → step 1 distances 1:1 2:0 → [3 2 1 0] → step 2 0:3 3:0
  // → [3 0 2 1] → step 3 0:1 1:3. Mean 2.5 pages per step: 1x = 3 slots, 1.5x = 4, 2x = 5.
  CHECK(g.page_accesses == 10);
  CHECK(g.hits[0] == 4);
  CHECK(g.hits[1] == 6);
  CHECK(g.hits[2] == 6);
  CHECK(g.capacity_pages[0] == 3);
  CHECK(g.misses_per_step(0) == 1.5);
  // Windows longer than the 4 steps have no data: null and `-`, not a measured 0.
  const nlohmann::json j = c.to_json()["overall"];
  CHECK(j["in_union"]["2"] == 1.0);
  CHECK(j["in_union"]["4"].is_null());
  CHECK(j["working_set"]["4"] == 4.0);  // t = 3: |S0 ∪ S1 ∪ S2 ∪ S3| = |{0, 1, 2, 3}|
  CHECK(j["working_set"]["8"].is_null());
  const std::string text = c.to_text();
  const std::size_t row = text.find("\n  all ");  // the selections table's last row
  REQUIRE(row != std::string::npos);
  const std::string all_row = text.substr(row + 1, text.find('\n', row + 1) - row - 1);
  CHECK(all_row.ends_with(" -"));  // ws(16)
}

TEST_CASE("trace stats: a context too long for a pool's arrays is refused before they are made",
          "[unit][gen][stats]") {
  // 8 heads x 2^25 1-token pages is 2^28 entries, the limit; one more token is refused.
  stats::StatsCollector c(header(8, 1, 1, 0, 0));
  VectorStream s{{{{0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}}}};
  const trace::RequestInfo r{7, 0, (1u << 25), 1, 1, 0};
  CHECK_THROWS_WITH(c.add_layer(r, 0, s),
                    "trace stats: request id 7 has 8 KV heads x 33554433 pages (33554433 "
                    "partitions) in a layer, more than the 268435456 (head, page) or (head, "
                    "partition) entries a pool's statistics may hold");
}

TEST_CASE("trace stats: hits at each capacity equal a naive LRU cache's, static pages excluded",
          "[unit][gen][stats]") {
  // 2 heads, 2-token partitions on 4-token pages, 4 sink and 4 window tokens.
  const uint32_t heads = 2, prompt = 96, steps = 60;
  gen::Rng rng(11);
  VectorStream s;
  std::vector<uint32_t> step_max(steps, 0);
  for (uint32_t t = 0; t < steps; ++t) {
    s.steps.emplace_back(heads);
    const uint32_t partitions = trace::fixed_partition_count(prompt, t, 2);
    for (uint32_t h = 0; h < heads; ++h) {
      std::vector<uint32_t>& ids = s.steps[t][h];
      for (uint32_t p = 0; p < partitions; ++p) {
        // Locality: a slowly moving window of likely partitions plus a few random ones.
        const bool near = p >= t / 2 && p < t / 2 + 12;
        if (rng.unit() < (near ? 0.6 : 0.04)) ids.push_back(p);
      }
    }
  }
  stats::StatsOptions options;
  options.capacity_multiples = {1, 1.5, 2, 3, 4, 6};
  stats::StatsCollector c(header(heads, 2, 4, 4, 4), options);
  const trace::RequestInfo r{0, 0, prompt, steps, steps, 0};
  c.add_layer(r, 0, s);
  const stats::GroupStats g = c.overall();

  // The naive reference: pages of each selection (static pages dropped), then an LRU list.
  std::vector<std::vector<uint32_t>> keys(steps);
  for (uint32_t t = 0; t < steps; ++t) {
    const uint32_t stored = prompt + t;
    for (uint32_t h = 0; h < heads; ++h) {
      std::vector<uint32_t> pages;
      for (uint32_t id : s.steps[t][h]) {
        const uint32_t page = id * 2 / 4;
        const bool sink = page * 4 < 4;
        const bool local = page * 4 + 4 > stored - 4;  // overlaps the window or is unfinished
        if (!sink && !local && (pages.empty() || pages.back() != page)) pages.push_back(page);
      }
      for (uint32_t p : pages) keys[t].push_back(h * 1000 + p);
    }
  }
  uint64_t accesses = 0;
  size_t largest = 0;
  for (const auto& k : keys) {
    accesses += k.size();
    largest = std::max(largest, k.size());
  }
  REQUIRE(g.page_accesses == accesses);
  const double mean = static_cast<double>(accesses) / steps;
  for (size_t m = 0; m < options.capacity_multiples.size(); ++m) {
    const size_t capacity =
        static_cast<size_t>(std::ceil(options.capacity_multiples[m] * mean - 1e-9));
    if (capacity < largest) continue;  // below the largest step, the policy core bypasses
    std::list<uint32_t> lru;           // most recent first
    uint64_t hits = 0;
    for (const auto& step_keys : keys) {
      for (uint32_t k : step_keys) hits += std::find(lru.begin(), lru.end(), k) != lru.end();
      for (uint32_t k : step_keys) {
        lru.remove(k);
        lru.push_front(k);
      }
      while (lru.size() > capacity) lru.pop_back();
    }
    INFO("multiple " << options.capacity_multiples[m] << " capacity " << capacity);
    CHECK(g.hits[m] == hits);
  }
  CHECK(g.static_accesses > 0);
}

TEST_CASE("trace stats: a generated file gives the same statistics as its generator",
          "[unit][gen][stats]") {
  test::TempDir dir;
  gen::TraceGenConfig config;
  config.generator.algorithm = "retroinfer";
  config.model.layers = 2;
  config.model.kv_heads = 2;
  config.generator.workload.name = "fixed";
  config.generator.workload.requests = 2;
  config.generator.workload.prompt_tokens = 3000;
  config.generator.workload.output_tokens = 1100;
  config.generator.locality.poor_layers = 1;
  const gen::Generator g(config);
  gen::copy_to_file(g, dir / "s.spt");
  stats::StatsCollector from_gen(g.header()), from_file(g.header());
  const trace::TraceReader reader(dir / "s.spt");
  for (size_t r = 0; r < 2; ++r) {
    for (uint32_t l = 0; l < 2; ++l) {
      const auto stream = g.open_layer(r, l);
      from_gen.add_layer(g.requests()[r], l, *stream);
      trace::LayerCursor cursor = reader.open_layer(r, l);
      from_file.add_layer(reader.requests()[r], l, cursor);
    }
  }
  CHECK(from_gen.to_json() == from_file.to_json());
  CHECK(from_gen.overall().page_accesses > 0);
}

TEST_CASE("trace stats: hits equal the policy core's exact LRU on generated traces",
          "[unit][gen][stats]") {
  for (const char* algorithm : {"shadowkv", "retroinfer", "token"}) {
    INFO(algorithm);
    gen::TraceGenConfig config;
    config.generator.algorithm = algorithm;
    config.model.layers = 1;
    config.model.kv_heads = 2;
    config.generator.workload.name = "fixed";
    config.generator.workload.requests = 1;
    config.generator.workload.prompt_tokens = 6000;
    config.generator.workload.output_tokens = 1100;
    config.generator.locality.poor_layers = 0;
    const gen::Generator g(config);
    stats::StatsOptions options;
    options.capacity_multiples = {2, 3, 5, 8};
    stats::StatsCollector collector(g.header(), options);
    {
      const auto stream = g.open_layer(0, 0);
      collector.add_layer(g.requests()[0], 0, *stream);
    }
    const stats::GroupStats s = collector.overall();
    const trace::AlgorithmInfo& a = g.algorithm().info;
    const bool variable = a.partition_kind == trace::PartitionKind::kVariable;
    for (size_t m = 0; m < options.capacity_multiples.size(); ++m) {
      policy::RequestSpec spec;
      spec.model = {1, 2, 128, 2};
      spec.geometry = {variable ? policy::PartitionKind::kVariable : policy::PartitionKind::kFixed,
                       a.page_tokens, a.partition_tokens};
      spec.static_region = {a.sink_tokens, a.local_window_tokens};
      spec.policy = policy::policy_registry().make("lru");
      spec.cache_pages = s.capacity_pages[m];
      policy::Engine engine;
      const policy::RequestId id = engine.add_request(spec);
      std::vector<uint32_t> clusters(2, 0);
      const auto stream = g.open_layer(0, 0);
      while (stream->next()) {
        engine.begin_step(id, stream->step(), g.requests()[0].prompt_tokens + stream->step());
        for (uint32_t h = 0; h < 2; ++h) {
          const auto offsets = stream->partition_offsets(h);
          if (variable && offsets.size() - 1 > clusters[h]) {
            std::vector<uint32_t> lengths;
            for (size_t c = clusters[h]; c + 1 < offsets.size(); ++c) {
              lengths.push_back(offsets[c + 1] - offsets[c]);
            }
            engine.append_clusters(id, 0, h, offsets[clusters[h]], lengths);
            clusters[h] = static_cast<uint32_t>(offsets.size() - 1);
          }
          engine.select(id, 0, h, stream->selection(h));
        }
        engine.end_step(id);
      }
      const policy::PolicyStats& p = engine.total_stats();
      INFO("multiple " << options.capacity_multiples[m] << " capacity " << s.capacity_pages[m]);
      CHECK(p.accesses == s.page_accesses);
      CHECK(p.static_accesses == s.static_accesses);
      CHECK(p.bypassed == 0);
      CHECK(p.hits == s.hits[m]);
    }
  }
}
