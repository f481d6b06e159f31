// `spin trace gen`, `spin trace stats`, `spin bench gen` and the list families
// `trace-algorithms` and `workloads` (docs/trace-generators.md).
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_gen_commands(Registry& registry);

}  // namespace spin::cli
