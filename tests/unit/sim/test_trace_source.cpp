// The run's trace source from its config (sim/trace_source.h): trace.path or trace.generator,
// exactly one; a generator mounted in the run config gives the records `spin trace gen` writes.
#include <catch2/catch.hpp>

#include "common/config/config.h"
#include "common/error.h"
#include "common/trace/file_source.h"
#include "common/trace/memory_source.h"
#include "sim/replay.h"
#include "sim/trace_source.h"
#include "tests/support.h"

namespace {

using spin::config::load_config_text;

// The generator keys both ways below use: 2 layers of Qwen3-14B, 2 fixed-length requests.
const std::string kModel = "model: {preset: qwen3-14b, layers: 2}\nhardware: h100-sxm\n";
const std::string kGenerator =
    "trace:\n"
    "  generator:\n"
    "    algorithm: retroinfer\n"
    "    seed: 11\n"
    "    workload: {name: fixed, requests: 2, prompt_tokens: 3000, output_tokens: 1100}\n"
    "    locality: {poor_layers: 1}\n";

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    spin::sim::open_trace_source(load_config_text(yaml, "run.yaml", sets));
  } catch (const spin::InputError& e) {
    return e.what();
  }
  FAIL("no InputError for:\n" << yaml);
  return "";
}

}  // namespace

TEST_CASE("trace source: trace.generator replays as the file spin trace gen writes",
          "[unit][sim]") {
  spin::test::TempDir dir;
  const auto gen = spin::test::run_spin({"trace",       "gen",
                                         "--out",       (dir / "g.spt").string(),
                                         "--algorithm", "retroinfer",
                                         "--seed",      "11",
                                         "--workload",  "fixed",
                                         "--requests",  "2",
                                         "--set",       "generator.model.layers=2",
                                         "--set",       "generator.workload.prompt_tokens=3000",
                                         "--set",       "generator.workload.output_tokens=1100",
                                         "--set",       "generator.locality.poor_layers=1"});
  REQUIRE(gen.status == 0);

  const spin::config::Config with_generator = load_config_text(kModel + kGenerator, "run.yaml");
  REQUIRE(with_generator.trace.generator);
  CHECK_FALSE(with_generator.trace.path);
  const auto source = spin::sim::open_trace_source(with_generator);
  const spin::trace::FileSource file(dir / "g.spt");
  CHECK(source->header() == file.header());
  CHECK(spin::trace::materialize(*source, 0, 2) == spin::trace::materialize(file, 0, 2));

  spin::sim::ReplayOptions options;
  options.threads = 1;
  const auto from_generator = spin::sim::replay(*source, options);
  const auto from_file = spin::sim::replay(file, options);
  CHECK(from_generator.total.accesses > 0);
  CHECK(from_generator.total.accesses == from_file.total.accesses);
  CHECK(from_generator.total.hits == from_file.total.hits);
  CHECK(from_generator.total.misses == from_file.total.misses);
  CHECK(from_generator.total.victims == from_file.total.victims);
  CHECK(from_generator.total.fetched_bytes == from_file.total.fetched_bytes);

  // spin replay over the config prints the same table as over the file.
  spin::test::write_file(dir / "run.yaml", kModel + kGenerator);
  const auto a = spin::test::run_spin({"replay", "--config", (dir / "run.yaml").string()});
  const auto b = spin::test::run_spin(
      {"replay", "--config", (dir / "run.yaml").string(), (dir / "g.spt").string()});
  REQUIRE(a.status == 0);
  REQUIRE(b.status == 0);
  CHECK(a.out == b.out);
}

TEST_CASE(
    "trace source: a config giving both trace.path and trace.generator, or neither, is an "
    "error naming the key",
    "[unit][sim][config]") {
  CHECK_THROWS_WITH(load_config_text(kModel + kGenerator + "  path: t.spt\n", "run.yaml"),
                    Catch::StartsWith("run.yaml:5:5: trace.generator: expected either trace.path "
                                      "or trace.generator, not both"));
  CHECK_THROWS_WITH(load_config_text(kModel + kGenerator, "run.yaml", {"trace.path=t.spt"}),
                    Catch::Contains("trace.generator: expected either trace.path or "
                                    "trace.generator, not both"));
  CHECK(error_of(kModel) ==
        "trace: the config gives no trace source; expected trace.path (a trace file) or "
        "trace.generator (a synthetic generator, docs/trace-generators.md)");
  CHECK(error_of(kModel + "trace: {}\n").starts_with("trace: the config gives no trace source"));
  // Without a source, the resolved config still reloads.
  const auto none = load_config_text(kModel, "run.yaml");
  CHECK(spin::config::to_yaml(load_config_text(spin::config::to_yaml(none), "resolved.yaml")) ==
        spin::config::to_yaml(none));
  // A null value removes a source an earlier layer gave.
  const auto switched = load_config_text(kModel + "trace: {path: t.spt}\n", "run.yaml",
                                         {"trace.path=", "trace.generator.algorithm=seer"});
  CHECK_FALSE(switched.trace.path);
  REQUIRE(switched.trace.generator);
  CHECK(switched.trace.generator->algorithm == "seer");
  CHECK(switched.trace.generator->seed == 1);  // the defaults fill the rest
}

