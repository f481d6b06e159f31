// SPIN_HD: the one macro that marks a function as callable from host and device code.
//
// Device-capable headers (STYLE.md, "one policy, two compilers") include only <cstdint>,
// <cstddef>, <type_traits>, <limits> and other device-capable headers of ours, and mark every
// function SPIN_HD. This is the only place in the project that tests __CUDACC__.
#pragma once

#if defined(__CUDACC__)
#define SPIN_HD __host__ __device__ inline
#else
#define SPIN_HD inline
#endif
