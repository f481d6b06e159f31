#include "exec/device_commands.h"

#include <fmt/format.h>

#include <iostream>

#include "common/error.h"
#include "exec/device.h"
#include "exec/gpu_bench.h"

namespace spin::exec {
namespace {

int gpu_info(const cli::Args& args) {
  namespace po = boost::program_options;
  po::options_description opts("Options");
  if (!cli::parse_options(
          args, "gpu info", "[options]",
          "Lists the CUDA devices this machine exposes: name, compute capability, SMs, "
          "HBM size and bus, and whether mapped pinned host memory (the gather-copy "
          "path) is supported.",
          opts))
    return 0;
  char why[256] = "";
  const int count = device_count(why, sizeof(why));
  if (count == 0)
    throw InputError(fmt::format("no CUDA device is visible ({})", why[0] ? why : "count is 0"));
  for (int i = 0; i < count; ++i) {
    const DeviceInfo d = query_device(i);
    std::cout << fmt::format(
        "device {}: {}  sm_{}{}  {} SMs  HBM {:.1f} GiB, {}-bit bus at {} MHz  mapped host memory: "
        "{}\n",
        d.ordinal, d.name, d.cc_major, d.cc_minor, d.sm_count,
        static_cast<double>(d.hbm_bytes) / (1024.0 * 1024 * 1024), d.hbm_bus_width_bits,
        d.hbm_clock_khz / 1000, d.can_map_host_memory ? "yes" : "no");
  }
  return 0;
}

}  // namespace

void register_device_commands(cli::Registry& registry) {
  static_assert(kDeviceCommands[0].name == "gpu info" && kDeviceCommands[1].name == "bench gpu");
  const auto add = [&](const DeviceCommandName& command, int (*run)(const cli::Args&)) {
    registry.add(cli::Command{std::string(command.name), std::string(command.summary), run});
  };
  add(kDeviceCommands[0], gpu_info);
  add(kDeviceCommands[1], bench_gpu);
}

}  // namespace spin::exec
