#include "common/config/config.h"

#include <fmt/format.h>

#include "common/atomic_file.h"
#include "common/embedded.h"
#include "common/error.h"
#include "common/text.h"

namespace spin::config {
namespace {

constexpr std::string_view kDefaultConfig = "configs/default.yaml";

// What parsing one section at a time cannot check: rules between sections.
void check(const Config& config) {
  if (config.trace.generator)
    gen::validate(*config.trace.generator, config.model, "trace.generator");
}

}  // namespace

std::string read_yaml_file(const std::filesystem::path& file, std::string_view what) {
  const std::string text = read_text_file(file, what);
  if (text.starts_with("\xff\xfe") || text.starts_with("\xfe\xff")) {
    throw InputError(fmt::format("{}: a UTF-16 text file; save it as UTF-8", file.string()));
  }
  if (text.find('\0') != std::string::npos) {
    throw InputError(fmt::format(
        "{}: a binary file, not a YAML {}; a trace goes in --trace or a run config's trace.path",
        file.string(), what));
  }
  return text;
}

Config load_config(const std::filesystem::path& file, const std::vector<std::string>& sets) {
  const std::string text = read_yaml_file(file, "config file");
  return parse_config<Config>(
      text,
      std::make_shared<const Source>(
          Source{file.string(), true, std::filesystem::absolute(file).parent_path()}),
      sets, check);
}

Config load_config_text(std::string_view yaml, std::string_view origin_name,
                        const std::vector<std::string>& sets) {
  return parse_config<Config>(
      yaml, std::make_shared<const Source>(Source{std::string(origin_name), true, {}}), sets,
      check);
}

Config default_config(const std::vector<std::string>& sets) {
  const auto text = embedded_file(kDefaultConfig);
  if (!text) throw InvariantError("configs/default.yaml is not compiled into this binary");
  // Its relative paths resolve as if it were ./configs/default.yaml, where it lives in the source
  // tree, so the built-in and the file on disk give the same config.
  return parse_config<Config>(
      *text,
      std::make_shared<const Source>(Source{fmt::format("{} (built in)", kDefaultConfig), true,
                                            std::filesystem::absolute("configs")}),
      sets, check);
}

ModelConfig model_preset(std::string_view name) { return load_preset<ModelConfig>(name, "model"); }

HardwareConfig hardware_preset(std::string_view name) {
  return load_preset<HardwareConfig>(name, "hardware");
}

std::string to_yaml(const Config& config) {
  return "# spin configuration, resolved: every key with its value, presets expanded and defaults\n"
         "# filled in. `spin config keys` describes the keys; `spin config show FILE` reloads "
         "it.\n" +
         emit_yaml(config);
}

void write_resolved_config(const Config& config, const std::filesystem::path& file) {
  write_file_atomically(file, to_yaml(config), "the resolved config");
}

std::vector<KeyRow> config_keys() { return list_keys(Config{}); }

}  // namespace spin::config
