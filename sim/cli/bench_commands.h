// `spin bench core`: speed of the policy core on a generated ShadowKV trace, and its metadata
// footprint at growing contexts (docs/benchmarks.md).
#pragma once

#include "sim/cli/command.h"

namespace spin::cli {

void register_bench_commands(Registry& registry);

}  // namespace spin::cli
