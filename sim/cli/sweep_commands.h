// `spin sweep` and `spin sweep merge`: parameter sweeps (sim/sweep.h, docs/sweeps.md).
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_sweep_commands(Registry& registry);

}  // namespace spin::cli
