// Loading configs: presets and their numbers, layering of file and --set, paths, and the
// resolved config every run writes.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "common/config/config.h"
#include "common/embedded.h"
#include "tests/support.h"

using spin::config::Config;
using spin::config::Dtype;
using spin::config::load_config;
using spin::config::load_config_text;
using spin::config::to_yaml;

TEST_CASE("config: model presets have the published shapes", "[unit][config]") {
  const auto qwen14 = spin::config::model_preset("qwen3-14b");
  CHECK(qwen14.layers == 40);
  CHECK(qwen14.query_heads == 40);
  CHECK(qwen14.kv_heads == 8);
  CHECK(qwen14.head_dim == 128);
  CHECK(qwen14.hidden_size == 5120);
  CHECK(qwen14.intermediate_size == 17408);
  CHECK(qwen14.vocab_size == 151936);
  CHECK(qwen14.dtype == Dtype::kBf16);
  CHECK(qwen14.dtype_bytes() == 2);
  CHECK(qwen14.kv_bytes_per_token() == 163840);  // 160 KiB (spin-paper.md)
  CHECK(qwen14.page_bytes(8) == 4096);           // 2 KiB of K and 2 KiB of V

  const auto qwen32 = spin::config::model_preset("qwen3-32b");
  CHECK(qwen32.layers == 64);
  CHECK(qwen32.query_heads == 64);
  CHECK(qwen32.kv_heads == 8);
  CHECK(qwen32.intermediate_size == 25600);

  const auto llama70 = spin::config::model_preset("llama-3.1-70b");
  CHECK(llama70.layers == 80);
  CHECK(llama70.query_heads == 64);
  CHECK(llama70.kv_heads == 8);
  CHECK(llama70.hidden_size == 8192);
  CHECK(llama70.vocab_size == 128256);
  CHECK(llama70.kv_bytes_per_token() == 327680);

  const auto llama8 = spin::config::model_preset("llama-3.1-8b");
  CHECK(llama8.layers == 32);
  CHECK(llama8.query_heads == 32);
  CHECK(llama8.intermediate_size == 14336);
}

TEST_CASE("config: hardware presets carry the reference numbers", "[unit][config]") {
  const auto h100 = spin::config::hardware_preset("h100-sxm");
  CHECK(h100.hbm_bandwidth_gbps == 3350);
  CHECK(h100.pcie_h2d_gbps == 54.9);  // locality-and-transfer.md, measured
  CHECK(h100.pcie_d2h_gbps == 55.2);
  CHECK(h100.hbm_bytes() == 81559ull << 20);
  CHECK(h100.host_memory_bytes() == 256ull << 30);
  CHECK(h100.transfer.page_bytes == std::vector<std::uint64_t>{2048, 8192, 32768, 131072, 524288});
  CHECK(h100.transfer.gather_gbps == std::vector<double>{50.1, 49.3, 50.0, 49.8, 50.3});
  CHECK(h100.transfer.per_page_copy_gbps == std::vector<double>{0.7, 2.6, 9.0, 23.2, 40.8});
  CHECK(h100.transfer.source.starts_with("measured"));

  CHECK(spin::config::hardware_preset("h200").hbm_bandwidth_gbps == 4800);
  CHECK(spin::config::hardware_preset("a100-80gb-pcie").bf16_dense_tflops == 312);
  CHECK(spin::config::hardware_preset("b200").hbm_gib > 170);
  for (const char* name : {"h200", "a100-80gb-pcie", "b200"}) {
    INFO(name);
    CHECK(spin::config::hardware_preset(name).transfer.source.starts_with("estimate"));
  }
}

TEST_CASE("config: every embedded preset is listed and loads", "[unit][config]") {
  CHECK(spin::config::preset_names("models") ==
        std::vector<std::string>{"llama-3.1-70b", "llama-3.1-8b", "qwen3-14b", "qwen3-32b"});
  CHECK(spin::config::preset_names("hardware") ==
        std::vector<std::string>{"a100-80gb-pcie", "b200", "h100-sxm", "h200"});
  for (const auto& model : spin::config::preset_names("models")) {
    for (const auto& hardware : spin::config::preset_names("hardware")) {
      INFO(model << " on " << hardware);
      const Config c =
          load_config_text("model: " + model + "\nhardware: " + hardware + "\n", "run.yaml");
      CHECK(c.model.preset == model);
      CHECK(c.hardware.preset == hardware);
      CHECK_FALSE(c.model.description.empty());
      CHECK_FALSE(c.hardware.description.empty());
      CHECK(to_yaml(load_config_text(to_yaml(c), "resolved.yaml")) == to_yaml(c));
    }
  }
}

