#include <cuda_bf16.h>

#include "exec/cuda_check.h"
#include "exec/mma.cuh"
#include "exec/paged_attention_kernel.h"

namespace spin::exec {
namespace {

constexpr std::uint32_t kHeadDim = kAttentionHeadDim;
constexpr std::uint32_t kThreads = kAttentionWarps * 32;
constexpr std::uint32_t kKSteps = kHeadDim / 16;  // MMA k-steps of q · kᵀ
constexpr std::uint32_t kKLoads = kHeadDim / 32;  // 16-byte K loads per thread and token
constexpr std::uint32_t kNTiles = kHeadDim / 8;   // MMA n-tiles of p · v (8 dims each)
constexpr std::uint32_t kVLoads = kHeadDim / 64;  // 16-byte V loads per thread and token
static_assert(kAttentionChunkTokens == 16, "the fragment layout below assumes 16-token chunks");

// Fragment layout (mma.sync m16n8k16, lane = 4·g + t, g = 0..7, t = 0..3).
// - S = Q·Kᵀ per 8-token n-tile: A = Q [16 heads, 16 dims], B = Kᵀ [16 dims, 8 tokens]. The k
//   (head-dim) order is permuted identically for Q and K so that a thread's elements are
//   contiguous: at k-step s, thread t's k-pairs {2t, 2t+1} and {2t+8, 2t+9} are the physical dims
//   32·(s/2) + 8t + 4·(s%2) + {0,1} and {2,3}. One 16-byte load per token and pair of k-steps, and
//   the 4 threads of a token read 64 contiguous bytes.
// - O = P·V per 8-dim n-tile j: A = P [16 heads, 16 tokens] (the two S tiles' accumulators, as in
//   FlashAttention 2), B = V [16 tokens, 8 dims], column g of tile j is the physical dim
//   64·(j/8) + 8g + j%8, so thread (g, t) loads dims [64h + 8g, +8) of tokens 2t, 2t+1, 2t+8,
//   2t+9 and pairs tokens with one byte permute per register. C: thread (g, t) holds heads g and
//   g + 8, dims 64·(j/8) + 16t + j%8 and that + 8.
struct Chunk {
  uint4 k[2][kKLoads];  // tokens g and g + 8: dims [32i + 8t, +8)
  uint4 v[4][kVLoads];  // tokens 2t, 2t+1, 2t+8, 2t+9: dims [64h + 8g, +8)
};

struct RowList {
  const std::uint16_t* pages;
  const std::uint32_t* slots;  // the row's page list
  std::uint32_t page_tokens_log2;
  // K row of token x of the list; V row is page_tokens · head_dim further.
  __device__ __forceinline__ const std::uint16_t* key(std::uint32_t x) const {
    const std::uint32_t slot = __ldg(slots + (x >> page_tokens_log2));
    const std::uint32_t in_page = x & ((1u << page_tokens_log2) - 1);
    return pages +
           ((static_cast<std::uint64_t>(slot) << (page_tokens_log2 + 1)) + in_page) * kHeadDim;
  }
};

// Loads chunk tokens [x0, x0 + 16) (only those < end; others are zero and never read).
__device__ __forceinline__ void load_chunk(Chunk& c, const RowList& list, std::uint32_t x0,
                                           std::uint32_t end, std::uint32_t g, std::uint32_t t) {
  const std::uint32_t v_offset = kHeadDim << list.page_tokens_log2;
#pragma unroll
  for (std::uint32_t r = 0; r < 2; ++r) {
    const std::uint32_t x = x0 + g + 8 * r;
    if (x < end) {
      const std::uint16_t* k = list.key(x);
#pragma unroll
      for (std::uint32_t i = 0; i < kKLoads; ++i) c.k[r][i] = load16(k + 32 * i + 8 * t);
    } else {
#pragma unroll
      for (std::uint32_t i = 0; i < kKLoads; ++i) c.k[r][i] = make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (std::uint32_t r = 0; r < 4; ++r) {
    const std::uint32_t x = x0 + 2 * t + (r & 1) + 8 * (r >> 1);
    if (x < end) {
      const std::uint16_t* v = list.key(x) + v_offset;
#pragma unroll
      for (std::uint32_t h = 0; h < kVLoads; ++h) c.v[r][h] = load16(v + 64 * h + 8 * g);
    } else {
#pragma unroll
      for (std::uint32_t h = 0; h < kVLoads; ++h) c.v[r][h] = make_uint4(0, 0, 0, 0);
    }
  }
}

// Asks L2 for chunk tokens [x0, x0 + 16) ∩ [.., end) with bulk prefetches (sm_90; no registers
// held while they fly): lane 2i + {0, 1} takes the K and V rows of the chunk's i-th page part.
__device__ __forceinline__ void prefetch_chunk_l2(const RowList& list, std::uint32_t x0,
                                                  std::uint32_t end, std::uint32_t lane) {
  const std::uint32_t page_tokens = 1u << list.page_tokens_log2;
  const std::uint32_t part =
      page_tokens < kAttentionChunkTokens ? page_tokens : kAttentionChunkTokens;
  if (lane >= 2 * (kAttentionChunkTokens / part)) return;
  const std::uint32_t x = x0 + (lane >> 1) * part;
  if (x >= end) return;
  const std::uint32_t n = end - x < part ? end - x : part;
  const std::uint16_t* rows = list.key(x) + ((lane & 1) ? (kHeadDim << list.page_tokens_log2) : 0);
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(rows), "r"(n * kHeadDim * 2)
               : "memory");
}

struct WarpState {
  std::uint32_t q[kKSteps][4];  // A fragments of Q (heads g, g + 8)
  float o[kNTiles][4];          // C fragments of O (unnormalised)
  float m[2];                   // running max (log2 domain) of heads g, g + 8
  float l[2];                   // this thread's share of the running sum
};

__device__ __forceinline__ void compute_chunk(WarpState& st, const Chunk& c, std::uint32_t x0,
                                              std::uint32_t end, float scale_log2,
                                              std::uint32_t t) {
  float s[2][4];
#pragma unroll
  for (std::uint32_t nt = 0; nt < 2; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (std::uint32_t step = 0; step < kKSteps; ++step) {
      const uint4& kw = c.k[nt][step / 2];
      mma_bf16(s[nt], st.q[step], word(kw, 2 * (step % 2)), word(kw, 2 * (step % 2) + 1));
    }
  }
  float row_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (std::uint32_t nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (std::uint32_t e = 0; e < 4; ++e) {
      const std::uint32_t x = x0 + 8 * nt + 2 * t + (e & 1);
      s[nt][e] = x < end ? s[nt][e] * scale_log2 : -INFINITY;
      row_max[e >> 1] = fmaxf(row_max[e >> 1], s[nt][e]);
    }
  }
  float alpha[2];
#pragma unroll
  for (std::uint32_t h = 0; h < 2; ++h) {
    row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xFFFFFFFFu, row_max[h], 1));
    row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xFFFFFFFFu, row_max[h], 2));
    const float m_new = fmaxf(st.m[h], row_max[h]);  // finite: token x0 is always valid
    alpha[h] = exp2f(st.m[h] - m_new);
    st.m[h] = m_new;
    st.l[h] *= alpha[h];
  }
