// Checks that a trace was recorded for the model a config describes (layers, query and KV heads,
// head dim, element size), so a run never silently mixes shapes.
#pragma once

#include <string_view>

#include "common/config/model.h"
#include "common/trace/trace.h"

namespace spin::sim {

// Throws InputError naming the trace, both shapes and every field that disagrees.
void check_trace_matches_model(std::string_view trace_name, const trace::ModelShape& trace_model,
                               const config::ModelConfig& model);

}  // namespace spin::sim
