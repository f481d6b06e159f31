// Every `spin` command and `--list` family, registered by explicit calls (STYLE.md, "Plugins").
#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"
#include "exec/device_commands.h"
#include "sim/cli/bench_commands.h"
#include "sim/cli/command.h"
#include "sim/cli/config_commands.h"
#include "sim/cli/gen_commands.h"
#include "sim/cli/replay_commands.h"
#include "sim/cli/sim_commands.h"
#include "sim/cli/sweep_commands.h"
#include "sim/cli/trace_commands.h"
#include "spin_build_config.h"

namespace spin::cli {

void register_commands(Registry& registry) {
  register_bench_commands(registry);
  register_config_commands(registry);
  register_gen_commands(registry);
  register_replay_commands(registry);
  register_sim_commands(registry);
  register_sweep_commands(registry);
  register_trace_commands(registry);
#if SPIN_HAVE_CUDA
  exec::register_device_commands(registry);
#else
  // Without CUDA the device commands still exist, and say how to get them.
  for (const exec::DeviceCommandName& command : exec::kDeviceCommands) {
    const std::string name(command.name);
    registry.add(Command{name, fmt::format("{} (needs a CUDA build)", command.summary),
                         [name](const Args& args) -> int {
                           // Its options are the CUDA build's: only --help is read here.
                           if (std::ranges::find(args, "--help") != args.end() ||
                               std::ranges::find(args, "-h") != args.end()) {
                             parse_options({"--help"}, name, "[options]",
                                           fmt::format("This spin was built without CUDA, so "
                                                       "`spin {}` cannot run.",
                                                       name),
                                           {});
                             return 0;
                           }
                           throw InputError(
                               "this spin was built without CUDA (nvcc was not found when the "
                               "build was configured); rebuild with `meson setup build "
                               "-Dcuda=enabled`");
                         }});
  }
#endif
}

}  // namespace spin::cli
