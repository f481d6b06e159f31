#include "sim/cli/config_commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "common/error.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

int config_show(const Args& args) {
  po::options_description options("Options");
  po::positional_options_description positional;
  add_config_options(options, &positional);
  const auto vm = parse_options(
      args, "config show", "[FILE] [--set KEY=VALUE]...",
      "Prints the resolved configuration: FILE (default: the built-in configs/default.yaml) with\n"
      "presets expanded, the --set overrides applied and every default filled in, each key\n"
      "commented with its description and unit. The output is itself a config file; every run\n"
      "writes the same text next to its output.",
      options, positional);
  if (!vm) return 0;
  std::cout << config::to_yaml(config_from_options(*vm));
  return 0;
}

int config_keys(const Args& args) {
  po::options_description options("Options");
  const auto vm = parse_options(
      args, "config keys", "",
      "Lists every config key: its path (as --set takes it), what its value must be, its default\n"
      "and its description with the unit. A default of (required) means the key has none: give\n"
      "it, or name a preset that does (spin --list models, spin --list hardware).",
      options);
  if (!vm) return 0;
  const std::vector<config::KeyRow> rows = config::config_keys();
  std::size_t path_width = 3, type_width = 4, default_width = 7;
  for (const config::KeyRow& row : rows) {
    path_width = std::max(path_width, row.path.size());
    type_width = std::max(type_width, row.type.size());
    default_width = std::max(default_width, row.default_value.size());
  }
  const auto print = [&](std::string_view path, std::string_view type, std::string_view def,
                         std::string_view description) {
    std::cout << fmt::format("{:<{}}  {:<{}}  {:<{}}  {}\n", path, path_width, type, type_width,
                             def, default_width, description);
  };
  print("KEY", "TYPE", "DEFAULT", "DESCRIPTION");
  for (const config::KeyRow& row : rows) {
    print(row.path, row.type, row.default_value, row.description);
  }
  return 0;
}

std::vector<std::pair<std::string, std::string>> list_models() {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const std::string& name : config::preset_names("models")) {
    const config::ModelConfig m = config::model_preset(name);
    entries.emplace_back(
        name, fmt::format("{}: {} layers, {}/{} query/KV heads of {}, {}, {} KiB of KV per token",
                          m.description, m.layers, m.query_heads, m.kv_heads, m.head_dim,
                          config::name_of(m.dtype), m.kv_bytes_per_token() / 1024));
  }
  return entries;
}

std::vector<std::pair<std::string, std::string>> list_hardware() {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const std::string& name : config::preset_names("hardware")) {
    const config::HardwareConfig h = config::hardware_preset(name);
    entries.emplace_back(
        name, fmt::format("{}: {:.1f} GiB HBM at {} GB/s, {} bf16 TFLOP/s, PCIe {} GB/s to HBM",
                          h.description, h.hbm_gib, h.hbm_bandwidth_gbps, h.bf16_dense_tflops,
                          h.pcie_h2d_gbps));
  }
  return entries;
}

}  // namespace

void add_config_options(po::options_description& options,
                        po::positional_options_description* positional) {
  options.add_options()(
      "config", po::value<std::string>()->value_name("FILE"),
      positional != nullptr
          ? "config file (YAML); also the first positional argument (default: the built-in "
            "configs/default.yaml)"
          : "config file (YAML) (default: the built-in configs/default.yaml)")(
      "set", po::value<std::vector<std::string>>()->composing()->value_name("KEY=VALUE"),
      "override one key after the file is read; repeatable, applied in order. VALUE is YAML: "
      "--set model.layers=48, --set hardware=h200, --set 'hardware.transfer.gather_gbps=[50, "
      "50, 50, 50, 50]'. spin config keys lists the keys and their units");
  if (positional != nullptr) positional->add("config", 1);
}

config::Config config_from_options(const po::variables_map& vm,
                                   std::span<const Shorthand> shorthands,
                                   const std::vector<std::string>& last) {
  std::vector<std::string> sets = overrides_with_shorthands(vm, shorthands);
  sets.insert(sets.end(), last.begin(), last.end());
  try {
    if (vm.count("config")) return config::load_config(vm["config"].as<std::string>(), sets);
    return config::default_config(sets);
  } catch (const InputError& e) {
    throw named_as_typed(e, vm, shorthands);
  }
}

void check_built_in_trace(bool config_file, const config::Config& config, std::string_view name,
                          std::string_view fix) {
  if (config_file || !config.trace.path || std::filesystem::exists(*config.trace.path) ||
      config.trace.path != config::default_config().trace.path)
    return;
  throw InputError(fmt::format(
      "spin {}: the built-in default config replays the bundled sample trace "
      "traces/sample.spt of the source tree, relative to the current folder, and {} does not "
      "exist; run spin in the source tree, or {}",
      name, config.trace.path->string(), fix));
}

void register_config_commands(Registry& registry) {
  registry.add(Command{"config show", "print the resolved config (a file or the built-in default)",
                       config_show});
  registry.add(
      Command{"config keys", "list every config key with its type, default and unit", config_keys});
  registry.add(ListFamily{"models", "model presets (config key model)", list_models});
  registry.add(ListFamily{"hardware", "hardware profiles (config key hardware)", list_hardware});
}

}  // namespace spin::cli
