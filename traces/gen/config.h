// The generator's config as `spin trace gen` reads it (docs/trace-generators.md).
//
// The generator's own keys are gen::GeneratorConfig (common/trace/generator_config.h), which a run
// config also mounts under `trace.generator`. A `spin trace gen --config FILE` holds them under
// `generator:`, next to `generator.model`, the model traced: a config::ModelConfig like the run
// config's `model` (a preset name, or a preset plus the keys to change, or every key), Qwen3-14B
// when not given.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/config/model.h"
#include "common/trace/generator_config.h"

namespace spin::gen {

// The model traced when a generator config names none (the default run's).
inline constexpr std::string_view kDefaultModel = "qwen3-14b";

// config::model_preset(kDefaultModel).
config::ModelConfig default_model();

// A generator and the model it traces: the `generator:` section of `spin trace gen`.
struct TraceGenConfig {
  config::ModelConfig model = default_model();
  GeneratorConfig generator;

  template <class V>
  void visit(V& v) {
    v.field("model", model,
            "the model traced: a preset name (spin --list models) or its keys, as the run "
            "config's model; default qwen3-14b");
    generator.visit(v);
  }
};

// A YAML file whose `generator:` key holds a TraceGenConfig (what --config takes).
struct GeneratorFile {
  TraceGenConfig generator;
  template <class V>
  void visit(V& v) {
    v.field("generator", generator, "the synthetic trace generator");
  }
};

// Parses a config: `yaml` (a document with a `generator:` key; empty = all defaults) named
// `origin` in messages, then each --set option ("generator.workload.requests=4") in order, over
// the default model; then validate(). Errors name the key path under "generator".
TraceGenConfig parse_generator_config(std::string_view yaml, std::string_view origin,
                                      const std::vector<std::string>& sets);
// The same, reading `file`.
TraceGenConfig load_generator_config(const std::string& file, const std::vector<std::string>& sets);

}  // namespace spin::gen
