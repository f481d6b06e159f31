// `spin sim`: the discrete-event serving simulator (sim/simulator.h), and the `modes` list family.
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_sim_commands(Registry& registry);

}  // namespace spin::cli
