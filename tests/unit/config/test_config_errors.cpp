// Every kind of bad config input, with the exact message it gives: where (file:line:column or the
// --set option), the key path, and what was expected.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "common/error.h"

namespace {

// The message of the InputError that loading `yaml` (as run.yaml) with `sets` throws.
std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    spin::config::load_config_text(yaml, "run.yaml", sets);
  } catch (const spin::InputError& e) {
    return e.what();
  }
  FAIL("no InputError for:\n" << yaml);
  return "";
}

// A valid config with `model_lines` as the model section (indented by two spaces).
std::string with_model(const std::string& model_lines) {
  return "model:\n" + model_lines + "hardware: h100-sxm\n";
}

const std::string kValid = "model: qwen3-14b\nhardware: h100-sxm\n";

}  // namespace

TEST_CASE("config: unknown key names file, line:column, key path and the closest key",
          "[unit][config]") {
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layerz: 48\n")) ==
        "run.yaml:3:3: unknown key 'model.layerz'; did you mean 'model.layers'?");
  CHECK(error_of("hardware:\n  preset: h100-sxm\n  transfer:\n    gather_gpbs: [1]\nmodel: "
                 "qwen3-14b\n") ==
        "run.yaml:4:5: unknown key 'hardware.transfer.gather_gpbs'; did you mean "
        "'hardware.transfer.gather_gbps'?");
  CHECK(error_of("modle: qwen3-14b\nhardware: h100-sxm\n") ==
        "run.yaml:1:1: unknown key 'modle'; did you mean 'model'?");
}

TEST_CASE("config: unknown key with no close match lists the valid keys", "[unit][config]") {
  // Other sections follow `trace`, so only the start of the list is checked here.
  CHECK_THAT(
      error_of(kValid + "frobnicate: 1\n"),
      Catch::StartsWith(
          "run.yaml:3:1: unknown key 'frobnicate'; valid keys are: seed, model, hardware, trace"));
  CHECK(error_of("trace: {format: x}\n" + kValid) ==
        "run.yaml:1:9: unknown key 'trace.format'; valid keys in trace are: path, generator");
}

TEST_CASE("config: a wrong type names the key and what was expected", "[unit][config]") {
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: forty\n")) ==
        "run.yaml:3:11: model.layers: expected an integer >= 1 and <= 65535, got 'forty'");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: 1.5\n")) ==
        "run.yaml:3:11: model.layers: expected an integer >= 1 and <= 65535, got '1.5'");
  CHECK(
      error_of(with_model("  preset: qwen3-14b\n  layers: \"40\"\n")) ==
      "run.yaml:3:11: model.layers: expected an integer >= 1 and <= 65535, got the string \"40\"");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: [40]\n")) ==
        "run.yaml:3:11: model.layers: expected an integer >= 1 and <= 65535, got a list");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers:\n")) ==
        "run.yaml:3:3: model.layers: expected an integer >= 1 and <= 65535, got nothing");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, hbm_gib: lots}\n") ==
        "run.yaml:2:39: hardware.hbm_gib: expected a number > 0 and <= 1000000, got 'lots'");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, hbm_gib: .inf}\n") ==
        "run.yaml:2:39: hardware.hbm_gib: expected a number > 0 and <= 1000000, got '.inf'");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  description: {a: 1}\n")) ==
        "run.yaml:3:16: model.description: expected a string, got a mapping");
  CHECK(error_of(kValid + "trace: {path: \"\"}\n") ==
        "run.yaml:3:15: trace.path: expected a path, got the string \"\"");
}