TEST_CASE("config: the default config is the bundled file, built in", "[unit][config]") {
  const Config c = spin::config::default_config();
  CHECK(c.seed == 1);
  CHECK(c.model.preset == "qwen3-14b");
  CHECK(c.model.layers == 40);  // as the bundled sample trace
  CHECK(c.model.kv_heads == 8);
  CHECK(c.hardware.preset == "h100-sxm");
  CHECK(c.trace.path == std::filesystem::absolute("traces/sample.spt").lexically_normal());
  CHECK_FALSE(c.trace.generator);
  // The file on disk and the built-in copy give the same config.
  CHECK(to_yaml(load_config(spin::test::source_path("configs/default.yaml"))) == to_yaml(c));
  CHECK(spin::test::read_file(spin::test::source_path("configs/default.yaml")) ==
        *spin::embedded_file("configs/default.yaml"));
}

TEST_CASE("config: keys given next to a preset override it; --set overrides the file",
          "[unit][config]") {
  const std::string yaml = "model:\n  preset: qwen3-14b\n  layers: 20\nhardware: h100-sxm\n";
  const Config c = load_config_text(yaml, "run.yaml");
  CHECK(c.model.layers == 20);
  CHECK(c.model.query_heads == 40);

  CHECK(load_config_text(yaml, "run.yaml", {"model.layers=48"}).model.layers == 48);
  CHECK(load_config_text(yaml, "run.yaml", {"model.layers=48", "model.layers=12"}).model.layers ==
        12);
  // A new preset under the file's explicit keys: the file's layers stay.
  const Config represet = load_config_text(yaml, "run.yaml", {"model.preset=qwen3-32b"});
  CHECK(represet.model.layers == 20);
  CHECK(represet.model.query_heads == 64);
  // The shorthand replaces the whole section.
  const Config replaced = load_config_text(yaml, "run.yaml", {"model=qwen3-32b"});
  CHECK(replaced.model.layers == 64);
  // --set descends into a section the file gave as a preset name.
  const Config into =
      load_config_text("model: qwen3-14b\nhardware: h100-sxm\n", "run.yaml",
                       {"model.dtype=fp8", "hardware.transfer.gather_gbps=[1, 2, 3, 4, 5]"});
  CHECK(into.model.dtype == Dtype::kFp8);
  CHECK(into.model.kv_bytes_per_token() == 81920);
  CHECK(into.model.preset == "qwen3-14b");
  CHECK(into.hardware.transfer.gather_gbps == std::vector<double>{1, 2, 3, 4, 5});
  CHECK(into.hardware.transfer.page_bytes.size() == 5);
}

TEST_CASE("config: a model given inline without a preset needs every shape key", "[unit][config]") {
  const Config c = load_config_text(
      "model:\n  layers: 2\n  query_heads: 4\n  kv_heads: 2\n  head_dim: 64\n  hidden_size: 256\n"
      "  intermediate_size: 512\n  vocab_size: 1000\nhardware: h100-sxm\n",
      "run.yaml");
  CHECK(c.model.preset.empty());
  CHECK(c.model.dtype == Dtype::kBf16);  // the default
  CHECK(c.model.kv_bytes_per_token() == 2ull * 2 * 2 * 64 * 2);
}

TEST_CASE("config: relative paths are relative to the config file's folder", "[unit][config]") {
  spin::test::TempDir dir;
  std::filesystem::create_directory(dir / "sub");
  spin::test::write_file(dir / "sub" / "run.yaml",
                         "model: qwen3-14b\nhardware: h100-sxm\ntrace: {path: ../t/x.spt}\n");
  const Config c = load_config(dir / "sub" / "run.yaml");
  CHECK(c.trace.path == (dir.path() / "t" / "x.spt").lexically_normal());
  // --set paths are relative to the current directory; absolute ones stay.
  const Config set = load_config(dir / "sub" / "run.yaml", {"trace.path=y.spt"});
  CHECK(set.trace.path == std::filesystem::absolute("y.spt"));
  const Config absolute = load_config(dir / "sub" / "run.yaml", {"trace.path=/data/z.spt"});
  CHECK(absolute.trace.path == "/data/z.spt");
  // The key has no default: a config may name no trace (a command that needs one says so).
  CHECK_FALSE(load_config_text("model: qwen3-14b\nhardware: h100-sxm\n", "run.yaml").trace.path);
}

