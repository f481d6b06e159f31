// SPIN_HD: the one macro that marks a function as callable from host and device code, and the
// few bit operations whose fast form differs between the two.
//
// Device-capable headers (STYLE.md, "one policy, two compilers") include only <cstdint>,
// <cstddef>, <type_traits>, <limits> and other device-capable headers of ours, and mark every
// function SPIN_HD. This is the only place in the project that tests __CUDACC__ or __CUDA_ARCH__.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SPIN_HD __host__ __device__ inline
#else
#define SPIN_HD inline
#endif

namespace spin {

// The index of the lowest set bit of v != 0: one instruction on either side (__ffs on the device,
// tzcnt or bsf on x86 hosts).
SPIN_HD std::uint32_t lowest_bit(std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__ffs(static_cast<int>(v)) - 1);
#else
  return static_cast<std::uint32_t>(__builtin_ctz(v));
#endif
}

}  // namespace spin