#pragma unroll
  for (std::uint32_t nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (std::uint32_t e = 0; e < 4; ++e) {
      s[nt][e] = exp2f(s[nt][e] - st.m[e >> 1]);
      st.l[e >> 1] += s[nt][e];
    }
  }
  const std::uint32_t p[4] = {pack_bf16(s[0][0], s[0][1]), pack_bf16(s[0][2], s[0][3]),
                              pack_bf16(s[1][0], s[1][1]), pack_bf16(s[1][2], s[1][3])};
#pragma unroll
  for (std::uint32_t j = 0; j < kNTiles; ++j) {
    st.o[j][0] *= alpha[0];
    st.o[j][1] *= alpha[0];
    st.o[j][2] *= alpha[1];
    st.o[j][3] *= alpha[1];
    const std::uint32_t h = j / 8, w = (j % 8) / 2;
    const std::uint32_t sel = (j & 1) ? 0x7632u : 0x5410u;
    const std::uint32_t b0 = __byte_perm(word(c.v[0][h], w), word(c.v[1][h], w), sel);
    const std::uint32_t b1 = __byte_perm(word(c.v[2][h], w), word(c.v[3][h], w), sel);
    mma_bf16(st.o[j], p, b0, b1);
  }
}

// kRegisters: the next chunk is loaded into registers while this one is computed. kL2: chunks
// p.l2_prefetch_chunks ahead are bulk-prefetched into L2. kWide: group > 8 (rows g + 8 of Q).
template <bool kRegisters, bool kL2, bool kWide>
__global__ void __launch_bounds__(kThreads, kRegisters ? 2 : 3)
    decode_attention_kernel(const DecodeAttentionParams p) {
  extern __shared__ float smem[];  // [warps, group, head_dim] O, then [warps, group] m and l
  const std::uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::uint32_t g = lane >> 2, t = lane & 3;
  const DecodeWorkItem item = p.work[blockIdx.x];
  const std::uint32_t group = p.group;

  WarpState st;
  {
    const std::uint16_t* q = p.q + static_cast<std::uint64_t>(item.row) * group * kHeadDim;
#pragma unroll
    for (std::uint32_t i = 0; i < kKLoads; ++i) {
      const uint4 lo =
          g < group ? load16(q + g * kHeadDim + 32 * i + 8 * t) : make_uint4(0, 0, 0, 0);
      const uint4 hi = kWide && g + 8 < group ? load16(q + (g + 8) * kHeadDim + 32 * i + 8 * t)
                                              : make_uint4(0, 0, 0, 0);
      st.q[2 * i][0] = lo.x;
      st.q[2 * i][1] = hi.x;
      st.q[2 * i][2] = lo.y;
      st.q[2 * i][3] = hi.y;
      st.q[2 * i + 1][0] = lo.z;
      st.q[2 * i + 1][1] = hi.z;
      st.q[2 * i + 1][2] = lo.w;
      st.q[2 * i + 1][3] = hi.w;
    }
  }
#pragma unroll
  for (std::uint32_t j = 0; j < kNTiles; ++j) st.o[j][0] = st.o[j][1] = st.o[j][2] = st.o[j][3] = 0;
  st.m[0] = st.m[1] = -INFINITY;
  st.l[0] = st.l[1] = 0;

  const std::uint32_t list_begin = __ldg(p.indptr + item.row);
  const RowList list{p.pages, p.indices + list_begin, p.page_tokens_log2};
  const std::uint32_t end = item.token_end;
  const std::uint32_t chunks =
      (end - item.token_begin + kAttentionChunkTokens - 1) / kAttentionChunkTokens;
  const auto chunk_start = [&](std::uint32_t c) {
    return item.token_begin + c * kAttentionChunkTokens;
  };
  const std::uint32_t distance = kL2 ? p.l2_prefetch_chunks : 0;  // in this warp's chunks
  if constexpr (kL2) {
    for (std::uint32_t k = 1; k < distance; ++k) {
      const std::uint32_t c = warp + k * kAttentionWarps;
      if (c < chunks) prefetch_chunk_l2(list, chunk_start(c), end, lane);
    }
  }
  if constexpr (kRegisters) {
    Chunk cur, next;
    if (warp < chunks) load_chunk(cur, list, chunk_start(warp), end, g, t);
    for (std::uint32_t c = warp; c < chunks; c += kAttentionWarps) {
      if constexpr (kL2) {
        if (c + distance * kAttentionWarps < chunks)
          prefetch_chunk_l2(list, chunk_start(c + distance * kAttentionWarps), end, lane);
      }
      if (c + kAttentionWarps < chunks)
        load_chunk(next, list, chunk_start(c + kAttentionWarps), end, g, t);
      compute_chunk(st, cur, chunk_start(c), end, p.scale_log2, t);
      cur = next;
    }
  } else {
    for (std::uint32_t c = warp; c < chunks; c += kAttentionWarps) {
      if constexpr (kL2) {
        if (c + distance * kAttentionWarps < chunks)
          prefetch_chunk_l2(list, chunk_start(c + distance * kAttentionWarps), end, lane);
      }
      Chunk cur;
      load_chunk(cur, list, chunk_start(c), end, g, t);
      compute_chunk(st, cur, chunk_start(c), end, p.scale_log2, t);
    }
  }

  // The warps' states → shared memory; each thread's share of l summed over the quad first.
  float* sm_o = smem;
  float* sm_m = smem + kAttentionWarps * group * kHeadDim;
  float* sm_l = sm_m + kAttentionWarps * group;
#pragma unroll
  for (std::uint32_t h = 0; h < 2; ++h) {
    st.l[h] += __shfl_xor_sync(0xFFFFFFFFu, st.l[h], 1);
    st.l[h] += __shfl_xor_sync(0xFFFFFFFFu, st.l[h], 2);
  }
#pragma unroll
  for (std::uint32_t h = 0; h < 2; ++h) {
    const std::uint32_t head = g + 8 * h;
    if (head < group) {
      float* row = sm_o + (warp * group + head) * kHeadDim;
#pragma unroll
      for (std::uint32_t j = 0; j < kNTiles; ++j) {
        const std::uint32_t d = 64 * (j / 8) + 16 * t + j % 8;
        row[d] = st.o[j][2 * h];
        row[d + 8] = st.o[j][2 * h + 1];
      }
      if (t == 0) {
        sm_m[warp * group + head] = st.m[h];
        sm_l[warp * group + head] = st.l[h];
      }
    }
  }
  __syncthreads();
  for (std::uint32_t idx = threadIdx.x; idx < group * kHeadDim; idx += kThreads) {
    const std::uint32_t head = idx / kHeadDim, d = idx % kHeadDim;
    float m = -INFINITY;
#pragma unroll
    for (std::uint32_t w = 0; w < kAttentionWarps; ++w) m = fmaxf(m, sm_m[w * group + head]);
    float l = 0, o = 0;
#pragma unroll
    for (std::uint32_t w = 0; w < kAttentionWarps; ++w) {
      const float scale = exp2f(sm_m[w * group + head] - m);  // 0 for a warp with no chunk
      l += sm_l[w * group + head] * scale;
      o += sm_o[(w * group + head) * kHeadDim + d] * scale;
    }
    if (item.partial == kNoPartial) {
      p.out[(static_cast<std::uint64_t>(item.row) * group + head) * kHeadDim + d] =
          __bfloat16_as_ushort(__float2bfloat16_rn(o / l));
    } else {
      const std::uint64_t at = static_cast<std::uint64_t>(item.partial) * group + head;
      p.partial_out[at * kHeadDim + d] = o / l;
      if (d == 0) p.partial_lse[at] = m + log2f(l);
    }
  }
  if (item.partial == kNoPartial || p.fused_merge == 0) return;
  // Fused merge: the row's last block to arrive combines all its partials.
  __shared__ std::uint32_t last;
  __threadfence();  // this block's partials are visible device-wide before it counts itself
  __syncthreads();
  const DecodeMergeItem merge = p.merge[item.merge];
  if (threadIdx.x == 0) {
    const std::uint32_t arrived = atomicAdd(p.merge_arrivals + item.merge, 1u) + 1;
    last = arrived == merge.partial_end - merge.partial_begin ? 1u : 0u;
  }
  __syncthreads();
  if (last == 0) return;
  __threadfence();
  for (std::uint32_t idx = threadIdx.x; idx < group * kHeadDim; idx += kThreads) {
    const std::uint32_t head = idx / kHeadDim, d = idx % kHeadDim;
    float m = -INFINITY;
    for (std::uint32_t s = merge.partial_begin; s < merge.partial_end; ++s)
      m = fmaxf(m, __ldcg(p.partial_lse + static_cast<std::uint64_t>(s) * group + head));
    float num = 0, den = 0;
    for (std::uint32_t s = merge.partial_begin; s < merge.partial_end; ++s) {
      const std::uint64_t at = static_cast<std::uint64_t>(s) * group + head;
      const float w = exp2f(__ldcg(p.partial_lse + at) - m);
      num += w * __ldcg(p.partial_out + at * kHeadDim + d);
      den += w;
    }
    p.out[(static_cast<std::uint64_t>(item.row) * group + head) * kHeadDim + d] =
        __bfloat16_as_ushort(__float2bfloat16_rn(num / den));
  }
  if (threadIdx.x == 0) p.merge_arrivals[item.merge] = 0;  // ready for the next launch
}

