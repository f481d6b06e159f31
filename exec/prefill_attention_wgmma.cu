// The wgmma (sm_90a) kernels of causal prefill attention, PrefillTiling::kWgmma128 and
// kWgmma128Staggered: same contract, layouts and tiles as prefill_attention_kernel.cu (see
// exec/prefill_attention_kernel.h), compiled for sm_90a only (wgmma needs the
// architecture-specific target; exec/meson.build).
//
// A block of two warpgroups runs one (128-query tile, query head); warpgroup w owns query rows
// [64w, 64w + 64). K/V tiles of 128 keys stream through two (staggered: three) cp.async buffers,
// copied by all 256 threads. Q, K and V sit in shared memory in the canonical 128-byte-swizzled
// layout (each [rows, 128] tile as two column halves of 64 dims, row r of a half at 128·r bytes,
// 16-byte chunk c at (c ^ r % 8)·16), so that wgmma reads them through descriptors: S = Q·Kᵀ with
// both operands K-major (m64n128k16, 8 k-steps), then O += P·V with P from registers (S's
// accumulators packed to bf16: the wgmma accumulator and register-A layouts per warp are those of
// mma.sync m16n8k16) and V MN-major (transposed B). Online softmax, lazy rescale and causal mask as
// in the mma.sync kernel; a warpgroup skips key tiles past its last query.
#include <cuda_bf16.h>

#include "exec/cuda_check.h"
#include "exec/mma.cuh"
#include "exec/prefill_attention_kernel.h"

