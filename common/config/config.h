// The configuration of a run: typed sections read from YAML in one place
// (docs/configuration.md).
//
// A config file is a YAML mapping whose top-level keys are the sections of Config. Every key is
// declared once, in its section's visit() (common/config/schema.h); that declaration drives
// strict parsing, `--set KEY=VALUE` overrides, the resolved YAML every run writes next to its
// output, and `spin config keys`. To add a section: write a struct with defaults and a visit()
// (next to the component that uses it), add a member to Config and one v.field() line to
// Config::visit().
//
// Errors in what the user gave are spin::InputError naming file:line:column (or the --set option)
// and the key path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/hardware.h"
#include "common/config/model.h"
#include "common/config/schema.h"
#include "common/policy/cache_config.h"
#include "common/serving/serving_config.h"
#include "common/trace/generator_config.h"

namespace spin::config {

// Where the run's selections come from: a trace file or a generator (DESIGN.md §3). Exactly one
// of the two; giving both is an error while parsing, giving neither is an error for a command
// that needs a trace (sim::open_trace_source). A null value (`path: ~`, `--set trace.path=`)
// removes a source that an earlier layer gave, so `--set` can switch from one to the other.
struct TraceConfig {
  std::optional<std::filesystem::path> path;
  std::optional<gen::GeneratorConfig> generator;

  template <class V>
  void visit(V& v) {
    v.field("path", path,
            "trace file to replay; relative to the folder of the config file that gives it (to "
            "the current directory for --set)");
    v.field("generator", generator,
            "a synthetic trace generator to pull selections from instead of a file, for the "
            "run's model (docs/trace-generators.md)");
    v.check("generator",
            "either trace.path or trace.generator, not both (a null value, e.g. --set "
            "trace.path=, removes one)",
            [this] { return !(path && generator); });
  }
};

// Knobs of the simulator itself (not of the modelled system).
struct SimConfig {
  double stream_sampling = 1.0;
  std::uint32_t run_ahead = 128;

  template <class V>
  void visit(V& v) {
    v.field("stream_sampling", stream_sampling,
            "share of each request's layers whose policy is simulated (1 = all, exact; e.g. "
            "0.125); the others are estimated from them (docs/simulator.md, \"Stream sampling\")",
            above(0).at_most(1));
    v.field("run_ahead", run_ahead,
            "steps a layer's policy may run ahead of the simulated time (1 = lockstep); speed "
            "and memory only, the results are the same (docs/simulator.md, \"Running ahead\")",
            at_least(1).at_most(4096));
  }
};

struct Config {
  std::uint64_t seed = 1;
  ModelConfig model;
  HardwareConfig hardware;
  TraceConfig trace;
  policy::CacheConfig cache;
  serving::ServingConfig serving;
  SimConfig sim;

  template <class V>
  void visit(V& v) {
    v.field("seed", seed, "seed of every random choice; same inputs and seed, same outputs");
    v.field("model", model, "the served model: a preset name (spin --list models) or its keys");
    v.field("hardware", hardware,
            "the GPU machine: a preset name (spin --list hardware) or its keys");
    v.field("trace", trace,
            "the attention-access trace the run replays: a file (trace.path) or a generator "
            "(trace.generator)");
    v.field("cache", cache, "the HBM page cache: replacement policy, pools, buffer ratio");
    v.field("serving", serving, "the served system (mode) and the scheduler's batching limits");
    v.field("sim", sim, "the simulator's own knobs (stream sampling)");
  }
};

// The text of a YAML file: an InputError naming the file if it is UTF-16 or binary (a trace, say).
// `what` names it in messages ("config file").
std::string read_yaml_file(const std::filesystem::path& file, std::string_view what);

// Reads a config file, then applies the --set options ("model.layers=40") in order.
Config load_config(const std::filesystem::path& file, const std::vector<std::string>& sets = {});

// The same for YAML text; `origin_name` stands for the file in messages. Relative paths in the
// text are relative to the current directory.
Config load_config_text(std::string_view yaml, std::string_view origin_name,
                        const std::vector<std::string>& sets = {});

// The bundled default run (configs/default.yaml, compiled in) with the --set options applied.
// Its relative paths are resolved as if it were the file ./configs/default.yaml.
Config default_config(const std::vector<std::string>& sets = {});

// A preset of the `model` or `hardware` section (spin --list models, spin --list hardware).
ModelConfig model_preset(std::string_view name);
HardwareConfig hardware_preset(std::string_view name);

// The resolved config as YAML: every key, presets expanded, defaults filled in, each key with its
// description as a comment. Loading it gives back the same Config.
std::string to_yaml(const Config& config);

// Writes to_yaml(config) to `file` atomically (a temporary file in the same folder, then a
// rename), so a reader never sees half a config.
void write_resolved_config(const Config& config, const std::filesystem::path& file);

// Every key path with its type, default and description, in declaration order.
std::vector<KeyRow> config_keys();

}  // namespace spin::config
