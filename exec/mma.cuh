// Device primitives shared by the executor's kernels (sm_80+ PTX): the bf16 tensor-core MMA
// m16n8k16 with fp32 accumulation, bf16 packing, 16-byte loads, cp.async and the fast 2^x. Included
// only by .cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace spin::exec {

// c += a · b for one m16n8k16 tile: a row-major [16, 16] bf16 (4 registers), b column-major
// [16, 8] bf16 (2 registers), c [16, 8] fp32 (4 registers), in the PTX fragment layouts.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const std::uint32_t (&a)[4],
                                         std::uint32_t b0, std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to bf16 (nearest even) in one register, `lo` in the low half.
__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&h);
}

// 32-bit word w (0..3) of a 16-byte vector.
__device__ __forceinline__ std::uint32_t word(const uint4& v, std::uint32_t w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

// A 16-byte read-only load (p 16-byte aligned).
__device__ __forceinline__ uint4 load16(const std::uint16_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// 16 bytes from global to shared memory (dst: a shared-state-space address), asynchronously;
// !valid zero-fills the 16 bytes without reading src.
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}

// 2^x, approximate (ex2.approx, flush-to-zero); 2^−inf = 0 (softmax of masked scores).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace spin::exec
