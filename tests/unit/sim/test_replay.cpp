#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/config/config.h"
#include "common/policy/policy_registry.h"
#include "common/trace/file_source.h"
#include "sim/replay.h"
#include "sim/trace_match.h"
#include "tests/support.h"
#include "tests/unit/trace/trace_fixtures.h"

using spin::test::read_file;
using spin::test::run_spin;
using spin::test::source_path;

namespace {

spin::sim::ReplayResult replay_sample(const std::string& policy, unsigned threads,
                                      std::optional<std::filesystem::path> log = {}) {
  const spin::trace::FileSource source(source_path("traces/sample.spt"));
  spin::sim::ReplayOptions options;
  options.cache.policy = policy;
  options.threads = threads;
  options.decision_log = log;
  return spin::sim::replay(source, options);
}

}  // namespace

TEST_CASE("replay: results and decision log do not depend on the thread count", "[unit][sim]") {
  spin::test::TempDir dir;
  const auto one = replay_sample("bucketed-lru", 1, dir / "one.log");
  const auto three = replay_sample("bucketed-lru", 3, dir / "three.log");
  CHECK(one.total.hits == three.total.hits);
  CHECK(one.total.misses == three.total.misses);
  CHECK(one.total.victims == three.total.victims);
  REQUIRE(one.layers.size() == three.layers.size());
  for (size_t l = 0; l < one.layers.size(); ++l) CHECK(one.layers[l].hits == three.layers[l].hits);
  const std::string log = read_file(dir / "one.log");
  CHECK(log == read_file(dir / "three.log"));
  CHECK(log.starts_with("# spin decision log v1\n"));
  // Each request's steps name it by its trace id.
  const spin::trace::FileSource source(source_path("traces/sample.spt"));
  REQUIRE(source.requests().size() > 1);
  for (const auto& r : source.requests())
    CHECK(log.find(fmt::format("\nstep 0 req {} pool 0 ", r.id)) != std::string::npos);
}

TEST_CASE("replay: counts add up and Belady misses no more than any other policy", "[unit][sim]") {
  const auto belady = replay_sample("belady", 2);
  for (const std::string policy : {"bucketed-lru", "lru", "fifo", "prev-step"}) {
    const auto r = replay_sample(policy, 2);
    INFO(policy);
    CHECK(r.total.accesses == belady.total.accesses);
    CHECK(r.total.hits + r.total.misses == r.total.accesses);
    REQUIRE(r.page_bytes.size() == 1);
    CHECK(r.total.fetched_bytes == r.total.misses * r.page_bytes.front());
    CHECK(belady.total.misses <= r.total.misses);
    uint64_t layer_hits = 0;
    for (const auto& l : r.layers) layer_hits += l.hits;
    CHECK(layer_hits == r.total.hits);
  }
  // Keeping only the previous step's pages must lose to a 4x buffer.
  CHECK(replay_sample("prev-step", 1).total.hits < replay_sample("bucketed-lru", 1).total.hits);
}

TEST_CASE("replay: --check-invariants checks every pool step and changes no count", "[unit][sim]") {
  const spin::trace::FileSource source(source_path("traces/sample.spt"));
  for (const spin::policy::PolicyInfo& policy : spin::policy::policy_registry().list()) {
    for (const auto& [scope, scope_name] : spin::policy::kPoolScopeNames) {
      INFO(policy.name << " " << scope_name);
      spin::sim::ReplayOptions options;
      options.cache.policy = policy.name;
      options.cache.pool_scope = scope;
      options.threads = 2;
      const auto plain = spin::sim::replay(source, options);
      options.check_invariants = true;
      const auto checked = spin::sim::replay(source, options);
      CHECK(checked.total.hits == plain.total.hits);
      CHECK(checked.total.victims == plain.total.victims);
      CHECK(checked.total.bypassed == plain.total.bypassed);
    }
  }
  const auto cli = run_spin({"replay", "--check-invariants", "--policy", "lru"});
  CHECK(cli.status == 0);
  CHECK(cli.out.find("policy lru") != std::string::npos);
}

TEST_CASE("replay: a trace whose algorithms have two page sizes reports both", "[unit][sim]") {
  // fixed8 and clusters have 8-token pages, token 16-token ones; one request each.
  spin::test::TempDir dir;
  spin::test::write_file(dir / "mixed.spt", spin::test::small_trace_bytes(3));
  const spin::trace::FileSource source(dir / "mixed.spt");
  const spin::trace::ModelShape& m = source.header().model;
  const uint64_t small = 2ull * 8 * m.head_dim * m.dtype_bytes;
  spin::sim::ReplayOptions options;
  const auto r = spin::sim::replay(source, options);
  CHECK(r.page_bytes == std::vector<uint64_t>{small, 2 * small});
  // Each request's misses are fetched at its own algorithm's page size: neither size alone.
  CHECK(r.total.fetched_bytes > r.total.misses * small);
  CHECK(r.total.fetched_bytes < r.total.misses * 2 * small);
  // The command lists both sizes, in the table and in the JSON.
  const auto cli =
      run_spin({"replay", (dir / "mixed.spt").string(), "--out", (dir / "run").string(), "--set",
                "model.layers=2", "--set", "model.query_heads=4", "--set", "model.kv_heads=2",
                "--set", "model.head_dim=16"});
  INFO(cli.err);
  REQUIRE(cli.status == 0);
  std::string text = cli.out;  // the table's notes are wrapped: unwrap them
  for (size_t at; (at = text.find("\n  ")) != std::string::npos;) text.replace(at, 3, " ");
  INFO(text);
  CHECK(text.find(fmt::format("pages of {} B, {} B (by algorithm)", small, 2 * small)) !=
        std::string::npos);
  const auto json = nlohmann::json::parse(read_file(dir / "run" / "replay.json"));
  CHECK(json["page_bytes"] == nlohmann::json::array({small, 2 * small}));
}

