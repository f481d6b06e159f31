// `spin config show`, `spin config keys` and the model and hardware lists, run in-process.
#include <catch2/catch.hpp>
#include <string>

#include "common/config/config.h"
#include "tests/support.h"

using spin::test::run_spin;

TEST_CASE("config cli: config show prints the resolved default config", "[unit][config]") {
  const auto r = run_spin({"config", "show"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(r.out == spin::config::to_yaml(spin::config::default_config()));
}

TEST_CASE("config cli: config show reads a file and applies --set in order", "[unit][config]") {
  spin::test::TempDir dir;
  spin::test::write_file(dir / "run.yaml", "model: qwen3-14b\nhardware: h200\nseed: 5\n");
  const auto r = run_spin({"config", "show", (dir / "run.yaml").string(), "--set",
                           "model.layers=48", "--set", "seed=9", "--set", "seed=10"});
  CHECK(r.status == 0);
  CHECK(r.out == spin::config::to_yaml(
                     spin::config::load_config(dir / "run.yaml", {"model.layers=48", "seed=10"})));
  CHECK(r.out.find("\n  layers: 48 ") != std::string::npos);
  CHECK(r.out.find("\nseed: 10 ") != std::string::npos);
  CHECK(r.out.find("\n  preset: h200 ") != std::string::npos);
}

TEST_CASE("config cli: a bad --set is exit status 2 with the message", "[unit][config]") {
  const auto r = run_spin({"config", "show", "--set", "model.layers=0"});
  CHECK(r.status == 2);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "spin: error: --set model.layers=0: model.layers: 0 is out of range; expected an integer "
        ">= 1 and <= 65535\n");
  const auto missing = run_spin({"config", "show", "/nonexistent.yaml"});
  CHECK(missing.status == 2);
  CHECK(missing.err ==
        "spin: error: cannot read config file '/nonexistent.yaml': No such file or directory\n");
}

TEST_CASE("config cli: --help explains the options with defaults", "[unit][config]") {
  const auto r = run_spin({"config", "show", "--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find("Usage: spin config show [FILE] [--set KEY=VALUE]...") != std::string::npos);
  CHECK(r.out.find("--set KEY=VALUE") != std::string::npos);
  CHECK(r.out.find("default: the built-in") != std::string::npos);
  const auto keys = run_spin({"config", "keys", "--help"});
  CHECK(keys.status == 0);
  CHECK(keys.out.find("Usage: spin config keys") != std::string::npos);
}

TEST_CASE("config cli: config keys prints a table of every key", "[unit][config]") {
  const auto r = run_spin({"config", "keys"});
  CHECK(r.status == 0);
  CHECK(r.out.rfind("KEY ", 0) == 0);
  for (const auto& row : spin::config::config_keys()) {
    INFO(row.path);
    CHECK(r.out.find("\n" + row.path + " ") != std::string::npos);
  }
}

TEST_CASE("config cli: --list models and --list hardware describe each preset", "[unit][config]") {
  const auto models = run_spin({"--list", "models"});
  CHECK(models.status == 0);
  CHECK(models.out.find("qwen3-14b      Qwen3-14B, dense, grouped-query attention: 40 layers, "
                        "40/8 query/KV heads of 128, bf16, 160 KiB of KV per token\n") !=
        std::string::npos);
  const auto hardware = run_spin({"--list", "hardware"});
  CHECK(hardware.status == 0);
  CHECK(hardware.out.find("h100-sxm        NVIDIA H100 SXM 80GB, HBM3, PCIe Gen5 x16: 79.6 GiB "
                          "HBM at 3350 GB/s, 989.5 bf16 TFLOP/s, PCIe 54.9 GB/s to HBM\n") !=
        std::string::npos);
}
