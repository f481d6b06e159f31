#include <cuda_bf16.h>

#include "exec/cuda_check.h"
#include "exec/mma.cuh"
#include "exec/selection_kernel.h"

namespace spin::exec {
namespace {

constexpr std::uint32_t kHeadDim = kSelectionHeadDim;
constexpr std::uint32_t kScoreThreads = kScoreWarps * 32;
constexpr std::uint32_t kTopkHists = 8;  // digit histograms per block (8 KiB)
constexpr std::uint32_t kFull = 0xFFFFFFFFu;
constexpr std::uint32_t kBuildWarps = 4;

// Keeps the bf16 halves of `w` whose sign is negative (negative = true) or not, zeroes the rest.
__device__ __forceinline__ std::uint32_t keep_sign(std::uint32_t w, bool negative) {
  const std::uint32_t neg = ((w & 0x80008000u) >> 15) * 0xFFFFu;
  return negative ? (w & neg) : (w & ~neg);
}

__device__ __forceinline__ uint4 keep_sign(const uint4& v, bool negative) {
  return make_uint4(keep_sign(v.x, negative), keep_sign(v.y, negative), keep_sign(v.z, negative),
                    keep_sign(v.w, negative));
}

__device__ __forceinline__ float bf16_lo(std::uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(std::uint32_t w) {
  return __uint_as_float(w & 0xFFFF0000u);
}
__device__ __forceinline__ std::uint16_t to_bf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Fragment layout (mma.sync m16n8k16, lane = 4·g + t), as in paged_attention_kernel.cu: at
// k-step s, thread t's k-pairs {2t, 2t+1} and {2t+8, 2t+9} are the physical summary dims
// 32·(s/2) + 8t + 4·(s%2) + {0,1} and {2,3}, for A (query heads g, g + 8) and B (partition g of
// the n-tile) alike, so each thread loads 16 contiguous bytes per pair of k-steps. C: thread
// (g, t) holds heads g and g + 8 of partitions 2t and 2t + 1.
// kLoads: 16-byte loads per thread and partition (summary_dim / 32); kTiles: n-tiles in flight
// per warp; kWide: query_rows > 8; kQuest: [min | max] summaries, query split by sign.
template <std::uint32_t kLoads, std::uint32_t kTiles, bool kWide, bool kQuest>
__device__ __forceinline__ void score_item(const ScoreParams& p, const ScoreWorkItem item) {
  constexpr std::uint32_t kDim = kLoads * 32;
  constexpr std::uint32_t kSteps = kLoads * 2;
  const std::uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::uint32_t g = lane >> 2, t = lane & 3;
  const std::uint32_t rows_q = p.query_rows;

  std::uint32_t a[kSteps][4];
  {
    const std::uint16_t* q = p.query + static_cast<std::uint64_t>(item.row) * rows_q * kHeadDim;
#pragma unroll
    for (std::uint32_t i = 0; i < kLoads; ++i) {
      const std::uint32_t d = (32 * i + 8 * t) % kHeadDim;  // Quest: dims repeat for max
      uint4 lo = g < rows_q ? load16(q + g * kHeadDim + d) : make_uint4(0, 0, 0, 0);
      uint4 hi =
          kWide && g + 8 < rows_q ? load16(q + (g + 8) * kHeadDim + d) : make_uint4(0, 0, 0, 0);
      if constexpr (kQuest) {
        lo = keep_sign(lo, i < kLoads / 2);  // first half pairs with min, second with max
        hi = keep_sign(hi, i < kLoads / 2);
      }
      a[2 * i][0] = lo.x;
      a[2 * i][1] = hi.x;
      a[2 * i][2] = lo.y;
      a[2 * i][3] = hi.y;
      a[2 * i + 1][0] = lo.z;
      a[2 * i + 1][1] = hi.z;
      a[2 * i + 1][2] = lo.w;
      a[2 * i + 1][3] = hi.w;
    }
  }
  const std::uint32_t row_begin = __ldg(p.indptr + item.row);
  const std::uint16_t* summaries = p.summaries + static_cast<std::uint64_t>(row_begin) * kDim;
  float* scores = p.scores + row_begin;
  const std::uint32_t end = item.end;
  constexpr std::uint32_t kStride = kScoreWarps * kTiles * 8;
  for (std::uint32_t x0 = item.begin + warp * kTiles * 8; x0 < end; x0 += kStride) {
    uint4 b[kTiles][kLoads];
#pragma unroll
    for (std::uint32_t j = 0; j < kTiles; ++j) {
      const std::uint32_t x = x0 + 8 * j + g;
      const std::uint16_t* s = summaries + static_cast<std::uint64_t>(x) * kDim + 8 * t;
#pragma unroll
      for (std::uint32_t i = 0; i < kLoads; ++i)
        b[j][i] = x < end ? load16(s + 32 * i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (std::uint32_t j = 0; j < kTiles; ++j) {
      float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (std::uint32_t s = 0; s < kSteps; ++s) {
        mma_bf16(c, a[s], word(b[j][s / 2], 2 * (s % 2)), word(b[j][s / 2], 2 * (s % 2) + 1));
      }
      float m0 = g < rows_q ? c[0] : -INFINITY;
      float m1 = g < rows_q ? c[1] : -INFINITY;
      if constexpr (kWide) {
        if (g + 8 < rows_q) {
          m0 = fmaxf(m0, c[2]);
          m1 = fmaxf(m1, c[3]);
        }
      }
#pragma unroll
      for (std::uint32_t off = 4; off < 32; off <<= 1) {
        m0 = fmaxf(m0, __shfl_xor_sync(kFull, m0, off));
        m1 = fmaxf(m1, __shfl_xor_sync(kFull, m1, off));
      }
      if (g == 0) {
        const std::uint32_t x = x0 + 8 * j + 2 * t;
        if (x < end) scores[x] = m0;
        if (x + 1 < end) scores[x + 1] = m1;
      }
    }
  }
}

// Persistent: block b scores items b, b + grid, … (the plan's items are small, so blocks end
// within about one item of each other).
template <std::uint32_t kLoads, std::uint32_t kTiles, bool kWide, bool kQuest>
__global__ void __launch_bounds__(kScoreThreads) score_kernel(const ScoreParams p) {
  for (std::uint32_t w = blockIdx.x; w < p.work_items; w += gridDim.x)
    score_item<kLoads, kTiles, kWide, kQuest>(p, p.work[w]);
}

// Order-preserving key of a score: larger float → larger key; −0 counts as +0; `force` → the
// largest key (Seer's always-selected last block).
__device__ __forceinline__ std::uint32_t score_key(float f, bool force) {
  std::uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7FFFFFFFu) == 0) bits = 0;
  const std::uint32_t key = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return force ? 0xFFFFFFFFu : key;
}

// Adds `digit` to this warp's histogram; lanes with the same digit add once (their leader).
// kTopkHists histograms per block (warp w uses w % kTopkHists): with scores of similar magnitude
// most keys share the top digit, and one shared bin hit by every warp would serialise the block.
__device__ __forceinline__ void count_digit(std::uint32_t* hist, std::uint32_t digit,
                                            std::uint32_t lane) {
  const std::uint32_t peers = __match_any_sync(__activemask(), digit);
  if (lane == static_cast<std::uint32_t>(__ffs(peers) - 1)) atomicAdd(hist + digit, __popc(peers));
}

template <bool kStaged, std::uint32_t kTopkThreads>
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const TopkParams p) {
  constexpr std::uint32_t kTopkWarps = kTopkThreads / 32;
  extern __shared__ std::uint32_t staged[];  // [n] keys (kStaged)
  __shared__ std::uint32_t warp_hist[kTopkHists][256];
  __shared__ std::uint32_t warp_counts[2][kTopkWarps];
  __shared__ std::uint32_t pick[3];    // digit, elements above it, elements in its bucket
  constexpr std::uint32_t kBatch = 8;  // global loads in flight per thread
  const std::uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::uint32_t row = blockIdx.x;
  const std::uint32_t begin = p.indptr[row];
  const std::uint32_t n = p.indptr[row + 1] - begin;
  const std::uint32_t out_begin = p.out_indptr[row];
  const std::uint32_t k = p.out_indptr[row + 1] - out_begin;
  std::uint32_t* out = p.selected + out_begin;
  if (k == 0) return;
  if (k >= n) {
    for (std::uint32_t i = tid; i < n; i += kTopkThreads) out[i] = i;
    return;
  }
  const float* scores = p.scores + begin;
  const bool force_last = p.force_last != 0;
  // Calls f(i, key) for every element this thread owns (i = tid + j · threads), from the scores
  // in global memory with kBatch loads in flight.
  const auto for_each_score_key = [&](auto&& f) {
    for (std::uint32_t base = 0; base < n; base += kTopkThreads * kBatch) {
      float v[kBatch];
#pragma unroll
      for (std::uint32_t j = 0; j < kBatch; ++j) {
        const std::uint32_t i = base + j * kTopkThreads + tid;
        v[j] = i < n ? scores[i] : 0.f;
      }
#pragma unroll
      for (std::uint32_t j = 0; j < kBatch; ++j) {
        const std::uint32_t i = base + j * kTopkThreads + tid;
        if (i < n) f(i, score_key(v[j], force_last && i + 1 == n));
      }
    }
  };
  // The same, from shared memory once the keys are staged.
  const auto for_each_key = [&](auto&& f) {
    if constexpr (kStaged) {
      for (std::uint32_t i = tid; i < n; i += kTopkThreads) f(i, staged[i]);
    } else {
      for_each_score_key(f);
    }
  };
  std::uint32_t* const hist = warp_hist[warp % kTopkHists];
  const auto clear_hist = [&] {
    for (std::uint32_t b = tid; b < kTopkHists * 256; b += kTopkThreads) (&warp_hist[0][0])[b] = 0;
  };
  clear_hist();
  __syncthreads();
  // Pass 1 (top digit) fused with staging the keys.
  for_each_score_key([&](std::uint32_t i, std::uint32_t key) {
    if constexpr (kStaged) staged[i] = key;
    count_digit(hist, key >> 24, lane);
  });
  // Radix select: after each pass, `prefix` (the bits under `mask`) is the k-th key's, and
  // `needed` is how many elements matching it are still to be taken.
  std::uint32_t prefix = 0, mask = 0, needed = k;
  for (int shift = 24;; shift -= 8) {
    if (shift != 24) {
      clear_hist();
      __syncthreads();
      for_each_key([&](std::uint32_t, std::uint32_t key) {
        if ((key & mask) == prefix) count_digit(hist, (key >> shift) & 0xFFu, lane);
      });
    }
    __syncthreads();
    if (tid < 256) {  // the block's histogram, into warp 0's
      std::uint32_t total = 0;
#pragma unroll
      for (std::uint32_t w = 0; w < kTopkHists; ++w) total += warp_hist[w][tid];
      warp_hist[0][tid] = total;
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l holds bins 255 − 8l − j, j = 0..7 (descending), so an inclusive scan over lanes
      // counts the elements at or above each lane's lowest bin.
      std::uint32_t sum = 0;
#pragma unroll
      for (std::uint32_t j = 0; j < 8; ++j) sum += hist[255 - 8 * lane - j];
      std::uint32_t incl = sum;
#pragma unroll
      for (std::uint32_t off = 1; off < 32; off <<= 1) {
        const std::uint32_t v = __shfl_up_sync(kFull, incl, off);
        if (lane >= off) incl += v;
      }
      std::uint32_t cum = incl - sum;
      if (cum < needed && needed <= incl) {
        for (std::uint32_t j = 0; j < 8; ++j) {
          const std::uint32_t bin = 255 - 8 * lane - j;
          const std::uint32_t c = hist[bin];
          if (cum + c >= needed) {
            pick[0] = bin;
            pick[1] = cum;
            pick[2] = c;
            break;
          }
          cum += c;
        }
      }
    }
    __syncthreads();
    prefix |= pick[0] << shift;
    mask |= 0xFFu << shift;
    needed -= pick[1];
    if (pick[2] == needed || shift == 0) break;  // the bucket is taken whole, or keys are equal
  }
  // Ordered pass: selected = above the prefix, or matching it among the first `needed` in index
  // order. Warp w owns a contiguous range of the row; it counts its elements, one barrier gives
  // every warp its offsets, and it walks the range again writing ranks from ballots.
  const std::uint32_t span = ((n + kTopkWarps - 1) / kTopkWarps + 31) / 32 * 32;
  const std::uint32_t lo = warp * span < n ? warp * span : n;
  const std::uint32_t hi = lo + span < n ? lo + span : n;
  const auto key_of = [&](std::uint32_t i) -> std::uint32_t {
    if constexpr (kStaged) {
      return staged[i] & mask;
    } else {
      return score_key(scores[i], force_last && i + 1 == n) & mask;
    }
  };
  std::uint32_t count_above = 0, count_equal = 0;
  for (std::uint32_t i0 = lo; i0 < hi; i0 += 32) {
    const std::uint32_t i = i0 + lane;
    const std::uint32_t key = i < hi ? key_of(i) : 0;
    count_above += __popc(__ballot_sync(kFull, i < hi && key > prefix));
    count_equal += __popc(__ballot_sync(kFull, i < hi && key == prefix));
  }
  if (lane == 0) {
    warp_counts[0][warp] = count_above;
    warp_counts[1][warp] = count_equal;
  }
  __syncthreads();
  std::uint32_t above_before = 0, equal_before = 0;
  for (std::uint32_t w = 0; w < warp; ++w) {
    above_before += warp_counts[0][w];
    equal_before += warp_counts[1][w];
  }
  const std::uint32_t lanes_below = (1u << lane) - 1;
  for (std::uint32_t i0 = lo; i0 < hi; i0 += 32) {
    const std::uint32_t i = i0 + lane;
    const std::uint32_t key = i < hi ? key_of(i) : 0;
    const bool above = i < hi && key > prefix;
    const bool equal = i < hi && key == prefix;
    const std::uint32_t above_bits = __ballot_sync(kFull, above);
    const std::uint32_t equal_bits = __ballot_sync(kFull, equal);
    const std::uint32_t a = above_before + __popc(above_bits & lanes_below);
    const std::uint32_t e = equal_before + __popc(equal_bits & lanes_below);
    if (above) {
      out[a + (e < needed ? e : needed)] = i;
    } else if (equal && e < needed) {
      out[a + e] = i;
    }
    above_before += __popc(above_bits);
    equal_before += __popc(equal_bits);
  }
}

// Seer's gate query: a block per kGateRows rows; thread (slice, o) sums the products of its
// slice of the inputs with W_q's column o for every row of the block (one W load per kGateRows
// FMAs, kGateSlices slices so each thread's chain of loads stays short); slices add in shared
// memory.
constexpr std::uint32_t kGateRows = 4;
constexpr std::uint32_t kGateSlices = 8;
constexpr std::uint32_t kGateThreads = kGateSlices * kSeerGateDim;

__global__ void __launch_bounds__(kGateThreads) gate_query_kernel(const GateQueryParams p) {
  extern __shared__ std::uint16_t in[];  // [kGateRows, group · 128] bf16
  __shared__ float partial[kGateSlices][kGateRows][kSeerGateDim];
  const std::uint32_t o = threadIdx.x % kSeerGateDim, slice = threadIdx.x / kSeerGateDim;
  const std::uint32_t width = p.group * kHeadDim;
  const std::uint32_t row0 = blockIdx.x * kGateRows;
  const std::uint32_t rows = p.rows - row0 < kGateRows ? p.rows - row0 : kGateRows;
  const std::uint16_t* q = p.q + static_cast<std::uint64_t>(row0) * width;
  for (std::uint32_t i = threadIdx.x; i < kGateRows * width; i += kGateThreads)
    in[i] = i < rows * width ? q[i] : std::uint16_t{0};
  __syncthreads();
  float acc[kGateRows] = {};
  const std::uint32_t per_slice = (width + kGateSlices - 1) / kGateSlices;
  const std::uint32_t i_end = (slice + 1) * per_slice < width ? (slice + 1) * per_slice : width;
#pragma unroll 8
  for (std::uint32_t i = slice * per_slice; i < i_end; ++i) {
    const float w = __uint_as_float(std::uint32_t{__ldg(p.w_q + i * kSeerGateDim + o)} << 16);
#pragma unroll
    for (std::uint32_t r = 0; r < kGateRows; ++r)
      acc[r] += __uint_as_float(std::uint32_t{in[r * width + i]} << 16) * w;
  }
#pragma unroll
  for (std::uint32_t r = 0; r < kGateRows; ++r) partial[slice][r][o] = acc[r];
  __syncthreads();
  if (threadIdx.x < kGateRows * kSeerGateDim) {
    const std::uint32_t r = threadIdx.x / kSeerGateDim;
    float sum = 0;
#pragma unroll
    for (std::uint32_t s = 0; s < kGateSlices; ++s) sum += partial[s][r][o];
    if (r < rows) p.gate_q[static_cast<std::uint64_t>(row0 + r) * kSeerGateDim + o] = to_bf16(sum);
  }
}

__global__ void __launch_bounds__(kBuildWarps * 32)
    summary_build_kernel(const SummaryBuildParams p) {
  __shared__ float pooled[kBuildWarps][kSeerPooledDim];  // Seer: mean, max, min
  const std::uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::uint32_t job_index = blockIdx.x * kBuildWarps + warp;
  if (job_index >= p.job_count) return;  // warp-uniform; no block-wide barrier below
  const SummaryJob job = p.jobs[job_index];
  const std::uint32_t half = lane >> 4, l = lane & 15;  // token parity, dims [8l, 8l + 8)
  const std::uint32_t page_mask = (1u << p.page_tokens_log2) - 1;
  float sum[8], lo[8], hi[8];
#pragma unroll
  for (std::uint32_t e = 0; e < 8; ++e) {
    sum[e] = 0.f;
    lo[e] = INFINITY;
    hi[e] = -INFINITY;
  }
  for (std::uint32_t x = job.token_begin + half; x < job.token_end; x += 2) {
    const std::uint32_t slot = __ldg(p.slots + job.list + (x >> p.page_tokens_log2));
    const std::uint16_t* k =
        p.pages +
        ((static_cast<std::uint64_t>(slot) << (p.page_tokens_log2 + 1)) + (x & page_mask)) *
            kHeadDim +
        8 * l;
    const uint4 v = load16(k);
    const float f[8] = {bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y),
                        bf16_lo(v.z), bf16_hi(v.z), bf16_lo(v.w), bf16_hi(v.w)};
#pragma unroll
    for (std::uint32_t e = 0; e < 8; ++e) {
      sum[e] += f[e];
      lo[e] = fminf(lo[e], f[e]);
      hi[e] = fmaxf(hi[e], f[e]);
    }
  }
#pragma unroll
  for (std::uint32_t e = 0; e < 8; ++e) {
    sum[e] += __shfl_xor_sync(kFull, sum[e], 16);
    lo[e] = fminf(lo[e], __shfl_xor_sync(kFull, lo[e], 16));
    hi[e] = fmaxf(hi[e], __shfl_xor_sync(kFull, hi[e], 16));
  }
  const float inv = 1.f / static_cast<float>(job.token_end - job.token_begin);
  const auto store8 = [](std::uint16_t* dst, const float(&v)[8], float scale) {
    uint4 w;
    w.x = std::uint32_t{to_bf16(v[0] * scale)} | (std::uint32_t{to_bf16(v[1] * scale)} << 16);
    w.y = std::uint32_t{to_bf16(v[2] * scale)} | (std::uint32_t{to_bf16(v[3] * scale)} << 16);
    w.z = std::uint32_t{to_bf16(v[4] * scale)} | (std::uint32_t{to_bf16(v[5] * scale)} << 16);
    w.w = std::uint32_t{to_bf16(v[6] * scale)} | (std::uint32_t{to_bf16(v[7] * scale)} << 16);
    *reinterpret_cast<uint4*>(dst) = w;
  };
  switch (p.algorithm) {
    case SelectionAlgorithm::kShadowKv:
    case SelectionAlgorithm::kRetroInfer:
      if (half == 0)
        store8(p.summaries + static_cast<std::uint64_t>(job.dst) * kHeadDim + 8 * l, sum, inv);
      break;
    case SelectionAlgorithm::kQuest: {
      std::uint16_t* dst = p.summaries + static_cast<std::uint64_t>(job.dst) * 2 * kHeadDim;
      if (half == 0) {
        store8(dst + 8 * l, lo, 1.f);  // exact: min and max of bf16 values are bf16 values
      } else {
        store8(dst + kHeadDim + 8 * l, hi, 1.f);
      }
      break;
    }
    case SelectionAlgorithm::kSeer: {
      float* pool = pooled[warp];
#pragma unroll
      for (std::uint32_t e = 0; e < 8; ++e) {
        if (half == 0) {
          pool[8 * l + e] = sum[e] * inv;
          pool[kHeadDim + 8 * l + e] = hi[e];
        } else {
          pool[2 * kHeadDim + 8 * l + e] = lo[e];
        }
      }
      __syncwarp();
      float acc[4] = {0.f, 0.f, 0.f, 0.f};  // outputs 4·lane .. 4·lane + 3
      for (std::uint32_t i = 0; i < kSeerPooledDim; ++i) {
        const uint2 w = __ldg(reinterpret_cast<const uint2*>(p.w_k + i * kSeerGateDim + 4 * lane));
        const float x = pool[i];
        acc[0] += x * bf16_lo(w.x);
        acc[1] += x * bf16_hi(w.x);
        acc[2] += x * bf16_lo(w.y);
        acc[3] += x * bf16_hi(w.y);
      }
      uint2 out;
      out.x = std::uint32_t{to_bf16(acc[0])} | (std::uint32_t{to_bf16(acc[1])} << 16);
      out.y = std::uint32_t{to_bf16(acc[2])} | (std::uint32_t{to_bf16(acc[3])} << 16);
      *reinterpret_cast<uint2*>(p.summaries + static_cast<std::uint64_t>(job.dst) * kSeerGateDim +
                                4 * lane) = out;
      break;
    }
  }
}

// One warp per row: lanes take 32 selected clusters at a time; a max-scan of (last page + 1)
// finds the pages already covered by earlier clusters (clusters ascend in storage order and do
// not overlap, so pages never decrease and only a shared boundary page repeats), and a sum-scan
// places each cluster's remaining pages.
__global__ void __launch_bounds__(128) cluster_pages_kernel(const ClusterPagesParams p) {
  const std::uint32_t lane = threadIdx.x & 31;
  const std::uint32_t row = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (row >= p.rows) return;  // warp-uniform
  const std::uint32_t sel_begin = p.out_indptr[row], sel_end = p.out_indptr[row + 1];
  const std::uint32_t* offsets = p.cluster_tokens + p.indptr[row] + row;
  std::uint32_t* pages = p.pages + p.page_indptr[row];
  const std::uint32_t shift = p.page_tokens_log2;
  std::uint32_t written = 0;
  std::uint32_t covered = 0;  // pages [0, covered) may not be written again
  for (std::uint32_t s0 = sel_begin; s0 < sel_end; s0 += 32) {
    const std::uint32_t s = s0 + lane;
    std::uint32_t first = 0, end = 0;  // pages [first, end)
    if (s < sel_end) {
      const std::uint32_t c = p.selected[s];
      const std::uint32_t tb = offsets[c], te = offsets[c + 1];
      if (te > tb) {
        first = tb >> shift;
        end = ((te - 1) >> shift) + 1;
      }
    }
    std::uint32_t reach = end;  // inclusive max-scan of `end` over lanes
#pragma unroll
    for (std::uint32_t off = 1; off < 32; off <<= 1) {
      const std::uint32_t v = __shfl_up_sync(kFull, reach, off);
      if (lane >= off && v > reach) reach = v;
    }
    std::uint32_t before = __shfl_up_sync(kFull, reach, 1);
    if (lane == 0) before = 0;
    if (before < covered) before = covered;
    if (first < before) first = before < end ? before : end;
    const std::uint32_t count = end > first ? end - first : 0;
    std::uint32_t incl = count;
#pragma unroll
    for (std::uint32_t off = 1; off < 32; off <<= 1) {
      const std::uint32_t v = __shfl_up_sync(kFull, incl, off);
      if (lane >= off) incl += v;
    }
    const std::uint32_t at = written + incl - count;
    for (std::uint32_t j = 0; j < count; ++j) pages[at + j] = first + j;
    written += __shfl_sync(kFull, incl, 31);
    const std::uint32_t chunk_reach = __shfl_sync(kFull, reach, 31);
    if (chunk_reach > covered) covered = chunk_reach;
  }
  if (lane == 0) p.page_count[row] = written;
}

using ScoreKernel = void (*)(ScoreParams);

ScoreKernel pick_score_kernel(bool quest, bool wide) {
  if (quest) return wide ? score_kernel<8, 2, true, true> : score_kernel<8, 2, false, true>;
  return wide ? score_kernel<4, 4, true, false> : score_kernel<4, 4, false, false>;
}

}  // namespace

