// The commands of the CUDA backend (`spin gpu info`, `spin bench gpu`). The names and summaries
// are declared here for every build: a build without CUDA registers each as a command that says
// it needs CUDA (sim/cli/registry.cpp); register_device_commands, CUDA builds only, registers the
// real ones.
#pragma once

#include <array>
#include <string_view>

#include "sim/cli/command.h"

namespace spin::exec {

struct DeviceCommandName {
  std::string_view name;
  std::string_view summary;
};
inline constexpr std::array<DeviceCommandName, 2> kDeviceCommands{{
    {"gpu info", "list the CUDA devices of this machine"},
    {"bench gpu",
     "measure gather-copy vs DMA copies, the residency kernel, decode and prefill attention, "
     "selection and the dense GEMMs on the GPU"},
}};

void register_device_commands(cli::Registry& registry);

}  // namespace spin::exec
