// Trace generators: determinism, validity, file round trip, workloads, bad input, calibration.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <tuple>

#include "common/error.h"
#include "common/policy/partition_map.h"
#include "common/trace/trace_data.h"
#include "tests/support.h"
#include "traces/gen/generator.h"
#include "traces/gen/rng.h"
#include "traces/gen/workload.h"
#include "traces/stats/stats.h"

using namespace spin;
using spin::test::TempDir;

namespace {

// A small config: `layers` layers, 2 KV heads, fixed-length requests.
gen::TraceGenConfig small_config(const std::string& algorithm, uint32_t prompt, uint32_t output,
                                 uint32_t requests = 2, uint32_t layers = 3) {
  gen::TraceGenConfig c;
  c.generator.algorithm = algorithm;
  c.generator.seed = 7;
  c.model.layers = layers;
  c.model.kv_heads = 2;
  c.model.query_heads = 4;
  c.generator.workload.name = "fixed";
  c.generator.workload.requests = requests;
  c.generator.workload.prompt_tokens = prompt;
  c.generator.workload.output_tokens = output;
  c.generator.locality.poor_layers = 1;
  return c;
}

// A variable stream's cluster map over the whole request, drawn plainly (the reference for the
// generator's own, vectorised map building): clusters of [min, max] tokens, clipped to what is
// left, cover the prompt and then every re-index interval, one draw of the stream's map
// generator each.
trace::PartitionMap reference_map(const gen::Generator& g, size_t request, uint32_t layer,
                                  uint32_t head) {
  const trace::RequestInfo& r = g.requests()[request];
  const gen::AlgorithmSpec& spec = g.algorithm();
  gen::Rng rng(gen::detail::kMap ^ gen::mix(g.config().seed, r.id, layer, head));
  const uint32_t span = spec.cluster_max_tokens - spec.cluster_min_tokens + 1;
  std::vector<uint32_t> lengths;
  const auto cover = [&](uint32_t tokens) {
    lengths.clear();
    while (tokens > 0) {
      const uint32_t len = spec.cluster_min_tokens +
                           gen::uniform_below(static_cast<uint32_t>(rng.next() >> 32), span);
      lengths.push_back(std::min(len, tokens));
      tokens -= lengths.back();
    }
  };
  cover(r.prompt_tokens);
  trace::PartitionMap map(lengths, r.prompt_tokens);
  const uint32_t interval = spec.info.reindex_interval_tokens;
  for (uint64_t step = interval; step < r.decode_steps; step += interval) {
    cover(interval);
    map.grow(static_cast<uint32_t>(step), lengths);
  }
  return map;
}

// Every record of (request, layer) opened for `heads`, as TraceData's CSR (layer-major).
trace::RequestData collect(const trace::TraceSource& s, size_t r, std::vector<uint32_t> layers,
                           std::span<const uint32_t> heads = {}) {
  trace::RequestData d;
  d.info = s.requests()[r];
  for (uint32_t l : layers) {
    const auto stream = s.open_layer(r, l, heads);
    uint32_t expected = 0;
    while (stream->next()) {
      REQUIRE(stream->step() == expected++);
      const uint32_t n = heads.empty() ? s.header().model.kv_heads : heads.size();
      for (uint32_t i = 0; i < n; ++i) d.append(stream->selection(heads.empty() ? i : heads[i]));
    }
    REQUIRE(expected == d.info.decode_steps);
  }
  return d;
}

}  // namespace

TEST_CASE("trace gen rng: a draw ahead is computable from the state alone, skip() matches next()",
          "[unit][gen]") {
  // The vectorised persistence computes eight draws from the state and then skips them.
  for (const uint64_t seed : {0ull, 5ull, 0xffffffffffffffffull}) {
    gen::Rng a(seed), b(seed);
    const uint64_t state = a.state();
    for (uint64_t i = 1; i <= 20; ++i) {
      CHECK(a.next() == gen::Rng::output(state + i * gen::Rng::kIncrement));
    }
    b.skip(20);
    CHECK(b.state() == a.state());
    CHECK(b.next() == a.next());
  }
}

