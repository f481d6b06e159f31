#include <cuda_bf16.h>

#include "exec/cuda_check.h"
#include "exec/mma.cuh"
#include "exec/prefill_attention_kernel.h"

namespace spin::exec {
namespace {

constexpr std::uint32_t kHeadDim = kPrefillHeadDim;
constexpr std::uint32_t kBN = kPrefillKeyTile;
constexpr std::uint32_t kRowBytes = kHeadDim * 2;     // 256: one token row of one head
constexpr std::uint32_t kRowChunks = kRowBytes / 16;  // 16-byte chunks per row
constexpr std::uint32_t kDimSteps = kHeadDim / 16;    // MMA k-steps of Q·Kᵀ
constexpr std::uint32_t kDimTiles = kHeadDim / 8;     // MMA n-tiles of P·V (8 dims each)
constexpr std::uint32_t kKeyTiles = kBN / 8;          // MMA n-tiles of Q·Kᵀ (8 keys each)
constexpr float kLazyLog2 = 8.f;  // lazy rescale: P may reach 2^8 before the reference max moves

// kMTiles: 16-row m-tiles per warp; kWarps: warps per block; kStages: K/V buffers; kQRegs: Q's
// A fragments loaded once into registers (else by ldmatrix at every k-step).
template <std::uint32_t kMTiles, std::uint32_t kWarps, std::uint32_t kStages, bool kQRegs>
struct Tiling {
  static constexpr std::uint32_t kWarpRows = 16 * kMTiles;
  static constexpr std::uint32_t kBM = kWarpRows * kWarps;  // queries per block
  static constexpr std::uint32_t kThreads = kWarps * 32;
  static constexpr bool kQInRegisters = kQRegs;
  // Q [kBM rows], then per stage K [kBN rows] and V [kBN rows]; each row kRowBytes, swizzled.
  static constexpr std::uint32_t kSmemBytes = (kBM + 2 * kBN * kStages) * kRowBytes;
  static constexpr std::uint32_t kMinBlocks = kBM > 128 ? 1 : 2;  // what shared memory allows
};

// Shared-memory byte offset of 16-byte chunk `chunk` of row `row`: chunks XOR-swizzled by the row
// so that the 8 rows an ldmatrix phase reads (same logical chunk) fall in 8 distinct bank groups.
__device__ __forceinline__ std::uint32_t swizzle(std::uint32_t row, std::uint32_t chunk) {
  return row * kRowBytes + ((chunk ^ (row & 7)) << 4);
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Copies rows [0, kRows) of a [rows, heads, head_dim] tensor (row 0 at `src`, `stride` elements
// between rows) into swizzled shared memory at `dst`; rows ≥ valid are zero-filled. Thread tid
// takes chunk tid % 16 of rows tid / 16 + i · kThreads / 16: one swizzle per thread, since
// kThreads / 16 is a multiple of 8.
template <std::uint32_t kRows, std::uint32_t kThreads>
__device__ __forceinline__ void load_rows(std::uint32_t dst, const std::uint16_t* src,
                                          std::uint64_t stride, std::uint32_t valid,
                                          std::uint32_t tid) {
  constexpr std::uint32_t kStep = kThreads / kRowChunks;  // rows per pass
  static_assert(kStep % 8 == 0 && kRows % kStep == 0);
  const std::uint32_t row = tid / kRowChunks, chunk = tid % kRowChunks;
  const std::uint32_t d = dst + swizzle(row, chunk);
  const std::uint16_t* s = src + row * stride + chunk * 8;
#pragma unroll
  for (std::uint32_t i = 0; i < kRows / kStep; ++i) {
    const bool ok = row + i * kStep < valid;
    cp_async16(d + i * kStep * kRowBytes, ok ? s + i * kStep * stride : src, ok);
  }
}

// Fragment layout (mma.sync m16n8k16, lane = 4·g + t): C rows g and g + 8, columns 2t, 2t + 1.
// S = Q·Kᵀ: A = Q rows by ldmatrix (matrices: rows 0–7 / 8–15 × dims 0–7 / 8–15), B = K rows by
// ldmatrix (a K row is a column of Kᵀ: keys 0–7 / 8–15 × dims 0–7 / 8–15 give b0, b1 of two key
// n-tiles). O = P·V: A = P from S's accumulators (FlashAttention 2), B = V rows by ldmatrix.trans.
template <std::uint32_t kMTiles, std::uint32_t kWarps, std::uint32_t kStages, bool kQRegs,
          bool kLazy>
__global__ void __launch_bounds__(Tiling<kMTiles, kWarps, kStages, kQRegs>::kThreads,
                                  Tiling<kMTiles, kWarps, kStages, kQRegs>::kMinBlocks)
    prefill_attention_kernel(const PrefillAttentionParams p) {
  using T = Tiling<kMTiles, kWarps, kStages, kQRegs>;
  extern __shared__ __align__(128) std::uint8_t smem[];
  const std::uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::uint32_t g = lane >> 2, t = lane & 3;
  const std::uint32_t head = blockIdx.x, kv_head = head / p.group;
  const PrefillTile tile = p.tiles[blockIdx.y];
  const std::uint64_t q_stride = std::uint64_t{p.q_heads} * kHeadDim;
  const std::uint64_t kv_stride = std::uint64_t{p.kv_heads} * kHeadDim;
  const std::uint16_t* q = p.q + tile.q_row * q_stride + head * kHeadDim;
  const std::uint16_t* k = p.k + tile.kv_row * kv_stride + kv_head * kHeadDim;
  const std::uint16_t* v = p.v + tile.kv_row * kv_stride + kv_head * kHeadDim;

  const std::uint32_t sm = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem));
  const std::uint32_t sm_q = sm;
  const auto sm_k = [&](std::uint32_t s) { return sm + (T::kBM + 2 * kBN * s) * kRowBytes; };
  const auto sm_v = [&](std::uint32_t s) { return sm_k(s) + kBN * kRowBytes; };
  const std::uint32_t key_tiles = (tile.key_end + kBN - 1) / kBN;
  const auto load_kv = [&](std::uint32_t j) {
    const std::uint32_t n0 = j * kBN, s = j % kStages;
    const std::uint32_t valid = tile.key_end - n0;
    load_rows<kBN, T::kThreads>(sm_k(s), k + n0 * kv_stride, kv_stride, valid, tid);
    load_rows<kBN, T::kThreads>(sm_v(s), v + n0 * kv_stride, kv_stride, valid, tid);
  };

  load_rows<T::kBM, T::kThreads>(sm_q, q, q_stride, tile.q_rows, tid);
#pragma unroll
  for (std::uint32_t s = 0; s + 1 < kStages; ++s) {
    if (s < key_tiles) load_kv(s);
    cp_async_commit();
  }

  // This warp's query rows [row0, row0 + kWarpRows) of the tile, at key positions pos0 + r.
  const std::uint32_t row0 = warp * T::kWarpRows;
  const std::uint32_t pos0 = tile.q_pos + row0;
  const bool warp_active = row0 < tile.q_rows;
  const float sl = p.scale_log2;
  // This lane's ldmatrix row address at k-step (or dim pair) 0. Every row an ldmatrix reads has
  // row % 8 = lane % 8 (tiles start at multiples of 16 rows), and chunk 2·step + c swizzles to
  // (c ^ lane % 8) ^ 2·step: step s is the lane offset XOR (s << 5).
  const std::uint32_t q_lane = swizzle(row0 + (lane & 15), lane >> 4);
  const std::uint32_t k_lane = swizzle(8 * (lane >> 4) + (lane & 7), (lane >> 3) & 1);
  const std::uint32_t v_lane = swizzle(8 * ((lane >> 3) & 1) + (lane & 7), lane >> 4);

  float o[kMTiles][kDimTiles][4];
  float m[kMTiles][2], l[kMTiles][2];  // running max of raw scores; this thread's share of Σ
#pragma unroll
  for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (std::uint32_t j = 0; j < kDimTiles; ++j)
      o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0;
  }
  std::uint32_t qf[T::kQInRegisters ? kDimSteps : 1][4];