TEST_CASE("config: out-of-range values name the value and the range", "[unit][config]") {
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: 0\n")) ==
        "run.yaml:3:11: model.layers: 0 is out of range; expected an integer >= 1 and <= 65535");
  CHECK(error_of("seed: -1\n" + kValid) ==
        "run.yaml:1:7: seed: -1 is out of range; expected an integer >= 0");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  head_dim: 4294967296\n")) ==
        "run.yaml:3:13: model.head_dim: 4294967296 is out of range; expected an integer >= 1 (at "
        "most 4294967295)");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: 65536\n")) ==
        "run.yaml:3:11: model.layers: 65536 is out of range; expected an integer >= 1 and <= "
        "65535");
  CHECK(error_of("seed: 18446744073709551616\n" + kValid) ==
        "run.yaml:1:7: seed: 18446744073709551616 is out of range; expected an integer >= 0 (at "
        "most 18446744073709551615)");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, hbm_gib: 0}\n") ==
        "run.yaml:2:39: hardware.hbm_gib: 0 is out of range; expected a number > 0 and <= "
        "1000000");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, pcie_latency_us: -0.5}\n") ==
        "run.yaml:2:47: hardware.pcie_latency_us: -0.5 is out of range; expected a number >= 0 "
        "and <= 10000000");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, hbm_gib: 1e999}\n") ==
        "run.yaml:2:39: hardware.hbm_gib: 1e999 is out of range; expected a number > 0 and <= "
        "1000000");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, hbm_gib: 1e-999}\n") ==
        "run.yaml:2:39: hardware.hbm_gib: 1e-999 is too close to 0 for a double (write 0); "
        "expected a number > 0 and <= 1000000");
  // The upper bounds keep modelled times far from the clock's 2^63 ns.
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: h100-sxm, pcie_h2d_gbps: 1e-12}\n") ==
        "run.yaml:2:45: hardware.pcie_h2d_gbps: 1e-12 is out of range; expected a number >= "
        "0.001 and <= 1000000");
}

TEST_CASE("config: a bad enum value lists the allowed values and the closest one",
          "[unit][config]") {
  CHECK(error_of(with_model("  preset: qwen3-14b\n  dtype: bf61\n")) ==
        "run.yaml:3:10: model.dtype: unknown value 'bf61'; did you mean 'bf16'? (expected one of "
        "bf16, fp16, fp8)");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  dtype: int4\n")) ==
        "run.yaml:3:10: model.dtype: expected one of bf16, fp16, fp8, got 'int4'");
}

TEST_CASE("config: list values are checked as lists and element by element", "[unit][config]") {
  const std::string head = "model: qwen3-14b\nhardware:\n  preset: h100-sxm\n  transfer:\n";
  CHECK(error_of(head + "    page_bytes: 2048\n") ==
        "run.yaml:5:17: hardware.transfer.page_bytes: expected a list of integers >= 1, got "
        "'2048'");
  CHECK(error_of(head + "    page_bytes: [2048, x, 3]\n") ==
        "run.yaml:5:24: hardware.transfer.page_bytes[1]: expected an integer >= 1, got 'x'");
  CHECK(error_of(head + "    gather_gbps: [1, 0, 1, 1, 1]\n") ==
        "run.yaml:5:22: hardware.transfer.gather_gbps[1]: 0 is out of range; expected a number >= "
        "0.001 and <= 1000000");
}

TEST_CASE("config: rules over several keys name the key and the rule", "[unit][config]") {
  const std::string head = "model: qwen3-14b\nhardware:\n  preset: h100-sxm\n  transfer:\n";
  CHECK(error_of(head + "    page_bytes: [2048, 1024, 4096, 8192, 16384]\n") ==
        "run.yaml:5:17: hardware.transfer.page_bytes: expected a non-empty list in increasing "
        "order");
  CHECK(error_of(head + "    gather_gbps: [50, 50]\n") ==
        "run.yaml:5:18: hardware.transfer.gather_gbps: expected one value per entry of "
        "page_bytes");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  kv_heads: 7\n")) ==
        "run.yaml:3:13: model.kv_heads: expected a divisor of query_heads (each KV head serves a "
        "group of query heads)");
}

TEST_CASE("config: a rule broken at a preset's value names the keys set over the preset",
          "[unit][config]") {
  CHECK(error_of(with_model("  preset: qwen3-14b\n  query_heads: 12\n")) ==
        "configs/models/qwen3-14b.yaml:7:11: model.kv_heads: expected a divisor of query_heads "
        "(each KV head serves a group of query heads); model.kv_heads comes from preset "
        "'qwen3-14b', set over it: model.query_heads at run.yaml:3:16");
  CHECK(error_of(kValid, {"model.layers=4", "model.query_heads=12"}) ==
        "configs/models/qwen3-14b.yaml:7:11: model.kv_heads: expected a divisor of query_heads "
        "(each KV head serves a group of query heads); model.kv_heads comes from preset "
        "'qwen3-14b', set over it: --set model.layers=4, --set model.query_heads=12");
  // Hardware presets and their nested sections go the same way.
  CHECK(error_of("model: qwen3-14b\nhardware:\n  preset: h100-sxm\n  transfer:\n    page_bytes: "
                 "[1, 2]\n") ==
        "configs/hardware/h100-sxm.yaml:24:23: hardware.transfer.gather_gbps: expected one value "
        "per entry of page_bytes; hardware.transfer.gather_gbps comes from preset 'h100-sxm', set "
        "over it: hardware.transfer.page_bytes at run.yaml:5:17");
}