TEST_CASE("trace gen: same seed gives identical records, in any open order and head subset",
          "[unit][gen]") {
  for (const gen::AlgorithmSpec& a : gen::algorithms()) {
    INFO(a.name);
    const gen::Generator g1(small_config(std::string(a.name), 3000, 40));
    const gen::Generator g2(small_config(std::string(a.name), 3000, 40));
    const trace::RequestData forward = collect(g1, 1, {0, 1, 2});
    // Open the layers backwards, after other requests, each layer on its own.
    collect(g2, 0, {2});
    std::vector<trace::RequestData> per_layer(3);
    for (uint32_t l : {2u, 1u, 0u}) per_layer[l] = collect(g2, 1, {l});
    trace::RequestData backward;
    backward.info = forward.info;
    for (const trace::RequestData& one : per_layer) {
      for (size_t k = 0; k + 1 < one.offsets.size(); ++k) {
        backward.append(
            std::span(one.ids).subspan(one.offsets[k], one.offsets[k + 1] - one.offsets[k]));
      }
    }
    CHECK(backward == forward);
    // Head 1 alone yields head 1's selections.
    const std::vector<uint32_t> head1{1};
    const trace::RequestData alone = collect(g2, 1, {2}, head1);
    const trace::RequestData both = collect(g2, 1, {2});
    for (size_t k = 0; k + 1 < alone.offsets.size(); ++k) {
      const size_t j = 2 * k + 1;
      CHECK(std::equal(alone.ids.begin() + alone.offsets[k],
                       alone.ids.begin() + alone.offsets[k + 1], both.ids.begin() + both.offsets[j],
                       both.ids.begin() + both.offsets[j + 1]));
    }
    // Another seed gives other selections.
    auto other = small_config(std::string(a.name), 3000, 40);
    other.generator.seed = 8;
    CHECK(collect(gen::Generator(other), 1, {0, 1, 2}).ids != forward.ids);
  }
}

TEST_CASE(
    "trace gen: selections ascend, stay outside the static region and have the budget's "
    "size",
    "[unit][gen]") {
  for (const gen::AlgorithmSpec& a : gen::algorithms()) {
    INFO(a.name);
    auto config = small_config(std::string(a.name), 5000, 1100, 1, 2);
    config.generator.locality.dense_layers = 1;
    const gen::Generator g(config);
    const trace::AlgorithmInfo& info = g.algorithm().info;
    const uint32_t log2 = static_cast<uint32_t>(std::countr_zero(info.page_tokens));
    const trace::RequestInfo& r = g.requests()[0];
    for (uint32_t layer = 0; layer < 2; ++layer) {
      const auto stream = g.open_layer(0, layer);
      while (stream->next()) {
        const uint32_t step = stream->step();
        const uint32_t context = r.prompt_tokens + step;
        const auto region =
            policy::make_static_region(info.sink_tokens, info.local_window_tokens, context, log2);
        for (uint32_t h = 0; h < 2; ++h) {
          const auto offsets = stream->partition_offsets(h);
          const bool variable = info.partition_kind == trace::PartitionKind::kVariable;
          const uint32_t count =
              variable ? static_cast<uint32_t>(offsets.size() - 1)
                       : trace::fixed_partition_count(r.prompt_tokens, step, info.partition_tokens);
          const policy::PartitionMapView view{
              variable ? policy::PartitionKind::kVariable : policy::PartitionKind::kFixed,
              log2,
              info.partition_tokens,
              count,
              context,
              offsets.data()};
          // Brute force: the partitions that touch no static page.
          std::vector<uint32_t> dynamic;
          for (uint32_t p = 0; p < count; ++p) {
            const auto pages = policy::partition_pages(view, p);
            bool ok = pages.end > pages.begin;
            for (uint32_t q = pages.begin; q < pages.end; ++q)
              ok = ok && !policy::is_static_page(region, q);
            if (ok) dynamic.push_back(p);
          }
          const auto sel = stream->selection(h);
          REQUIRE_FALSE(trace::check_selection(sel, count));
          for (uint32_t id : sel) REQUIRE(std::binary_search(dynamic.begin(), dynamic.end(), id));
          const uint32_t expected =
              layer == 0 ? static_cast<uint32_t>(dynamic.size())
                         : std::min<uint32_t>(g.budget_partitions(context), dynamic.size());
          REQUIRE(sel.size() == expected);
        }
      }
    }
  }
}