  for (std::uint32_t j = 0; j < key_tiles; ++j) {
    if (j + kStages - 1 < key_tiles) load_kv(j + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncthreads();
    const std::uint32_t n0 = j * kBN, stage = j % kStages;
    if constexpr (T::kQInRegisters) {
      if (j == 0) {
#pragma unroll
        for (std::uint32_t ks = 0; ks < kDimSteps; ++ks)
          ldmatrix_x4(qf[ks], sm_q + (q_lane ^ (ks << 5)));
      }
    }
    // Tiles wholly past this warp's last query are skipped; the block's barriers still hold.
    if (warp_active && n0 <= pos0 + T::kWarpRows - 1) {
      float s[kMTiles][kKeyTiles][4];
#pragma unroll
      for (std::uint32_t mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (std::uint32_t nt = 0; nt < kKeyTiles; ++nt)
          s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0;
      const std::uint32_t kb = sm_k(stage);
#pragma unroll
      for (std::uint32_t ks = 0; ks < kDimSteps; ++ks) {
        std::uint32_t a[kMTiles][4];
#pragma unroll
        for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
          if constexpr (T::kQInRegisters) {
#pragma unroll
            for (std::uint32_t i = 0; i < 4; ++i) a[mt][i] = qf[ks][i];
          } else {
            ldmatrix_x4(a[mt], sm_q + 16 * mt * kRowBytes + (q_lane ^ (ks << 5)));
          }
        }
#pragma unroll
        for (std::uint32_t np = 0; np < kKeyTiles / 2; ++np) {
          std::uint32_t b[4];
          ldmatrix_x4(b, kb + 16 * np * kRowBytes + (k_lane ^ (ks << 5)));
#pragma unroll
          for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
            mma_bf16(s[mt][2 * np], a[mt], b[0], b[1]);
            mma_bf16(s[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
      // Causal mask, only where a key of the tile lies past this warp's first query.
      if (n0 + kBN - 1 > pos0) {
#pragma unroll
        for (std::uint32_t mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (std::uint32_t nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
            for (std::uint32_t e = 0; e < 4; ++e) {
              const std::uint32_t key = n0 + 8 * nt + 2 * t + (e & 1);
              const std::uint32_t pos = pos0 + 16 * mt + g + 8 * (e >> 1);
              if (key > pos) s[mt][nt][e] = -INFINITY;
            }
      }
      // Online softmax (FlashAttention 2) in the log2 domain: P = 2^(sl·s − sl·m) with m the
      // row's reference max, O and l rescaled by 2^(sl·(m_old − m_new)) when m moves. kLazy: m
      // moves only when the tile's max exceeds it by more than kLazyLog2 (P ≤ 2^kLazyLog2 then, no
      // risk to fp32 sums), and the warp skips the rescale when no row of it moves (most tiles
      // after the first few).
      bool move[kMTiles][2];
      float mx[kMTiles][2];
#pragma unroll
      for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (std::uint32_t h = 0; h < 2; ++h) {
          float x = m[mt][h];
#pragma unroll
          for (std::uint32_t nt = 0; nt < kKeyTiles; ++nt)
            x = fmaxf(x, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
          x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 1));
          x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 2));
          mx[mt][h] = x;
          // m_old = −inf and x finite: +inf > threshold, moves; both −inf: NaN, stays.
          move[mt][h] = kLazy ? (x - m[mt][h]) * sl > kLazyLog2 : x != m[mt][h];
        }
      }
      bool any = false;
#pragma unroll
      for (std::uint32_t mt = 0; mt < kMTiles; ++mt) any = any || move[mt][0] || move[mt][1];
      if (__any_sync(0xFFFFFFFFu, any)) {
#pragma unroll
        for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
          for (std::uint32_t h = 0; h < 2; ++h) {
            const float alpha = move[mt][h] ? ex2((m[mt][h] - mx[mt][h]) * sl) : 1.f;
            if (move[mt][h]) m[mt][h] = mx[mt][h];
            l[mt][h] *= alpha;
#pragma unroll
            for (std::uint32_t d = 0; d < kDimTiles; ++d) {
              o[mt][d][2 * h] *= alpha;
              o[mt][d][2 * h + 1] *= alpha;
            }
          }
        }
      }
#pragma unroll
      for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (std::uint32_t h = 0; h < 2; ++h) {
          // A row with every key so far masked keeps m = −inf; subtract 0 then (no NaN).
          const float base = m[mt][h] == -INFINITY ? 0.f : m[mt][h] * sl;
#pragma unroll
          for (std::uint32_t nt = 0; nt < kKeyTiles; ++nt) {
            s[mt][nt][2 * h] = ex2(fmaf(s[mt][nt][2 * h], sl, -base));
            s[mt][nt][2 * h + 1] = ex2(fmaf(s[mt][nt][2 * h + 1], sl, -base));
            l[mt][h] += s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
          }
        }
      }
      const std::uint32_t vb = sm_v(stage);
#pragma unroll
      for (std::uint32_t kk = 0; kk < kBN / 16; ++kk) {
        std::uint32_t a[kMTiles][4];
#pragma unroll
        for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (std::uint32_t dp = 0; dp < kDimTiles / 2; ++dp) {
          std::uint32_t b[4];
          ldmatrix_x4_trans(b, vb + 16 * kk * kRowBytes + (v_lane ^ (dp << 5)));
#pragma unroll
          for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
            mma_bf16(o[mt][2 * dp], a[mt], b[0], b[1]);
            mma_bf16(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // this stage's buffers are refilled by the next iteration's loads
  }
  cp_async_wait<0>();

  // Epilogue: O / l in bf16 → this warp's own Q rows in shared memory (no other warp reads them)
  // → 16-byte coalesced stores; lse = (sl · m + log2 l) · ln 2.
  if (!warp_active) return;
#pragma unroll
  for (std::uint32_t mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (std::uint32_t h = 0; h < 2; ++h) {
      float sum = l[mt][h];
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
      const float inv = 1.f / sum;
      const std::uint32_t row = row0 + 16 * mt + g + 8 * h;
#pragma unroll
      for (std::uint32_t d = 0; d < kDimTiles; ++d) {
        const std::uint32_t word = pack_bf16(o[mt][d][2 * h] * inv, o[mt][d][2 * h + 1] * inv);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sm_q + swizzle(row, d) + 4 * t), "r"(word)
                     : "memory");
      }
      if (p.lse != nullptr && t == 0 && row < tile.q_rows) {
        p.lse[(std::uint64_t{tile.q_row} + row) * p.q_heads + head] =
            (m[mt][h] * sl + log2f(sum)) * 0.6931471805599453f;
      }
    }
  }
  __syncwarp();
  std::uint16_t* out = p.out + tile.q_row * q_stride + head * kHeadDim;
#pragma unroll
  for (std::uint32_t i = lane; i < T::kWarpRows * kRowChunks; i += 32) {
    const std::uint32_t row = row0 + i / kRowChunks, chunk = i % kRowChunks;
    if (row < tile.q_rows) {
      uint4 val;
      asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(val.x), "=r"(val.y), "=r"(val.z), "=r"(val.w)
                   : "r"(sm_q + swizzle(row, chunk))
                   : "memory");
      *reinterpret_cast<uint4*>(out + row * q_stride + chunk * 8) = val;
    }
  }
}

using PrefillKernel = void (*)(PrefillAttentionParams);

struct KernelInfo {
  PrefillKernel kernel;
  std::uint32_t threads;
  std::uint32_t smem_bytes;
};

template <std::uint32_t kMTiles, std::uint32_t kWarps, std::uint32_t kStages, bool kQRegs>
KernelInfo info(bool lazy) {
  using T = Tiling<kMTiles, kWarps, kStages, kQRegs>;
  return {lazy ? prefill_attention_kernel<kMTiles, kWarps, kStages, kQRegs, true>
               : prefill_attention_kernel<kMTiles, kWarps, kStages, kQRegs, false>,
          T::kThreads, T::kSmemBytes};
}

KernelInfo pick(PrefillTiling tiling, bool lazy) {
  switch (tiling) {
    case PrefillTiling::kQ128W4:
      return info<2, 4, 2, false>(lazy);
    case PrefillTiling::kQ128W8:
      return info<1, 8, 2, false>(lazy);
    case PrefillTiling::kQ64W4:
      return info<1, 4, 2, true>(lazy);
    case PrefillTiling::kQ256W8:
      return info<2, 8, 2, false>(lazy);
    case PrefillTiling::kWgmma128:
    case PrefillTiling::kWgmma128Staggered:
      break;  // prefill_attention_wgmma.cu
  }
  throw_cuda_error(cudaErrorInvalidValue, "prefill attention: unknown tiling", __FILE__, __LINE__);
}

}  // namespace

void launch_prefill_attention(const PrefillAttentionParams& params, CUstream_st* stream) {
  if (params.head_dim != kHeadDim) {
    throw_cuda_error(cudaErrorInvalidValue,
                     "prefill attention: head_dim must be 128 (the only one instantiated)",
                     __FILE__, __LINE__);
  }
  if (params.group == 0 || params.group > kPrefillMaxGroup ||
      params.q_heads != params.kv_heads * params.group || params.q_heads > 65535 ||
      params.tile_count > 65535) {
    throw_cuda_error(cudaErrorInvalidValue,
                     "prefill attention: group 1..16, q_heads = kv_heads · group ≤ 65535 and at "
                     "most 65535 tiles",
                     __FILE__, __LINE__);
  }
  if (params.tile_count == 0) return;
  if (params.tiling == PrefillTiling::kWgmma128 ||
      params.tiling == PrefillTiling::kWgmma128Staggered) {
    launch_prefill_attention_wgmma(params, params.tiling == PrefillTiling::kWgmma128Staggered,
                                   stream);
    return;
  }
  const KernelInfo k = pick(params.tiling, params.lazy_rescale != 0);
  // Raising the dynamic shared-memory limit is per kernel and cheap; done on every launch so no
  // global state is needed.
  SPIN_CUDA_CHECK(cudaFuncSetAttribute(k.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(k.smem_bytes)));
  k.kernel<<<dim3(params.q_heads, params.tile_count), k.threads, k.smem_bytes, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

}  // namespace spin::exec