// One block per (merge item, head), one thread per dim: out = Σ 2^(lse_s − M) · o_s / Σ 2^(…).
__global__ void __launch_bounds__(kHeadDim) decode_merge_kernel(const DecodeAttentionParams p) {
  const DecodeMergeItem item = p.merge[blockIdx.x];
  const std::uint32_t head = blockIdx.y, d = threadIdx.x, group = p.group;
  float m = -INFINITY;
  for (std::uint32_t s = item.partial_begin; s < item.partial_end; ++s)
    m = fmaxf(m, p.partial_lse[static_cast<std::uint64_t>(s) * group + head]);
  float num = 0, den = 0;
  for (std::uint32_t s = item.partial_begin; s < item.partial_end; ++s) {
    const std::uint64_t at = static_cast<std::uint64_t>(s) * group + head;
    const float w = exp2f(p.partial_lse[at] - m);
    num += w * p.partial_out[at * kHeadDim + d];
    den += w;
  }
  p.out[(static_cast<std::uint64_t>(item.row) * group + head) * kHeadDim + d] =
      __bfloat16_as_ushort(__float2bfloat16_rn(num / den));
}

using AttentionKernel = void (*)(DecodeAttentionParams);

template <bool kRegisters, bool kL2>
AttentionKernel pick_width(bool wide) {
  return wide ? decode_attention_kernel<kRegisters, kL2, true>
              : decode_attention_kernel<kRegisters, kL2, false>;
}