TEST_CASE("trace gen: variable partition maps cover the prompt and grow every re-index interval",
          "[unit][gen]") {
  const gen::Generator g(small_config("retroinfer", 2000, 2100, 1, 1));
  const trace::PartitionMap map = reference_map(g, 0, 0, 1);
  CHECK(map.offsets()[map.initial_clusters()] == 2000);
  REQUIRE(map.growth().size() == 2);
  CHECK(map.growth()[0].step == 1024);
  CHECK(map.growth()[1].step == 2048);
  CHECK(map.offsets().back() == 2000 + 2048);
  for (size_t i = 0; i + 1 < map.offsets().size(); ++i) {
    const uint32_t len = map.offsets()[i + 1] - map.offsets()[i];
    CHECK(len >= 1);
    CHECK(len <= 28);
  }
  const auto stream = g.open_layer(0, 0);
  while (stream->next()) {
    CHECK(stream->partition_offsets(1).size() == map.clusters_at(stream->step()) + 1);
  }
}

TEST_CASE("trace gen: a stream's variable partition offsets are the reference map's at every step",
          "[unit][gen]") {
  // Streams build their maps with their own (vectorised) loop; reference_map draws them plainly.
  // Prompts shorter and longer than eight longest clusters, a single-token and a wide range.
  for (const auto& [min, max] : {std::pair{0u, 0u}, std::pair{1u, 1u}, std::pair{3u, 40u}}) {
    for (const uint32_t prompt : {5u, 150u, 2001u}) {
      gen::TraceGenConfig c = small_config("retroinfer", prompt, 1100, 1, 2);
      c.generator.geometry.cluster_min_tokens = min;
      c.generator.geometry.cluster_max_tokens = max;
      c.generator.geometry.partition_tokens = (min + max) / 2;  // the nominal size, a length
      const gen::Generator g(c);
      for (uint32_t l = 0; l < 2; ++l) {
        const auto stream = g.open_layer(0, l);
        const trace::PartitionMap map0 = reference_map(g, 0, l, 0),
                                  map1 = reference_map(g, 0, l, 1);
        while (stream->next()) {
          const uint32_t step = stream->step();
          for (const auto& [h, map] : {std::pair{0u, &map0}, std::pair{1u, &map1}}) {
            const auto offsets = stream->partition_offsets(h);
            const auto expected = map->offsets().first(map->clusters_at(step) + 1);
            REQUIRE(std::equal(offsets.begin(), offsets.end(), expected.begin(), expected.end()));
          }
        }
      }
    }
  }
}

TEST_CASE("trace gen: a written trace reads back as the generator's records", "[unit][gen]") {
  TempDir dir;
  for (const char* name : {"shadowkv", "retroinfer", "token"}) {
    INFO(name);
    const gen::Generator g(small_config(name, 2500, 1030));
    gen::copy_to_file(g, dir / "g.spt", {.chunk_selections = 5000, .zstd_level = 1});
    const trace::TraceData back = trace::read_all(dir / "g.spt");
    CHECK(back.header == g.header());
    REQUIRE(back.requests.size() == g.requests().size());
    for (size_t r = 0; r < g.requests().size(); ++r) {
      trace::RequestData expected = collect(g, r, {0, 1, 2});
      if (g.algorithm().info.partition_kind == trace::PartitionKind::kVariable) {
        for (uint32_t l = 0; l < 3; ++l) {
          for (uint32_t h = 0; h < 2; ++h) expected.maps.push_back(reference_map(g, r, l, h));
        }
      }
      CHECK(back.requests[r] == expected);
    }
  }
}