TEST_CASE("replay: a bigger buffer never lowers the exact-LRU hit count", "[unit][sim]") {
  const spin::trace::FileSource source(source_path("traces/sample.spt"));
  uint64_t previous = 0;
  for (double k : {0.0, 1.0, 2.0, 4.0, 8.0}) {
    spin::sim::ReplayOptions options;
    options.cache.policy = "lru";
    options.cache.buffer_ratio = k;
    const auto r = spin::sim::replay(source, options);
    INFO("k = " << k);
    CHECK(r.total.hits >= previous);
    previous = r.total.hits;
  }
}

TEST_CASE("replay command: writes the resolved config and JSON equal to the table's numbers",
          "[unit][sim]") {
  spin::test::TempDir dir;
  const auto r = run_spin({"replay", "--out", (dir / "run").string(), "--threads", "2", "--policy",
                           "lru", "--buffer-ratio", "3"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto json = nlohmann::json::parse(read_file(dir / "run" / "replay.json"));
  CHECK(json["policy"] == "lru");
  const uint64_t hits = json["total"]["hits"];
  CHECK(r.out.find(std::to_string(hits)) != std::string::npos);
  const std::string resolved = read_file(dir / "run" / "resolved_config.yaml");
  CHECK(resolved.find("policy: lru") != std::string::npos);
  CHECK(resolved.find("buffer_ratio: 3") != std::string::npos);
}

TEST_CASE("replay command: a trace recorded for another model shape is refused with the fix",
          "[unit][sim]") {
  const auto r = run_spin({"replay", "--set", "model.layers=7"});
  CHECK(r.status == 2);
  CHECK(r.err.find("layers ") != std::string::npos);
  CHECK(r.err.find("in the config") != std::string::npos);
  CHECK(r.err.find("(e.g. --set model.layers=") != std::string::npos);
  // The preset's name is the trace's: the message says that the shapes of one name differ.
  CHECK(r.err.find("and the config both name model 'qwen3-14b', but with different shapes: "
                   "layers 40 in the trace, 7 in the config") != std::string::npos);
  // Every key that differs is in the fix; a trace of a preset names the preset; a dtype too.
  CHECK(run_spin({"replay", "--set", "model.layers=7", "--set", "model.head_dim=64"})
            .err.find("(e.g. --set model.layers=40 --set model.head_dim=128)") !=
        std::string::npos);
  const auto other = run_spin({"replay", "--set", "model=qwen3-32b"});
  CHECK(other.err.find("recorded for model 'qwen3-14b' but the config's model is 'qwen3-32b': ") !=
        std::string::npos);
  CHECK(other.err.find("(e.g. --set model=qwen3-14b)") != std::string::npos);
  CHECK(run_spin({"replay", "--set", "model.dtype=fp8"})
            .err.find("dtype_bytes 2 in the trace, 1 in the config; use a config whose model "
                      "matches the trace (e.g. --set model.dtype=bf16)") != std::string::npos);
  // A trace of 4-byte elements matches no model.dtype: the message says the trace must change.
  const spin::config::ModelConfig qwen = spin::config::default_config({}).model;
  CHECK_THROWS_WITH(
      spin::sim::check_trace_matches_model("t.spt", {"mine", 40, 40, 8, 128, 4}, qwen),
      Catch::Contains("dtype_bytes 4 in the trace, 2 in the config, and no model.dtype has "
                      "4-byte elements (bf16 and fp16 2, fp8 1)") &&
          Catch::EndsWith("use a config whose model matches the trace"));
}

TEST_CASE("bench core: --page-tables chooses the layouts timed, and a bad one is refused",
          "[unit][sim]") {
  const auto r = run_spin({"bench", "core", "--steps", "4", "--policies", "lru", "--page-tables",
                           "hashed", "--skip-metadata", "--repeats", "1"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find("lru            hashed") != std::string::npos);
  CHECK(r.out.find("two-level") == std::string::npos);
  // Four steps take far less CPU time than the clock resolves reliably everywhere: it says so.
  CHECK(r.err.find("spin bench core: warning: a reported run took ") != std::string::npos);
  CHECK(r.err.find("time more work (--steps)") != std::string::npos);

  const auto bad = run_spin({"bench", "core", "--page-tables", "flat"});
  CHECK(bad.status != 0);
  CHECK(bad.err.find("--page-tables: unknown layout 'flat'; expected two-level or hashed") !=
        std::string::npos);
}

TEST_CASE("bench core, bench sim: bad options are refused before the table starts", "[unit][sim]") {
  // Each named as the user gave it.
  const auto policy = run_spin({"bench", "core", "--policies", "nope"});
  CHECK(policy.status == 2);
  CHECK(policy.out.empty());
  for (const auto& [option, value, message] :
       {std::tuple{"--requests", "0", "--requests: expected at least 1, got 0"},
        {"--rate", "nan", "--rate: expected a number of requests per second > 0, got nan"},
        {"--sampling", "1", "--sampling: expected at least 2, got 1"},
        {"--run-ahead", "0", "--run-ahead: expected at least 1, got 0"}}) {
    const auto r = run_spin({"bench", "sim", option, value});
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err == fmt::format("spin: error: spin bench sim: {}\n", message));
  }
}
