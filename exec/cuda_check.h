// Checked CUDA calls: every CUDA runtime call goes through SPIN_CUDA_CHECK, and every kernel
// launch is followed by SPIN_CUDA_CHECK_LAUNCH(), so a failure names the call, file and line.
#pragma once

#include <cuda_runtime.h>

namespace spin::exec {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);

}  // namespace spin::exec

#define SPIN_CUDA_CHECK(expr)                                                    \
  do {                                                                           \
    const cudaError_t spin_cuda_err_ = (expr);                                   \
    if (spin_cuda_err_ != cudaSuccess)                                           \
      ::spin::exec::throw_cuda_error(spin_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define SPIN_CUDA_CHECK_LAUNCH() SPIN_CUDA_CHECK(cudaGetLastError())