TEST_CASE("config: the resolved config lists every key and reloads to the same config",
          "[unit][config]") {
  const Config c = load_config_text(
      "seed: 18446744073709551615\nmodel: {preset: llama-3.1-8b, description: \"say "
      "\\\"hi\\\"\\n#2\"}\n"
      "hardware: {preset: a100-80gb-pcie, hbm_gib: 0.1}\ntrace: {path: 'a b/c#d.spt'}\n",
      "run.yaml");
  const std::string yaml = to_yaml(c);
  for (const auto& row : spin::config::config_keys()) {
    if (row.path.starts_with("trace.generator")) continue;  // absent: the config gives a path
    // "hardware.transfer.source" is the line "    source:" (two spaces per level).
    std::string line(1 + 2 * std::count(row.path.begin(), row.path.end(), '.'), ' ');
    line[0] = '\n';
    line += row.path.substr(row.path.rfind('.') + 1);
    line += ':';
    INFO(row.path);
    CHECK(yaml.find(line) != std::string::npos);
  }
  CHECK(yaml.find("  preset: llama-3.1-8b") != std::string::npos);
  CHECK(yaml.find("  layers: 32  ") != std::string::npos);
  CHECK(yaml.find("  hbm_gib: 0.1  ") != std::string::npos);
  CHECK(yaml.find("  pcie_latency_us: 3.0  ") != std::string::npos);
  CHECK(yaml.find("# transformer layers (num_hidden_layers)") != std::string::npos);
  const Config again = load_config_text(yaml, "resolved.yaml");
  CHECK(to_yaml(again) == yaml);
  CHECK(again.seed == c.seed);
  CHECK(again.model.description == "say \"hi\"\n#2");
  CHECK(again.trace.path == c.trace.path);
}

TEST_CASE("config: write_resolved_config writes the resolved YAML atomically", "[unit][config]") {
  spin::test::TempDir dir;
  const Config c = spin::config::default_config({"seed=7"});
  spin::config::write_resolved_config(c, dir / "config.yaml");
  CHECK(spin::test::read_file(dir / "config.yaml") == to_yaml(c));
  CHECK_FALSE(std::filesystem::exists(dir / "config.yaml.partial"));
  CHECK(load_config(dir / "config.yaml").seed == 7);
  // Overwrites an older file; a missing folder is an error naming the path.
  spin::config::write_resolved_config(spin::config::default_config(), dir / "config.yaml");
  CHECK(load_config(dir / "config.yaml").seed == 1);
  try {
    spin::config::write_resolved_config(c, dir / "missing" / "config.yaml");
    FAIL("no error");
  } catch (const spin::InputError& e) {
    CHECK(std::string(e.what()) == "cannot write the resolved config to '" +
                                       (dir / "missing" / "config.yaml.partial").string() +
                                       "': No such file or directory");
  }
}

TEST_CASE("config: config_keys lists every key with its type, default and description",
          "[unit][config]") {
  const auto rows = spin::config::config_keys();
  const auto find = [&](const std::string& path) {
    for (const auto& row : rows) {
      if (row.path == path) return row;
    }
    FAIL("no key " << path);
    return rows.front();
  };
  CHECK(rows.front().path == "seed");
  CHECK(find("seed").type == "an integer >= 0");
  CHECK(find("seed").default_value == "1");
  CHECK(find("model").type == "a preset name or a mapping");
  CHECK(find("model.layers").default_value == "(required)");
  CHECK(find("model.dtype").type == "one of bf16, fp16, fp8");
  CHECK(find("model.dtype").default_value == "bf16");
  CHECK(find("hardware.hbm_gib").type == "a number > 0 and <= 1000000");
  CHECK(find("hardware.transfer.page_bytes").type == "a list of integers >= 1");
  CHECK(find("hardware.transfer.gather_gbps").type == "a list of numbers >= 0.001 and <= 1000000");
  CHECK(find("trace").type == "a mapping");
  CHECK(find("trace.path").type == "a path (optional)");
  CHECK(find("trace.path").default_value == "(none)");
  for (const auto& row : rows) {
    INFO(row.path);
    CHECK_FALSE(row.description.empty());
  }
}
