// `spin gpu ...` commands of the CUDA backend.
#pragma once

#include "sim/cli/command.h"

namespace spin::exec {

void register_device_commands(cli::Registry& registry);

}  // namespace spin::exec
