// `spin trace info|export|import` and `spin bench trace` (traces/README.md, docs/benchmarks.md).
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_trace_commands(Registry& registry);

}  // namespace spin::cli