TEST_CASE("trace gen: workloads match their length ranges and means, arrivals are Poisson",
          "[unit][gen]") {
  gen::WorkloadSection w;
  w.requests = 4000;
  w.rate_rps = 2.0;
  for (const auto& [name, pmin, pmax, pmean, omin, omax, omean] :
       {std::tuple{"longbench-v2", 32000u, 120000u, 55000u, 500u, 15000u, 5000u},
        std::tuple{"longgenbench", 16000u, 19000u, 18000u, 7000u, 32000u, 12000u}}) {
    INFO(name);
    w.name = name;
    const auto requests = gen::make_requests(w, 3);
    REQUIRE(requests.size() == 4000);
    double prompt = 0, output = 0;
    for (const auto& r : requests) {
      CHECK(r.prompt_tokens >= pmin);
      CHECK(r.prompt_tokens <= pmax);
      CHECK(r.output_tokens >= omin);
      CHECK(r.output_tokens <= omax);
      prompt += r.prompt_tokens;
      output += r.output_tokens;
    }
    CHECK(prompt / 4000 == Approx(pmean).epsilon(0.03));
    CHECK(output / 4000 == Approx(omean).epsilon(0.03));
    CHECK(requests.back().arrival_us / 1e6 / 4000 == Approx(0.5).epsilon(0.05));
  }
  w.duration_s = 100;
  w.max_output_tokens = 64;
  const auto timed = gen::make_requests(w, 3);
  CHECK(timed.size() == Approx(200).margin(45));
  CHECK(timed.back().arrival_us < 100'000'000);
  CHECK(
      std::all_of(timed.begin(), timed.end(), [](const auto& r) { return r.output_tokens <= 64; }));
  w.name = "list";
  w.list = {500, 100, 10, 0, 200, 20};
  const auto listed = gen::make_requests(w, 3);
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].arrival_us == 0);
  CHECK(listed[0].prompt_tokens == 200);
  CHECK(listed[1].output_tokens == 10);
  // Requests outside what a trace holds are errors, also where no trace is written (spin sim
  // reads the generator directly): past 10^15 us, or 2^32 - 1 tokens and more.
  using Catch::Matchers::Contains;
  w.list = {99'999'999'999'999'999, 1000, 4};
  CHECK_THROWS_WITH(gen::make_requests(w, 3),
                    Contains("request 0 arrives at 1e+11 s, past the 1000000000 s"));
  w.list = {0, 4'294'967'290, 100};
  CHECK_THROWS_WITH(
      gen::make_requests(w, 3),
      Contains("request 0 has 4294967290 prompt + 64 output tokens"));  // max_output_tokens 64
  w.name = "longbench-v2";
  w.list.clear();
  w.duration_s = 0;
  w.rate_rps = 1e-300;
  CHECK_THROWS_WITH(gen::make_requests(w, 3), Contains("raise rate_rps"));
  w.duration_s = 1e9;  // found before a million arrivals are drawn
  w.rate_rps = 1e9;
  CHECK_THROWS_WITH(gen::make_requests(w, 3), Contains("about 1e+18 requests"));
}

TEST_CASE("trace gen: bad config names the key, unknown names list the known ones", "[unit][gen]") {
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const auto parse = [](std::vector<std::string> sets) {
    return gen::parse_generator_config("", "test", sets);
  };
  CHECK_THROWS_WITH(
      parse({"generator.algorithm=shadow"}),
      Contains("generator.algorithm") && Contains("shadowkv, retroinfer, seer, quest, token"));
  CHECK_THROWS_WITH(parse({"generator.workload.name=longbench"}),
                    Contains("generator.workload.name") && Contains("longbench-v2, longgenbench"));
  CHECK_THROWS_WITH(parse({"generator.locality.persistence=1.5"}),
                    Contains("generator.locality.persistence"));
  CHECK_THROWS_WITH(parse({"generator.locality.persistance=0.5"}), Contains("persistence"));
  CHECK_THROWS_WITH(parse({"generator.geometry.page_tokens=12"}),
                    StartsWith("--set generator.geometry.page_tokens=12: "
                               "generator.geometry.page_tokens") &&
                        Contains("power of two"));
  CHECK_THROWS_WITH(
      gen::parse_generator_config("generator:\n  geometry:\n    page_tokens: 12\n", "g.yaml", {}),
      StartsWith("g.yaml:3:18: generator.geometry.page_tokens"));
  CHECK_THROWS_WITH(parse({"generator.workload.name=list", "generator.workload.list=[1, 2]"}),
                    Contains("generator.workload.list: expected a multiple of 3 values"));
  CHECK_THROWS_WITH(parse({"generator.workload.name=fixed", "generator.workload.list=[0, 1, 2]"}),
                    Contains("generator.workload.list: expected no list with workload fixed"));
  // Keys the chosen workload or algorithm would ignore.
  CHECK_THROWS_WITH(parse({"generator.workload.prompt_tokens=4096"}),
                    Contains("--set generator.workload.prompt_tokens=4096: "
                             "generator.workload.prompt_tokens: expected no prompt_tokens with "
                             "workload longbench-v2"));
  CHECK_THROWS_WITH(parse({"generator.workload.name=list", "generator.workload.list=[0, 1, 2]",
                           "generator.workload.output_tokens=7"}),
                    Contains("generator.workload.output_tokens: expected no output_tokens with "
                             "workload list"));
  CHECK_NOTHROW(parse({"generator.workload.name=fixed", "generator.workload.prompt_tokens=4096",
                       "generator.workload.output_tokens=7"}));
  for (const char* key : {"reindex_interval_tokens", "cluster_min_tokens", "cluster_max_tokens"}) {
    CHECK_THROWS_WITH(
        parse({"generator.algorithm=quest", std::string("generator.geometry.") + key + "=9"}),
        Contains("generator.geometry: expected no reindex_interval_tokens, "
                 "cluster_min_tokens or cluster_max_tokens with algorithm quest"));
    CHECK_NOTHROW(parse(
        {"generator.algorithm=retroinfer", std::string("generator.geometry.") + key + "=16"}));
  }
  // Clusters the budget's nominal size is not a length of; a re-index interval the local window
  // does not cover (its tokens could never be selected).
  CHECK_THROWS_WITH(
      parse({"generator.algorithm=retroinfer", "generator.geometry.cluster_min_tokens=64",
             "generator.geometry.cluster_max_tokens=64"}),
      Contains("generator.geometry.partition_tokens: the nominal cluster size 16 (the "
               "budget counts clusters of it) is outside the cluster lengths 64..64"));
  CHECK_NOTHROW(parse({"generator.algorithm=retroinfer", "generator.geometry.cluster_min_tokens=64",
                       "generator.geometry.cluster_max_tokens=64",
                       "generator.geometry.partition_tokens=64"}));
  CHECK_THROWS_WITH(
      parse({"generator.algorithm=retroinfer", "generator.geometry.reindex_interval_tokens=4096"}),
      Contains("generator.geometry.local_window_tokens: expected at least reindex_interval_tokens "
               "(4096), got 1088"));
  // Arrivals past what a trace holds are found at the key, before any draw.
  CHECK_THROWS_WITH(
      parse({"generator.workload.rate_rps=1e-10", "generator.workload.requests=1"}),
      StartsWith("--set generator.workload.rate_rps=1e-10: generator.workload.rate_rps: "
                 "1 requests at 1e-10 per s would arrive over about 1e+10 s"));
  CHECK_THROWS_WITH(parse({"generator.workload.duration_s=1e10"}),
                    Contains("generator.workload.duration_s: expected at most 1000000000 s"));
  // A list gives the requests and their arrivals.
  for (const char* key : {"requests=3", "rate_rps=2", "duration_s=5"}) {
    CHECK_THROWS_WITH(parse({"generator.workload.name=list", "generator.workload.list=[0, 1, 2]",
                             std::string("generator.workload.") + key}),
                      Contains("with workload list"));
  }
  // A budget under geometry replaces the algorithm's: the key not given counts 0.
  const auto budget_of = [&](std::vector<std::string> sets) {
    return gen::resolve_algorithm(parse(std::move(sets)).generator, "generator").info;
  };
  const auto seer_ratio =
      budget_of({"generator.algorithm=seer", "generator.geometry.budget_ratio=0.0156"});
  CHECK(seer_ratio.budget_ratio == 0.0156);
  CHECK(seer_ratio.budget_tokens == 0);
  const auto shadowkv_tokens = budget_of({"generator.geometry.budget_tokens=2048"});
  CHECK(shadowkv_tokens.budget_ratio == 0);
  CHECK(shadowkv_tokens.budget_tokens == 2048);
  const auto both =
      budget_of({"generator.geometry.budget_tokens=64", "generator.geometry.budget_ratio=0.01"});
  CHECK(both.budget_ratio == 0.01);
  CHECK(both.budget_tokens == 64);
  CHECK(budget_of({"generator.algorithm=seer"}).budget_tokens == 2048);
  CHECK_THROWS_WITH(parse({"generator.model.layers=2", "generator.locality.poor_layers=3"}),
                    Contains("generator.locality.poor_layers"));
  const gen::TraceGenConfig c = gen::parse_generator_config(
      "generator:\n  algorithm: seer\n  locality:\n    persistence: 0.5\n", "test.yaml",
      {"generator.workload.requests=3"});
  CHECK(c.generator.algorithm == "seer");
  CHECK(c.generator.locality.persistence == 0.5);
  CHECK(c.generator.workload.requests == 3);
  CHECK(c.model.preset == "qwen3-14b");
  CHECK(c.model.layers == 40);
}

// The calibration targets of reference/locality-and-transfer.md, on a scaled-down run with the
// default locality model: 32K-token prompts (per-step selections as in the paper's setups for
// the fixed-token budgets), 8 layers, 2 KV heads, 600 decode steps. docs/trace-generators.md
// explains each bound.
TEST_CASE("trace gen: default locality meets the calibration targets for every algorithm",
          "[unit][gen][calibration]") {
  for (const gen::AlgorithmSpec& a : gen::algorithms()) {
    INFO(a.name);
    auto config = small_config(std::string(a.name), 32000, 600, 2, 8);
    config.generator.locality =
        gen::LocalitySection{};  // the defaults: 2 of the 8 layers poorly local
    const gen::Generator g(config);
    stats::StatsCollector collector(g.header());
    for (size_t r = 0; r < g.requests().size(); ++r) {
      for (uint32_t l = 0; l < g.header().model.layers; ++l) {
        const auto stream = g.open_layer(r, l);
        collector.add_layer(g.requests()[r], l, *stream);
      }
    }
    const stats::GroupStats all = collector.overall();
    // Capacity multiples 1, 1.5, 2, 3, 4, 5, 8 → indices 0..6; windows 1, 2, 4, 8, 12, 16.
    const double h1 = all.hit_ratio(0), h2 = all.hit_ratio(2), h4 = all.hit_ratio(4),
                 h5 = all.hit_ratio(5), h8 = all.hit_ratio(6);
    INFO("hit 1x " << h1 << " 2x " << h2 << " 4x " << h4 << " 5x " << h5 << " 8x " << h8);
    CHECK(h8 - h5 <= 0.25 * (h2 - h1));  // saturated by 5x ...
    CHECK(h5 - h2 >= 2 * (h8 - h5));     // ... but still rising after 2x
    CHECK(all.in_union(4) >= 0.9);       // window 12
    INFO("overlap " << all.overlap());
    if (a.name == "token") {
      // Top-2048 tokens touch most 16-token pages of a 32K context: the page-level cache holds
      // nearly everything from 2x on, so the targets are token-level ones (ECHO, top-k study).
      CHECK(all.overlap() >= 0.5);
      CHECK(all.overlap() <= 0.7);
      CHECK(h8 >= 0.88);
    } else {
      // ArkVale: misses fall steeply up to 2x and flatten by 4x (docs/trace-generators.md).
      const double pages = all.mean_step_pages();
      const double m2 = all.misses_per_step(2) / pages, m4 = all.misses_per_step(4) / pages;
      INFO("miss share 2x " << m2 << " 4x " << m4);
      CHECK(m2 >= 0.02);
      CHECK(m2 <= 0.35);
      CHECK(m4 / m2 >= 0.15);
      CHECK(m4 / m2 <= 0.5);
    }
  }
}

TEST_CASE("trace gen: the CLI writes a trace that trace stats reads, and names bad algorithms",
          "[unit][gen][cli]") {
  TempDir dir;
  const std::string out = (dir / "cli.spt").string();
  const test::CliRun gen = test::run_spin(
      {"trace", "gen", "--algorithm", "seer", "--workload", "longgenbench", "--requests", "1",
       "--max-output-tokens", "40", "--set", "generator.model.layers=2", "--out", out});
  REQUIRE(gen.status == 0);
  const test::CliRun stats =
      test::run_spin({"trace", "stats", out, "--json", (dir / "s.json").string()});
  CHECK(stats.status == 0);
  CHECK(stats.out.find("Exact LRU") != std::string::npos);
  CHECK(std::filesystem::exists(dir / "s.json"));
  const test::CliRun bad = test::run_spin({"trace", "gen", "--algorithm", "sear", "--out", out});
  CHECK(bad.status == 2);
  CHECK(bad.err.find("shadowkv, retroinfer, seer, quest, token") != std::string::npos);
}