TEST_CASE("trace source: trace.generator is parsed strictly and checked against the run's model",
          "[unit][sim][config]") {
  using Catch::Contains;
  using Catch::StartsWith;
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator, "run.yaml", {"trace.generator.algorithm=shadow"}),
      Contains("trace.generator.algorithm: expected one of shadowkv, retroinfer, seer, quest, "
               "token"));
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator, "run.yaml", {"trace.generator.locality.persistance=1"}),
      Contains("unknown key 'trace.generator.locality.persistance'") && Contains("persistence"));
  CHECK_THROWS_WITH(load_config_text(kModel + kGenerator, "run.yaml",
                                     {"trace.generator.workload.name=longbench"}),
                    Contains("trace.generator.workload.name: expected one of longbench-v2"));
  // The run's model has 2 layers: 3 poorly-local ones do not fit.
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator, "run.yaml", {"trace.generator.locality.poor_layers=3"}),
      Contains("trace.generator.locality.poor_layers") && Contains("exceeds model.layers = 2"));
  CHECK_THROWS_WITH(load_config_text(kModel + kGenerator, "run.yaml",
                                     {"trace.generator.geometry.page_tokens=12"}),
                    Contains("trace.generator.geometry.page_tokens") && Contains("power of two"));
  // Rules between keys, checked after parsing, name where the key was written: its line in the
  // file, its --set option, or where neither writes it, its closest section written.
  std::string yaml = kModel + kGenerator;
  yaml.replace(yaml.find("poor_layers: 1"), 14, "poor_layers: 3");
  CHECK_THROWS_WITH(load_config_text(yaml, "run.yaml"),
                    Contains("run.yaml:8:") && Contains("trace.generator.locality.poor_layers"));
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator, "run.yaml", {"trace.generator.locality.poor_layers=3"}),
      StartsWith("--set trace.generator.locality.poor_layers=3: trace.generator.locality"));
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator + "    geometry: {budget_ratio: 0}\n", "run.yaml"),
      StartsWith("run.yaml:9:") && Contains("the budget is zero"));
  // The generator has no model of its own: the run's is used.
  CHECK_THROWS_WITH(
      load_config_text(kModel + kGenerator, "run.yaml", {"trace.generator.model=qwen3-32b"}),
      Contains("unknown key 'trace.generator.model'"));
}

TEST_CASE(
    "trace source: a generator config round-trips through the resolved YAML and lists its "
    "keys",
    "[unit][sim][config]") {
  const spin::config::Config c = load_config_text(kModel + kGenerator, "run.yaml",
                                                  {"trace.generator.locality.persistence=0.5"});
  const std::string yaml = spin::config::to_yaml(c);
  CHECK(yaml.find("\n  generator:") != std::string::npos);
  CHECK(yaml.find("\n  path:") == std::string::npos);
  CHECK(yaml.find("\n      persistence: 0.5") != std::string::npos);
  const spin::config::Config again = load_config_text(yaml, "resolved.yaml");
  CHECK(spin::config::to_yaml(again) == yaml);
  REQUIRE(again.trace.generator);
  CHECK(again.trace.generator->locality.persistence == 0.5);
  CHECK(again.trace.generator->workload.output_tokens == 1100);

  const auto rows = spin::config::config_keys();
  const auto find = [&](const std::string& path) -> const spin::config::KeyRow* {
    for (const auto& row : rows) {
      if (row.path == path) return &row;
    }
    return nullptr;
  };
  REQUIRE(find("trace.generator"));
  CHECK(find("trace.generator")->type == "a mapping (optional)");
  CHECK(find("trace.generator")->default_value == "(none)");
  REQUIRE(find("trace.generator.locality.persistence"));
  CHECK(find("trace.generator.locality.persistence")->default_value == "0.6");
  REQUIRE(find("trace.generator.algorithm"));
  CHECK(find("trace.generator.algorithm")->default_value == "shadowkv");
  CHECK_FALSE(find("trace.generator.model"));
}