TEST_CASE("config: duplicate keys are errors naming both places", "[unit][config]") {
  CHECK(error_of("seed: 1\n" + kValid + "seed: 2\n") ==
        "run.yaml:4:1: duplicate key 'seed' (first given at run.yaml:1:1)");
  CHECK(error_of(with_model("  preset: qwen3-14b\n  layers: 40\n  layers: 48\n")) ==
        "run.yaml:4:3: duplicate key 'model.layers' (first given at run.yaml:3:3)");
}

TEST_CASE("config: a non-mapping where a mapping is expected says what is accepted",
          "[unit][config]") {
  CHECK(error_of("- seed\n- model\n") ==
        "run.yaml:1:1: expected a mapping of config keys, got a list");
  CHECK(error_of("just text\n") ==
        "run.yaml:1:1: expected a mapping of config keys, got 'just text'");
  CHECK(
      error_of("model: [qwen3-14b]\nhardware: h100-sxm\n") ==
      "run.yaml:1:8: model: expected a preset name (spin --list models) or a mapping of keys, got "
      "a list");
  CHECK(error_of(kValid + "trace: traces/x.spt\n") ==
        "run.yaml:3:8: trace: expected a mapping of keys, got 'traces/x.spt'");
  CHECK(
      error_of("model:\nhardware: h100-sxm\n") ==
      "run.yaml:1:1: model: expected a preset name (spin --list models) or a mapping of keys, got "
      "nothing");
}

TEST_CASE("config: an empty file or one of only comments is an error", "[unit][config]") {
  const std::string expected =
      "run.yaml: the config is empty; expected a mapping of config keys (spin config keys lists "
      "them, spin config show prints a complete config)";
  CHECK(error_of("") == expected);
  CHECK(error_of("# nothing here\n\n") == expected);
  CHECK(error_of("---\n") == expected);
}

TEST_CASE("config: missing keys and sections are named with what would satisfy them",
          "[unit][config]") {
  CHECK(error_of("model: qwen3-14b\n") ==
        "run.yaml:1:1: missing key 'hardware'; expected a preset name (spin --list hardware) or a "
        "mapping of keys");
  CHECK(error_of(with_model("  layers: 40\n")) ==
        "run.yaml:2:3: missing key 'model.query_heads': attention query heads per layer "
        "(num_attention_heads); give it, or name a preset (spin --list models)");
  CHECK(error_of("model: qwen3-14b\nhardware: {preset: \"\", hbm_gib: 80}\n") ==
        "run.yaml:2:11: missing key 'hardware.hbm_bandwidth_gbps': peak HBM bandwidth, GB/s "
        "(datasheet); give it, or name a preset (spin --list hardware)");
}

TEST_CASE("config: an unknown preset names the closest one", "[unit][config]") {
  CHECK(error_of("model: qwen3-41b\nhardware: h100-sxm\n") ==
        "run.yaml:1:8: model: unknown preset 'qwen3-41b'; did you mean 'qwen3-14b'? (spin --list "
        "models)");
  CHECK(error_of("model: {preset: gpt-5}\nhardware: h100-sxm\n") ==
        "run.yaml:1:17: model: unknown preset 'gpt-5'; known presets: llama-3.1-70b, "
        "llama-3.1-8b, qwen3-14b, qwen3-32b (spin --list models)");
  CHECK(error_of("model: {preset: [a]}\nhardware: h100-sxm\n") ==
        "run.yaml:1:17: model.preset: expected a preset name (spin --list models), got a list");
}