AttentionKernel pick_kernel(bool registers, bool l2, bool wide) {
  if (registers) return l2 ? pick_width<true, true>(wide) : pick_width<true, false>(wide);
  return l2 ? pick_width<false, true>(wide) : pick_width<false, false>(wide);
}

std::uint32_t smem_bytes(std::uint32_t group) {
  return kAttentionWarps * group * (kHeadDim + 2) * sizeof(float);
}

__global__ void fill_random_bf16_kernel(std::uint16_t* data, std::uint64_t count,
                                        std::uint64_t seed) {
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
       i < count; i += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull + seed;  // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
    data[i] = __bfloat16_as_ushort(__float2bfloat16_rn(u));
  }
}

}  // namespace

void launch_decode_attention(const DecodeAttentionParams& params, CUstream_st* stream) {
  if (params.head_dim != kHeadDim) {
    throw_cuda_error(cudaErrorInvalidValue,
                     "decode attention: head_dim must be 128 (the only one instantiated)", __FILE__,
                     __LINE__);
  }
  if (params.group == 0 || params.group > kAttentionMaxGroup) {
    throw_cuda_error(cudaErrorInvalidValue, "decode attention: group must be 1..16", __FILE__,
                     __LINE__);
  }
  if (params.work_items == 0) return;
  const std::uint32_t smem = smem_bytes(params.group);
  const AttentionKernel kernel =
      pick_kernel(params.prefetch != 0, params.l2_prefetch_chunks > 0, params.group > 8);
  kernel<<<params.work_items, kThreads, smem, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
  if (params.merge_items > 0 && params.fused_merge == 0) {
    decode_merge_kernel<<<dim3(params.merge_items, params.group), kHeadDim, 0, stream>>>(params);
    SPIN_CUDA_CHECK_LAUNCH();
  }
}

std::uint32_t decode_attention_blocks_per_sm(std::uint32_t group, bool prefetch,
                                             std::uint32_t l2_prefetch_chunks) {
  int per_sm = 0;
  SPIN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, pick_kernel(prefetch, l2_prefetch_chunks > 0, group > 8), kThreads,
      smem_bytes(group)));
  return per_sm < 1 ? 1u : static_cast<std::uint32_t>(per_sm);
}

void fill_random_bf16(std::uint16_t* data, std::uint64_t count, std::uint64_t seed,
                      CUstream_st* stream) {
  if (count == 0) return;
  const std::uint64_t blocks = (count + 255) / 256;
  fill_random_bf16_kernel<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(
      data, count, seed);
  SPIN_CUDA_CHECK_LAUNCH();
}

}  // namespace spin::exec