namespace spin::exec {
namespace {

constexpr std::uint32_t kHeadDim = kPrefillHeadDim;
constexpr std::uint32_t kBM = 128;  // queries per block
constexpr std::uint32_t kBN = 128;  // keys per tile
constexpr std::uint32_t kThreads = 256;
constexpr std::uint32_t kStages = 2;
constexpr std::uint32_t kTileBytes = kBM * kHeadDim * 2;  // 32 KiB: Q, or K or V of one stage
static_assert(kBM == kBN, "one tile size for Q, K and V");
constexpr std::uint32_t kSmemBytes = (1 + 2 * kStages) * kTileBytes + 1024;   // + alignment slack
constexpr std::uint32_t kSmemStaggerBytes = (1 + 2 * 3) * kTileBytes + 1024;  // 225 KiB
constexpr float kLazyLog2 = 8.f;

// Byte offset of 16-byte chunk `chunk` (0..15, 8 dims each) of row `row` in a [kBM, 128] tile.
__device__ __forceinline__ std::uint32_t sw128(std::uint32_t row, std::uint32_t chunk) {
  return (chunk >> 3) * (kBM * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// Rows [0, 128) of a [rows, heads, head_dim] tensor → a swizzled tile; rows ≥ valid zero-filled.
__device__ __forceinline__ void load_tile(std::uint32_t dst, const std::uint16_t* src,
                                          std::uint64_t stride, std::uint32_t valid,
                                          std::uint32_t tid) {
  const std::uint32_t row = tid / 16, chunk = tid % 16;  // 16 rows per pass; row % 8 invariant
  const std::uint32_t d = dst + sw128(row, chunk);
  const std::uint16_t* s = src + row * stride + chunk * 8;
#pragma unroll
  for (std::uint32_t i = 0; i < kBM / 16; ++i) {
    const bool ok = row + 16 * i < valid;
    cp_async16(d + 16 * i * 128, ok ? s + 16 * i * stride : src, ok);
  }
}

// Shared-memory matrix descriptor, 128-byte swizzle (PTX ISA, "matrix descriptor").
__device__ __forceinline__ std::uint64_t descriptor(std::uint32_t addr, std::uint32_t lbo_bytes,
                                                    std::uint32_t sbo_bytes) {
  return static_cast<std::uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<std::uint64_t>(lbo_bytes >> 4) << 16) |
         (static_cast<std::uint64_t>(sbo_bytes >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from moving accesses of accumulator registers across a wgmma wait.
__device__ __forceinline__ void fence_registers(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// D (+)= A·B, m64n128k16, A and B from shared memory (both K-major).
__device__ __forceinline__ void wgmma_ss(float (&d)[64], std::uint64_t a, std::uint64_t b,
                                         std::uint32_t accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39,"
      "%40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55,"
      "%56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(a), "l"(b), "r"(accumulate));
}

// D += A·B, m64n128k16, A from registers, B from shared memory MN-major (transposed); the scale-d
// predicate is set from a register operand as for wgmma_ss.
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const std::uint32_t (&a)[4],
                                         std::uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39,"
      "%40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55,"
      "%56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
#endif

// kStagger: the second warpgroup runs half a tile behind the first (its P·V of tile j − 1 and S
// of tile j, then its softmax of tile j), so that one warpgroup's softmax overlaps the other's
// tensor-core work; three K/V stages and one block barrier per tile. Otherwise both warpgroups
// run S, softmax, P·V of the same tile in step (two stages, two barriers per tile).
template <bool kLazy, bool kStagger>
__global__ void __launch_bounds__(kThreads, 1)
    prefill_attention_wgmma_kernel(const PrefillAttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr std::uint32_t kStageCount = kStagger ? 3 : kStages;
  extern __shared__ std::uint8_t smem_raw[];
  const std::uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const std::uint32_t g = lane >> 2, t = lane & 3;
  const std::uint32_t head = blockIdx.x, kv_head = head / p.group;
  const PrefillTile tile = p.tiles[blockIdx.y];
  const std::uint64_t q_stride = std::uint64_t{p.q_heads} * kHeadDim;
  const std::uint64_t kv_stride = std::uint64_t{p.kv_heads} * kHeadDim;
  const std::uint16_t* q = p.q + tile.q_row * q_stride + head * kHeadDim;
  const std::uint16_t* k = p.k + tile.kv_row * kv_stride + kv_head * kHeadDim;
  const std::uint16_t* v = p.v + tile.kv_row * kv_stride + kv_head * kHeadDim;

  // Swizzle atoms need 1024-byte alignment.
  const std::uint32_t sm =
      (static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023) & ~1023u;
  const std::uint32_t sm_q = sm;
  const auto sm_k = [&](std::uint32_t s) { return sm + (1 + 2 * s) * kTileBytes; };
  const auto sm_v = [&](std::uint32_t s) { return sm + (2 + 2 * s) * kTileBytes; };
  const std::uint32_t key_tiles = (tile.key_end + kBN - 1) / kBN;
  const auto load_kv = [&](std::uint32_t j) {
    const std::uint32_t n0 = j * kBN, s = j % kStageCount;
    load_tile(sm_k(s), k + n0 * kv_stride, kv_stride, tile.key_end - n0, tid);
    load_tile(sm_v(s), v + n0 * kv_stride, kv_stride, tile.key_end - n0, tid);
  };
  load_tile(sm_q, q, q_stride, tile.q_rows, tid);
  load_kv(0);
  asm volatile("cp.async.commit_group;\n" ::: "memory");

  const std::uint32_t wg_row0 = 64 * wg, row0 = 16 * warp;
  const std::uint32_t pos0 = tile.q_pos + row0;             // this warp's first query
  const std::uint32_t wg_last = tile.q_pos + wg_row0 + 63;  // the warpgroup's last query
  const bool wg_active = wg_row0 < tile.q_rows;
  const float sl = p.scale_log2;

  float o[64], s[64];
  std::uint32_t pa[kBN / 16][4];  // P of the last softmax, bf16 A fragments (16 keys each)
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  // S = Q·Kᵀ of the tile in `stage` (issued, not waited).
  const auto issue_s = [&](std::uint32_t stage) {
    wgmma_fence();
#pragma unroll
    for (std::uint32_t ks = 0; ks < kHeadDim / 16; ++ks) {
      const std::uint32_t half = ks / 4, col = (ks % 4) * 32;
      const std::uint64_t da =
          descriptor(sm_q + half * (kBM * 128) + wg_row0 * 128 + col, 16, 1024);
      const std::uint64_t db = descriptor(sm_k(stage) + half * (kBN * 128) + col, 16, 1024);
      wgmma_ss(s, da, db, ks > 0 ? 1u : 0u);
    }
    wgmma_commit();
  };
  // O += P·V of the tile in `stage` (issued, not waited).
  const auto issue_pv = [&](std::uint32_t stage) {
    fence_registers(o);
    wgmma_fence();
#pragma unroll
    for (std::uint32_t kk = 0; kk < kBN / 16; ++kk) {
      // V rows 16kk..16kk+15 (two 8-row groups, SBO) × dims 0..127 (two halves, LBO).
      wgmma_rs(o, pa[kk], descriptor(sm_v(stage) + kk * 16 * 128, kBN * 128, 1024));
    }
    wgmma_commit();
  };
  const auto wait_all = [&] {
    wgmma_wait_all();
    fence_registers(o);
    fence_registers(s);
    // P's registers are read by the wgmma until the wait: keep them live (unreused) until here.
#pragma unroll
    for (std::uint32_t kk = 0; kk < kBN / 16; ++kk)
      asm volatile(""
                   : "+r"(pa[kk][0]), "+r"(pa[kk][1]), "+r"(pa[kk][2]), "+r"(pa[kk][3])::"memory");
  };
  // Mask, online softmax (O and l rescaled as needed), P → pa, for the tile at key n0.
  const auto softmax = [&](std::uint32_t n0) {
    // s[4i + e]: row g + 8·(e / 2) of this warp, key n0 + 8i + 2t + e % 2.
    if (n0 + kBN - 1 > pos0) {
#pragma unroll
      for (std::uint32_t i = 0; i < kBN / 8; ++i)
#pragma unroll
        for (std::uint32_t e = 0; e < 4; ++e) {
          const std::uint32_t key = n0 + 8 * i + 2 * t + (e & 1);
          if (key > pos0 + g + 8 * (e >> 1)) s[4 * i + e] = -INFINITY;
        }
    }
    bool move[2];
    float mx[2];
#pragma unroll
    for (std::uint32_t h = 0; h < 2; ++h) {
      float x = m[h];
#pragma unroll
      for (std::uint32_t i = 0; i < kBN / 8; ++i)
        x = fmaxf(x, fmaxf(s[4 * i + 2 * h], s[4 * i + 2 * h + 1]));
      x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 1));
      x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 2));
      mx[h] = x;
      move[h] = kLazy ? (x - m[h]) * sl > kLazyLog2 : x != m[h];
    }
    if (__any_sync(0xFFFFFFFFu, move[0] || move[1])) {
#pragma unroll
      for (std::uint32_t h = 0; h < 2; ++h) {
        const float alpha = move[h] ? ex2((m[h] - mx[h]) * sl) : 1.f;
        if (move[h]) m[h] = mx[h];
        l[h] *= alpha;
#pragma unroll
        for (std::uint32_t i = 0; i < kHeadDim / 8; ++i) {
          o[4 * i + 2 * h] *= alpha;
          o[4 * i + 2 * h + 1] *= alpha;
        }
      }
    }
#pragma unroll
    for (std::uint32_t h = 0; h < 2; ++h) {
      const float base = m[h] == -INFINITY ? 0.f : m[h] * sl;
#pragma unroll
      for (std::uint32_t i = 0; i < kBN / 8; ++i) {
        s[4 * i + 2 * h] = ex2(fmaf(s[4 * i + 2 * h], sl, -base));
        s[4 * i + 2 * h + 1] = ex2(fmaf(s[4 * i + 2 * h + 1], sl, -base));
        l[h] += s[4 * i + 2 * h] + s[4 * i + 2 * h + 1];
      }
    }
#pragma unroll
    for (std::uint32_t kk = 0; kk < kBN / 16; ++kk) {
      pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  if constexpr (!kStagger) {
    for (std::uint32_t j = 0; j < key_tiles; ++j) {
      if (j + 1 < key_tiles) load_kv(j + 1);
      asm volatile("cp.async.commit_group;\n" ::: "memory");
      asm volatile("cp.async.wait_group 1;\n" ::: "memory");
      // cp.async writes are generic-proxy writes; wgmma reads through the async proxy.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
      const std::uint32_t n0 = j * kBN, stage = j % kStageCount;
      if (wg_active && n0 <= wg_last) {
        issue_s(stage);
        wait_all();
        softmax(n0);
        issue_pv(stage);
        wait_all();
      }
      __syncthreads();  // this stage's buffers are refilled by the next iteration's loads
    }
  } else {
    // Iteration j (0..key_tiles): tile j is resident once every thread has waited for its own
    // copies and passed the barrier; tile j + 1 is then loaded into the stage of tile j − 2, which
    // both warpgroups finished with in iteration j − 1. Warpgroup 1 finishes tile j − 1 (P·V) in
    // iteration j, hence one extra iteration.
    bool pending = false;  // warpgroup 1: P of tile j − 1 waits for its P·V
    std::uint32_t pending_stage = 0;
    for (std::uint32_t j = 0; j <= key_tiles; ++j) {
      if (j < key_tiles) {
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      }
      __syncthreads();
      if (j + 1 < key_tiles) {
        load_kv(j + 1);
        asm volatile("cp.async.commit_group;\n" ::: "memory");
      }
      const std::uint32_t n0 = j * kBN, stage = j % kStageCount;
      const bool active = j < key_tiles && wg_active && n0 <= wg_last;
      if (wg == 0) {
        if (active) {
          issue_s(stage);
          wait_all();
          softmax(n0);
          issue_pv(stage);
          wait_all();
        }
      } else {
        if (pending) issue_pv(pending_stage);
        if (active) issue_s(stage);
        if (pending || active) wait_all();
        pending = active;
        pending_stage = stage;
        if (active) softmax(n0);
      }
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");

  if (!wg_active) return;
    // Epilogue as the mma.sync kernel's: O / l → this warp's own Q rows → 16-byte stores.
#pragma unroll
  for (std::uint32_t h = 0; h < 2; ++h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
    sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
    const float inv = 1.f / sum;
    const std::uint32_t row = row0 + g + 8 * h;
#pragma unroll
    for (std::uint32_t i = 0; i < kHeadDim / 8; ++i) {
      const std::uint32_t word = pack_bf16(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sm_q + sw128(row, i) + 4 * t), "r"(word)
                   : "memory");
    }
    if (p.lse != nullptr && t == 0 && row < tile.q_rows) {
      p.lse[(std::uint64_t{tile.q_row} + row) * p.q_heads + head] =
          (m[h] * sl + log2f(sum)) * 0.6931471805599453f;
    }
  }
  __syncwarp();
  std::uint16_t* out = p.out + tile.q_row * q_stride + head * kHeadDim;
#pragma unroll
  for (std::uint32_t i = lane; i < 16 * 16; i += 32) {
    const std::uint32_t row = row0 + i / 16, chunk = i % 16;
    if (row < tile.q_rows) {
      uint4 val;
      asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(val.x), "=r"(val.y), "=r"(val.z), "=r"(val.w)
                   : "r"(sm_q + sw128(row, chunk))
                   : "memory");
      *reinterpret_cast<uint4*>(out + row * q_stride + chunk * 8) = val;
    }
  }
#endif
}

}  // namespace

void launch_prefill_attention_wgmma(const PrefillAttentionParams& params, bool stagger,
                                    CUstream_st* stream) {
  using Kernel = void (*)(PrefillAttentionParams);
  const bool lazy = params.lazy_rescale != 0;
  const Kernel kernel = stagger ? (lazy ? prefill_attention_wgmma_kernel<true, true>
                                        : prefill_attention_wgmma_kernel<false, true>)
                                : (lazy ? prefill_attention_wgmma_kernel<true, false>
                                        : prefill_attention_wgmma_kernel<false, false>);
  const std::uint32_t smem = stagger ? kSmemStaggerBytes : kSmemBytes;
  SPIN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  kernel<<<dim3(params.q_heads, params.tile_count), kThreads, smem, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

}  // namespace spin::exec
