// What the CUDA runtime says about the GPUs of this machine. Plain data, no CUDA types, so host
// code (CLI, tests) can use it without CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spin::exec {

struct DeviceInfo {
  char name[256];
  int ordinal;
  int cc_major, cc_minor;  // compute capability (9.0 for H100/H200)
  int sm_count;
  std::size_t hbm_bytes;  // total global memory
  int hbm_bus_width_bits;
  int hbm_clock_khz;
  int can_map_host_memory;  // 1 if mapped pinned host memory works (the gather-copy path)
};

// Number of visible CUDA devices. On a machine without a GPU or driver returns 0 and writes the
// runtime's reason into `why` (at least `why_bytes` bytes) when why != nullptr.
int device_count(char* why = nullptr, std::size_t why_bytes = 0);

// Properties of device `ordinal` (0 <= ordinal < device_count()); throws on a CUDA error.
DeviceInfo query_device(int ordinal);

// Runs a small kernel on device `ordinal` that writes out[i] = i * i + 1 for i < n into device
// memory and copies it back to `out`. Used by the gpu suite to check that kernels built for
// this architecture launch on the card at hand.
void run_probe_kernel(int ordinal, std::int64_t* out, int n);

}  // namespace spin::exec
