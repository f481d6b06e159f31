#include <cstring>

#include "exec/cuda_check.h"
#include "exec/device.h"

namespace spin::exec {
namespace {

__global__ void probe_kernel(std::int64_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<std::int64_t>(i) * i + 1;
}

int attribute(cudaDeviceAttr attr, int ordinal) {
  int value = 0;
  SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, ordinal));
  return value;
}

}  // namespace

int device_count(char* why, std::size_t why_bytes) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why != nullptr && why_bytes > 0) {
      std::strncpy(why, cudaGetErrorString(err), why_bytes - 1);
      why[why_bytes - 1] = '\0';
    }
    cudaGetLastError();  // clear the sticky error state of the failed query
    return 0;
  }
  return count;
}

DeviceInfo query_device(int ordinal) {
  cudaDeviceProp prop{};
  SPIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  DeviceInfo info{};
  std::memcpy(info.name, prop.name, sizeof(info.name) - 1);
  info.ordinal = ordinal;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.hbm_bytes = prop.totalGlobalMem;
  info.hbm_bus_width_bits = attribute(cudaDevAttrGlobalMemoryBusWidth, ordinal);
  info.hbm_clock_khz = attribute(cudaDevAttrMemoryClockRate, ordinal);
  info.can_map_host_memory = attribute(cudaDevAttrCanMapHostMemory, ordinal);
  return info;
}

void run_probe_kernel(int ordinal, std::int64_t* out, int n) {
  SPIN_CUDA_CHECK(cudaSetDevice(ordinal));
  std::int64_t* d_out = nullptr;
  SPIN_CUDA_CHECK(cudaMalloc(&d_out, sizeof(std::int64_t) * n));
  SPIN_CUDA_CHECK(cudaMemset(d_out, 0xff, sizeof(std::int64_t) * n));  // poison
  probe_kernel<<<(n + 255) / 256, 256>>>(d_out, n);
  SPIN_CUDA_CHECK_LAUNCH();
  SPIN_CUDA_CHECK(cudaMemcpy(out, d_out, sizeof(std::int64_t) * n, cudaMemcpyDeviceToHost));
  SPIN_CUDA_CHECK(cudaFree(d_out));
}

}  // namespace spin::exec
