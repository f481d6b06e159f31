// `spin replay` (the policy core alone over a trace) and the `policies` list family.
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_replay_commands(Registry& registry);

}  // namespace spin::cli