TEST_CASE("config: YAML syntax errors, tags, extra documents and deep nesting are located",
          "[unit][config]") {
  CHECK(error_of("model:\n  layers: 40\n   dtype: bf16\n") ==
        "run.yaml:3:9: invalid YAML: illegal map value");
  // A tab in an indentation is named, whatever yaml-cpp calls the error.
  CHECK(error_of("serving:\n\tmode: dense\n") ==
        "run.yaml:2:6: invalid YAML: illegal map value (line 2 indents with a tab; YAML indents "
        "with spaces only)");
  CHECK(error_of("serving:\n  mode: dense\n\tmax_batch_requests: 4\n")
            .find("(line 3 indents with a tab") != std::string::npos);
  CHECK(error_of("seed: !!int 5\n" + kValid) ==
        "run.yaml:1:7: YAML tags are not supported (found 'tag:yaml.org,2002:int'); write the "
        "value alone");
  CHECK(error_of(kValid + "---\nseed: 2\n") ==
        "run.yaml:3:1: a second YAML document starts here; a config file holds one document");
  CHECK(error_of(std::string("seed: ") + std::string(600, '[') + std::string(600, ']') + "\n") ==
        "run.yaml:1:1207: invalid YAML: values nested too deeply");
  CHECK(error_of("? [a, b]\n: 1\n") ==
        "run.yaml:1:3: a mapping key must be a plain name, not a list or a mapping");
}

TEST_CASE("config: aliases expand, but not past a size limit or into themselves",
          "[unit][config]") {
  const auto config = spin::config::load_config_text(
      "model: &name qwen3-32b\nhardware: h100-sxm\ntrace: {path: *name}\n", "run.yaml");
  CHECK(config.model.layers == 64);
  CHECK(config.trace.path->filename() == "qwen3-32b");
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 5; ++i) {
    bomb += std::string("a") + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) bomb += (j ? ", *a" : "*a") + std::to_string(i - 1);
    bomb += "]\n";
  }
  CHECK(error_of(bomb) ==
        "run.yaml:5:45: the document holds more than 100000 values (aliases "
        "expanding?)");
  CHECK(error_of("a: &a [*a]\n") ==
        "run.yaml:1:8: this alias refers to an anchor whose value is not complete here");
}

TEST_CASE("config: --set errors name the option instead of a file position", "[unit][config]") {
  CHECK(error_of(kValid, {"model.layers=0"}) ==
        "--set model.layers=0: model.layers: 0 is out of range; expected an integer >= 1 and <= "
        "65535");
  CHECK(error_of(kValid, {"model.layerz=48"}) ==
        "--set model.layerz=48: unknown key 'model.layerz'; did you mean 'model.layers'?");
  CHECK(error_of(kValid, {"model.layers"}) ==
        "--set model.layers: expected KEY=VALUE, e.g. --set model.layers=40");
  CHECK(error_of(kValid, {"model..layers=1"}) ==
        "--set model..layers=1: 'model..layers' is not a key path; expected names joined by dots, "
        "e.g. model.layers");
  CHECK(error_of(kValid, {"=1"}) ==
        "--set =1: '' is not a key path; expected names joined by dots, e.g. model.layers");
  CHECK(error_of(kValid, {"model.layers=[1"}) ==
        "--set model.layers=[1: invalid YAML: end of sequence flow not found");
  CHECK(error_of(kValid, {"model.dtype="}) ==
        "--set model.dtype=: model.dtype: expected one of bf16, fp16, fp8, got nothing");
  CHECK(error_of(kValid, {"trace=x.spt"}) ==
        "--set trace=x.spt: trace: expected a mapping of keys, got 'x.spt'");
  CHECK(error_of(kValid, {"hardware=h300"}) ==
        "--set hardware=h300: hardware: unknown preset 'h300'; did you mean 'h200'? (spin --list "
        "hardware)");
  CHECK(error_of(kValid, {"seed.value=1"}) ==
        "--set seed.value=1: seed: expected an integer >= 0, got a mapping");
}

TEST_CASE("config: a missing or unreadable file is an error naming the path", "[unit][config]") {
  try {
    spin::config::load_config("/nonexistent/run.yaml");
    FAIL("no error");
  } catch (const spin::InputError& e) {
    CHECK(std::string(e.what()) ==
          "cannot read config file '/nonexistent/run.yaml': No such file or directory");
  }
  try {
    spin::config::load_config("/tmp");
    FAIL("no error");
  } catch (const spin::InputError& e) {
    CHECK(std::string(e.what()) == "cannot read config file '/tmp': it is a directory");
  }
}