void launch_selection_scores(const ScoreParams& params, CUstream_st* stream) {
  if (params.query_rows == 0 || params.query_rows > kSelectionMaxGroup) {
    throw_cuda_error(cudaErrorInvalidValue, "selection scores: query_rows must be 1..16", __FILE__,
                     __LINE__);
  }
  if (params.work_items == 0) return;
  const std::uint32_t grid =
      params.grid == 0 || params.grid > params.work_items ? params.work_items : params.grid;
  pick_score_kernel(params.quest != 0,
                    params.query_rows > 8)<<<grid, kScoreThreads, 0, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

void launch_selection_topk(const TopkParams& params, CUstream_st* stream) {
  if (params.rows == 0) return;
  if (params.threads != kTopkThreadsSmall && params.threads != kTopkThreadsLarge) {
    throw_cuda_error(cudaErrorInvalidValue, "selection top-k: threads must be 512 or 1024",
                     __FILE__, __LINE__);
  }
  const bool large = params.threads == kTopkThreadsLarge;
  if (params.staged_elems > 0) {
    if (params.staged_elems > kTopkMaxStaged) {
      throw_cuda_error(cudaErrorInvalidValue, "selection top-k: staged_elems above kTopkMaxStaged",
                       __FILE__, __LINE__);
    }
    const auto kernel =
        large ? topk_kernel<true, kTopkThreadsLarge> : topk_kernel<true, kTopkThreadsSmall>;
    // At every launch, as the attribute belongs to the current device (as in prefill).
    SPIN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kTopkMaxStaged * 4)));
    kernel<<<params.rows, params.threads, params.staged_elems * 4, stream>>>(params);
  } else {
    const auto kernel =
        large ? topk_kernel<false, kTopkThreadsLarge> : topk_kernel<false, kTopkThreadsSmall>;
    kernel<<<params.rows, params.threads, 0, stream>>>(params);
  }
  SPIN_CUDA_CHECK_LAUNCH();
}

void launch_gate_query(const GateQueryParams& params, CUstream_st* stream) {
  if (params.rows == 0) return;
  gate_query_kernel<<<(params.rows + kGateRows - 1) / kGateRows, kGateThreads,
                      kGateRows * params.group * kHeadDim * sizeof(std::uint16_t), stream>>>(
      params);
  SPIN_CUDA_CHECK_LAUNCH();
}

void launch_summary_build(const SummaryBuildParams& params, CUstream_st* stream) {
  if (params.job_count == 0) return;
  summary_build_kernel<<<(params.job_count + kBuildWarps - 1) / kBuildWarps, kBuildWarps * 32, 0,
                         stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

void launch_cluster_pages(const ClusterPagesParams& params, CUstream_st* stream) {
  if (params.rows == 0) return;
  cluster_pages_kernel<<<(params.rows + 3) / 4, 128, 0, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

std::uint32_t selection_score_blocks_per_sm(bool quest, std::uint32_t query_rows) {
  int per_sm = 0;
  SPIN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, pick_score_kernel(quest, query_rows > 8), kScoreThreads, 0));
  return per_sm < 1 ? 1u : static_cast<std::uint32_t>(per_sm);
}

}  // namespace spin::exec
