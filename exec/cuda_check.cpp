#include "exec/cuda_check.h"

#include <fmt/format.h>

#include <stdexcept>

namespace spin::exec {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw std::runtime_error(fmt::format("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(err),
                                       cudaGetErrorString(err), expr, file, line));
}

}  // namespace spin::exec
