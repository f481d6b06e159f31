#include "sim/trace_match.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"

namespace spin::sim {

void check_trace_matches_model(std::string_view trace_name, const trace::ModelShape& t,
                               const config::ModelConfig& m) {
  std::vector<std::string> diffs;
  std::vector<std::string> sets;  // the --set options that give the config the trace's shape
  const auto compare = [&](std::string_view key, uint32_t in_trace, uint32_t in_config) {
    if (in_trace == in_config) return;
    diffs.push_back(fmt::format("{} {} in the trace, {} in the config", key, in_trace, in_config));
    if (key != "dtype_bytes") sets.push_back(fmt::format("--set model.{}={}", key, in_trace));
  };
  compare("layers", t.layers, m.layers);
  compare("query_heads", t.query_heads, m.query_heads);
  compare("kv_heads", t.kv_heads, m.kv_heads);
  compare("head_dim", t.head_dim, m.head_dim);
  compare("dtype_bytes", t.dtype_bytes, m.dtype_bytes());
  if (diffs.empty()) return;
  if (t.dtype_bytes != m.dtype_bytes()) {
    const auto* d = std::ranges::find_if(config::kDtypeNames, [&](const auto& n) {
      return config::dtype_bytes(n.value) == t.dtype_bytes;
    });
    if (d == config::kDtypeNames.end()) {
      // No config can match: the trace's header is what must change.
      diffs.back() += fmt::format(
          ", and no model.dtype has {}-byte elements (bf16 and fp16 2, fp8 1): dtype_bytes is the "
          "served KV cache's element size, so write the trace with 2 or 1 (traces/README.md)",
          t.dtype_bytes);
    } else {
      sets.push_back(fmt::format("--set model.dtype={}", d->name));
    }
  }
  // A trace of a preset model, run with another preset: the trace's preset is the fix.
  const std::vector<std::string> presets = config::preset_names("models");
  const bool trace_preset =
      m.preset != t.name && std::find(presets.begin(), presets.end(), t.name) != presets.end();
  const std::string how = trace_preset   ? fmt::format(" (e.g. --set model={})", t.name)
                          : sets.empty() ? std::string()
                                         : fmt::format(" (e.g. {})", fmt::join(sets, " "));
  if (m.preset == t.name) {
    // One name, two shapes: one side changed the preset's keys (e.g. trace gen --set
    // generator.model.layers=4).
    throw InputError(fmt::format(
        "trace {} and the config both name model '{}', but with different shapes: {}; use a "
        "config whose model matches the trace{}",
        trace_name, t.name, fmt::join(diffs, "; "), how));
  }
  const std::string config_model =
      m.preset.empty() ? std::string("(inline)") : fmt::format("'{}'", m.preset);
  throw InputError(
      fmt::format("trace {} was recorded for model '{}' but the config's model is {}: {}; use a "
                  "config whose model matches the trace{}",
                  trace_name, t.name, config_model, fmt::join(diffs, "; "), how));
}

}  // namespace spin::sim
