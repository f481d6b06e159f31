#include "traces/gen/config.h"

#include <fmt/format.h>

#include <memory>

#include "common/config/config.h"
#include "common/text.h"

namespace spin::gen {

config::ModelConfig default_model() { return config::model_preset(kDefaultModel); }

TraceGenConfig parse_generator_config(std::string_view yaml, std::string_view origin,
                                      const std::vector<std::string>& sets) {
  const bool blank = yaml.find_first_not_of(" \t\r\n") == std::string_view::npos;
  // Lowest layer: the default model as a preset name, which a file or --set may extend
  // (generator.model.layers=2) or replace (generator.model=qwen3-32b).
  std::vector<config::Node> trees;
  trees.reserve(sets.size() + 2);
  trees.push_back(config::parse_yaml(
      fmt::format("generator: {{model: {}}}", kDefaultModel),
      std::make_shared<const config::Source>(config::Source{"(the default model)", false, {}})));
  trees.push_back(config::parse_yaml(
      blank ? std::string_view("{}") : yaml,
      std::make_shared<const config::Source>(config::Source{std::string(origin), true, {}})));
  if (trees.back().kind == config::Node::Kind::kNull) config::throw_empty_document(trees.back());
  for (const std::string& set : sets) trees.push_back(config::parse_set_option(set));
  std::vector<const config::Node*> sources;
  for (const config::Node& tree : trees) sources.push_back(&tree);
  GeneratorFile file;
  config::parse_section(file, std::move(sources), "", trees[1].where());
  config::located(trees, [&] { validate(file.generator.generator, file.generator.model); });
  return file.generator;
}

TraceGenConfig load_generator_config(const std::string& file,
                                     const std::vector<std::string>& sets) {
  return parse_generator_config(config::read_yaml_file(file, "generator config file"), file, sets);
}

}  // namespace spin::gen
