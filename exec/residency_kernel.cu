#include "common/policy/residency_coop.h"
#include "exec/cuda_check.h"
#include "exec/gather.h"
#include "exec/residency_kernel.h"

namespace spin::exec {
namespace {

using policy::PageKey;

// Static shared memory of the kernel besides the staged slots (histogram, scan and step
// scratch), with room to spare; the staging limit leaves it out.
constexpr std::uint64_t kStaticSharedBytes = 2048;
constexpr std::uint32_t kWarps = kResidencyThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

// The phases' shared-word updates (residency_coop.h), as atomics.
struct AtomicOps {
  __device__ static std::uint32_t fetch_add(std::uint32_t* word, std::uint32_t v) {
    return atomicAdd(word, v);
  }
  __device__ static std::uint32_t fetch_sub(std::uint32_t* word, std::uint32_t v) {
    return atomicSub(word, v);
  }
};

// Exclusive prefix sums of K values per thread over the block (thread order = range order), and
// their totals. One barrier; `partial` ([kWarps][K] shared) must not be reused by another scan
// before every thread has returned from this one (each call site has its own).
template <int K>
__device__ void block_scan(std::uint32_t (&value)[K], std::uint32_t (&total)[K],
                           std::uint32_t (*partial)[K]) {
  const std::uint32_t lane = threadIdx.x % 32;
  const std::uint32_t warp = threadIdx.x / 32;
  std::uint32_t inclusive[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    inclusive[k] = value[k];
#pragma unroll
    for (std::uint32_t d = 1; d < 32; d <<= 1) {
      const std::uint32_t up = __shfl_up_sync(kFullMask, inclusive[k], d);
      if (lane >= d) inclusive[k] += up;
    }
    if (lane == 31) partial[warp][k] = inclusive[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    std::uint32_t before = 0;
    std::uint32_t sum = 0;
#pragma unroll
    for (std::uint32_t w = 0; w < kWarps; ++w) {
      const std::uint32_t x = partial[w][k];
      before += w < warp ? x : 0;
      sum += x;
    }
    value[k] = before + inclusive[k] - value[k];
    total[k] = sum;
  }
}

// histogram_select (residency_coop.h) on one warp: the first bin whose cumulative count reaches
// `remaining`; lane l sums bins [l·per, (l+1)·per), a warp scan finds the lane, which walks them.
// histogram: [bins], bins ≤ 256
__device__ void warp_histogram_select(const std::uint32_t* histogram, std::uint32_t bins,
                                      std::uint32_t remaining, std::uint32_t* digit,
                                      std::uint32_t* before) {
  const std::uint32_t lane = threadIdx.x % 32;
  const std::uint32_t per = (bins + 31) / 32;
  const std::uint32_t first = lane * per;
  std::uint32_t sum = 0;
  for (std::uint32_t j = 0; j < per; ++j) sum += first + j < bins ? histogram[first + j] : 0;
  std::uint32_t inclusive = sum;
#pragma unroll
  for (std::uint32_t d = 1; d < 32; d <<= 1) {
    const std::uint32_t up = __shfl_up_sync(kFullMask, inclusive, d);
    if (lane >= d) inclusive += up;
  }
  const unsigned reached = __ballot_sync(kFullMask, inclusive >= remaining);
  if (lane == static_cast<std::uint32_t>(__ffs(static_cast<int>(reached)) - 1)) {
    std::uint32_t below = inclusive - sum;
    std::uint32_t d = first;
    while (histogram[d] < remaining - below) below += histogram[d++];
    *digit = d;
    *before = below;
  }
}

// Whether map_selection_pages takes its fast path: a partition is a page.
__device__ bool partitions_are_pages(const policy::PartitionMapView& map) {
  return map.kind == policy::PartitionKind::kFixed &&
         map.partition_tokens == (1u << map.page_tokens_log2);
}

// map_selection_pages's fast path (a partition is a page: drop duplicates and static pages) on
// one warp, 32 ids at a time: an id is kept if it differs from the one before it, and a ballot
// gives each kept page its place. Same output as map_selection_pages on one thread.
// ids: [n] non-decreasing; out_pages: [distinct cacheable pages]
__device__ policy::MappedSelection warp_map_page_partitions(const policy::StaticRegion& region,
                                                            const std::uint32_t* ids,
                                                            std::uint32_t n,
                                                            std::uint32_t* out_pages) {
  const std::uint32_t lane = threadIdx.x % 32;
  const std::uint32_t lower_lanes = (1u << lane) - 1;
  policy::MappedSelection result{0, 0};
  for (std::uint32_t base = 0; base < n; base += 32) {
    const std::uint32_t i = base + lane;
    const std::uint32_t page = i < n ? ids[i] : 0;
    const bool distinct = i < n && (i == 0 || ids[i - 1] != page);
    const bool is_static = distinct && policy::is_static_page(region, page);
    const unsigned kept = __ballot_sync(kFullMask, distinct && !is_static);
    if (distinct && !is_static)
      out_pages[result.cacheable_pages + __popc(kept & lower_lanes)] = page;
    result.cacheable_pages += __popc(kept);
    result.static_pages += __popc(__ballot_sync(kFullMask, is_static));
  }
  return result;
}

struct StepShared {
  std::uint32_t histogram[policy::kHistogramBins];
  std::uint32_t scan_misses[kWarps][1];
  std::uint32_t scan_oldest[kWarps][3];
  std::uint32_t scan_targets[kWarps][3];
  std::uint32_t scan_segments[kWarps][1];
  unsigned long long span_and;
  unsigned long long span_or;
  std::uint32_t digit;
  std::uint32_t before;
  std::uint32_t free_count;
};

// What the block's step decided, for the fetch list.
struct StepResult {
  std::uint32_t fetches;
  std::uint32_t bypassed;
  policy::StepStatus status;
};

// One pool's step by the whole block: the phases of residency_coop.h, thread t running range t
// of each, with barriers between them. Every thread returns the same result. Writes the pool's
// counts, resident count and free segment count.
template <class Policy>
__device__ StepResult cooperative_step(const policy::PoolView& pool,
                                       const policy::PolicyParams& params,
                                       const policy::SegmentPoolView& segments,
                                       const policy::StepInput& in, const policy::StepOutput& out,
                                       StepShared& sh, PoolStepCounts& counts,
                                       policy::PoolView& pool_out, std::uint32_t* free_count_out) {
  using namespace policy;
  const std::uint32_t tid = threadIdx.x;
  const std::uint32_t threads = blockDim.x;
  const IndexRange keys = coop_range(in.n, threads, tid);
  const IndexRange slots = coop_range(pool.extent, threads, tid);

  // 1. Lookups and pins; 2. the miss and bypass lists.
  std::uint32_t misses[1] = {coop_lookup<Policy>(pool, segments, in, keys, out.slot_of)};
  std::uint32_t total_misses[1];
  block_scan<1>(misses, total_misses, sh.scan_misses);
  const CoopCounts c = coop_counts<Policy>(pool, in.n, total_misses[0]);
  coop_list_misses(c, keys, misses[0], out.slot_of, out.fetch_index, out.bypass_index);

  // 3, 4. The threshold, and the range's targets (own) and those of the ranges before it.
  std::uint64_t threshold = 0;
  std::uint32_t ties = c.need;
  bool resolved = Policy::kEvictsAllUnpinned || c.need == 0;
  TargetCounts own{0, 0, 0};
  std::uint32_t before[3] = {0, 0, 0};
  std::uint32_t total[3] = {0, 0, 0};
  // Bucketed LRU with B ≤ 256 (one radix digit): its histogram is taken in the same pass as
  // the order-0 count (into bins zeroed at the kernel's start), in case the oldest bucket is
  // short.
  bool histogram_ready = false;
  if (resolved || coop_try_oldest_first<Policy>()) {
    own = coop_count_targets<Policy>(pool, params, in.now, 0, slots);
    if constexpr (coop_try_oldest_first<Policy>()) {
      const std::uint32_t bits = Policy::order_bits(params);
      if (!resolved && bits > 0 && bits <= 8) {
        RadixSelect first = radix_begin<Policy>(params, c.need, nullptr);
        radix_next_pass(first);
        coop_histogram<Policy>(pool, params, in.now, first, slots,
                               [&](std::uint32_t bin) { atomicAdd(&sh.histogram[bin], 1u); });
        histogram_ready = true;
      }
    }
    before[0] = own.below;
    before[1] = own.at;
    before[2] = own.empty;
    block_scan<3>(before, total, sh.scan_oldest);
    resolved = resolved || total[1] >= c.need;
  }
  if constexpr (!Policy::kEvictsAllUnpinned) {
    if (!resolved) {  // the same on every thread
      OrderSpan span{~std::uint64_t{0}, 0};
      if constexpr (Policy::kSkipCommonDigits) {
        const OrderSpan my = coop_order_span<Policy>(pool, params, in.now, slots);
        unsigned long long a = my.all_and;
        unsigned long long o = my.any_or;
#pragma unroll
        for (std::uint32_t d = 16; d > 0; d >>= 1) {
          a &= __shfl_xor_sync(kFullMask, a, d);
          o |= __shfl_xor_sync(kFullMask, o, d);
        }
        if (tid % 32 == 0) {
          atomicAnd(&sh.span_and, a);
          atomicOr(&sh.span_or, o);
        }
        __syncthreads();
        span = OrderSpan{sh.span_and, sh.span_or};
      }
      RadixSelect radix =
          radix_begin<Policy>(params, c.need, Policy::kSkipCommonDigits ? &span : nullptr);
      while (radix_next_pass(radix)) {
        if (!histogram_ready) {
          for (std::uint32_t b = tid; b < (1u << radix.width); b += threads) sh.histogram[b] = 0;
          __syncthreads();
          coop_histogram<Policy>(pool, params, in.now, radix, slots,
                                 [&](std::uint32_t bin) { atomicAdd(&sh.histogram[bin], 1u); });
          __syncthreads();
        }
        histogram_ready = false;
        if (tid < 32) {
          warp_histogram_select(sh.histogram, 1u << radix.width, radix.remaining, &sh.digit,
                                &sh.before);
        }
        __syncthreads();
        radix_take(radix, sh.digit, sh.before);
      }
      threshold = radix.prefix;
      ties = radix.remaining;
      own = coop_count_targets<Policy>(pool, params, in.now, threshold, slots);
      before[0] = own.below;
      before[1] = own.at;
      before[2] = own.empty;
      block_scan<3>(before, total, sh.scan_targets);
    }
  }

  // 5. Victims and targets (the scans' barriers ordered phase 2's lists before this).
  const std::uint32_t victims = coop_victims(TargetCounts{total[0], total[1], total[2]}, ties);
  if (victims < c.need) return StepResult{0, 0, StepStatus::kTooFewVictims};  // a policy's bug
  coop_collect<Policy>(
      pool, params, in.now, threshold, slots, own,
      coop_target_offsets(TargetCounts{before[0], before[1], before[2]}, own, ties), c.cached,
      out.fetch_index, out.slot_of, out.victim_slot);
  __syncthreads();

  // 6. Evictions; 7. segments opened by the fetches, popped in fetch order; 8. inserts. Each
  // skipped where it has nothing to do (victims and cached are the same on every thread).
  if (victims > 0) {
    coop_evict<AtomicOps>(pool, segments, &sh.free_count, coop_range(victims, threads, tid),
                          out.victim_slot, out.victim_key);
    __syncthreads();
  }
  const std::uint32_t free_count = sh.free_count;
  std::uint32_t total_opened[1] = {0};
  if (c.cached > 0) {
    const IndexRange fetches = coop_range(c.cached, threads, tid);
    std::uint32_t opened[1] = {
        coop_count_new_segments(pool, segments, in.keys, out.fetch_index, fetches)};
    block_scan<1>(opened, total_opened, sh.scan_segments);
    if (total_opened[0] > 0) {
      coop_take_segments(pool, segments, in.keys, out.fetch_index, fetches, opened[0], free_count);
      __syncthreads();
    }
    coop_insert<Policy, AtomicOps>(pool, segments, in, out.fetch_index, out.slot_of, fetches);
  }

  if (tid == 0) {
    pool_out.resident = pool.resident - victims + c.cached;
    *free_count_out = free_count - total_opened[0];
    counts.hits = c.hits;
    counts.fetches = c.cached;
    counts.bypassed = c.bypassed;
    counts.victims = victims;
  }
  return StepResult{c.cached, c.bypassed, StepStatus::kOk};
}

// Up to 4 blocks per SM (64 registers a thread), so that per-stream pools (512 a layer at batch
// 64) all run at once on 132 SMs.
__global__ void __launch_bounds__(kResidencyThreads, 4) residency_kernel(const ResidencyParams p) {
  extern __shared__ __align__(16) unsigned char staged[];
  __shared__ StepShared sh;
  __shared__ std::uint32_t pool_n;

  const std::uint32_t pool = blockIdx.x;
  const std::uint32_t tid = threadIdx.x;
  const std::uint32_t first = p.pool_first_stream[pool];
  const std::uint32_t last = p.pool_first_stream[pool + 1];
  const std::uint32_t region = p.page_offsets[first];
  const std::uint32_t region_end = p.page_offsets[last];
  const policy::PoolView view = p.pool_views[pool];

  for (std::uint32_t b = tid; b < policy::kHistogramBins; b += blockDim.x) sh.histogram[b] = 0;

  // 1. Map each stream's partition ids to its distinct cacheable pages: where a partition is a
  //    page, a warp per stream (warp_map_page_partitions), else one thread per stream.
  for (std::uint32_t s = first + tid / 32; s < last; s += blockDim.x / 32) {
    if (!partitions_are_pages(p.maps[s])) continue;  // the same on the warp's lanes
    const std::uint32_t begin = p.id_offsets[s];
    const policy::MappedSelection mapped = warp_map_page_partitions(
        p.regions[s], p.ids + begin, p.id_offsets[s + 1] - begin, p.pages + p.page_offsets[s]);
    if (tid % 32 == 0) {
      p.stream_pages[s] = mapped.cacheable_pages;
      p.stream_static[s] = mapped.static_pages;
    }
  }
  for (std::uint32_t s = first + tid; s < last; s += blockDim.x) {
    if (partitions_are_pages(p.maps[s])) continue;
    const std::uint32_t begin = p.id_offsets[s];
    const policy::MappedSelection mapped =
        policy::map_selection_pages(p.maps[s], p.regions[s], p.ids + begin,
                                    p.id_offsets[s + 1] - begin, p.pages + p.page_offsets[s]);
    p.stream_pages[s] = mapped.cacheable_pages;
    p.stream_static[s] = mapped.static_pages;
  }
  __syncthreads();

  // 2. Where each stream's keys start in the pool's selection; stream_pages[s] becomes it.
  if (tid == 0) {
    std::uint32_t at = 0;
    std::uint32_t static_pages = 0;
    for (std::uint32_t s = first; s < last; ++s) {
      const std::uint32_t count = p.stream_pages[s];
      p.stream_pages[s] = at;
      at += count;
      static_pages += p.stream_static[s];
    }
    pool_n = at;
    p.counts[pool].static_pages = static_pages;
    sh.span_and = ~0ull;
    sh.span_or = 0;
    sh.free_count = p.segment_pools[pool].free_count;
  }
  __syncthreads();

  // Shared-memory staging (same rule, faster memory): the slot arrays, then the pool's keys and
  // per-key outputs. Layout: [slot_key E][last_use E][aux E] | [keys N][slot_of N][fetch N]
  // [bypass N], E = stage_extent, N = stage_keys, the second part 16-byte aligned.
  const bool stage_slots = p.stage_extent > 0;
  const bool stage_keys = p.stage_keys > 0;
  const bool aux = view.slot_aux != nullptr;
  PageKey* staged_key = reinterpret_cast<PageKey*>(staged);
  std::uint32_t* staged_last_use = reinterpret_cast<std::uint32_t*>(staged_key + p.stage_extent);
  std::uint32_t* staged_aux = staged_last_use + p.stage_extent;
  PageKey* keys = p.keys + region;
  std::int32_t* slot_of = p.slot_of + region;
  std::uint32_t* fetch_index = p.fetch_index + region;
  std::uint32_t* bypass_index = p.bypass_index + region;
  if (stage_keys) {
    keys = reinterpret_cast<PageKey*>(
        staged + residency_slot_stage_offset(p.stage_extent, p.stage_aux != 0));
    slot_of = reinterpret_cast<std::int32_t*>(keys + p.stage_keys);
    fetch_index = reinterpret_cast<std::uint32_t*>(slot_of + p.stage_keys);
    bypass_index = fetch_index + p.stage_keys;
  }

  // 3. Keys in (stream in pool, page) order: ascending, since each stream's pages ascend. Stage
  //    the slot arrays meanwhile.
  const std::uint32_t n = pool_n;
  for (std::uint32_t s = first + tid / 32; s < last; s += blockDim.x / 32) {  // a warp per stream
    const std::uint32_t start = p.stream_pages[s];
    const std::uint32_t end = s + 1 < last ? p.stream_pages[s + 1] : n;
    const std::uint32_t* pages = p.pages + p.page_offsets[s];
    for (std::uint32_t j = tid % 32; j < end - start; j += 32) {
      keys[start + j] = policy::make_page_key(s - first, pages[j]);
    }
  }
  if (stage_slots) {
    for (std::uint32_t i = tid; i < view.extent; i += blockDim.x) {
      staged_key[i] = view.slot_key[i];
      staged_last_use[i] = view.slot_last_use[i];
      if (aux) staged_aux[i] = view.slot_aux[i];
    }
  }
  __syncthreads();

  // 4. The rule, by the whole block (residency_coop.h: pool_step's decisions, bit for bit).
  policy::PoolView local = view;
  if (stage_slots) {
    local.slot_key = staged_key;
    local.slot_last_use = staged_last_use;
    local.slot_aux = aux ? staged_aux : nullptr;
  }
  const policy::SegmentPoolView segments = p.segment_pools[pool];
  const std::uint32_t victims_at = p.victim_offsets[pool];
  const policy::StepOutput out{slot_of,
                               fetch_index,
                               bypass_index,
                               p.victim_slot + victims_at,
                               p.victim_key + victims_at,
                               0,
                               0,
                               0,
                               0};
  const policy::StepInput in{keys, nullptr, n, p.pool_now[pool]};
  PoolStepCounts& counts = p.counts[pool];
  policy::StepStatus status = policy::StepStatus::kOk;
  StepResult result{0, 0, policy::StepStatus::kOk};
  if (!policy::coop_segments_suffice(local, segments, n)) {
    status = policy::StepStatus::kSegmentPoolExhausted;
  } else {
    const policy::PolicyParams params = p.policy[pool];
    std::uint32_t* const free_count = &p.segment_pools[pool].free_count;
    policy::PoolView& pool_out = p.pool_views[pool];
    switch (params.kind) {
      case policy::PolicyKind::kBucketedLru:
        result = cooperative_step<policy::BucketedLru>(local, params, segments, in, out, sh, counts,
                                                       pool_out, free_count);
        break;
      case policy::PolicyKind::kExactLru:
        result = cooperative_step<policy::ExactLru>(local, params, segments, in, out, sh, counts,
                                                    pool_out, free_count);
        break;
      case policy::PolicyKind::kFifo:
        result = cooperative_step<policy::Fifo>(local, params, segments, in, out, sh, counts,
                                                pool_out, free_count);
        break;
      case policy::PolicyKind::kPreviousStep:
        result = cooperative_step<policy::PreviousStep>(local, params, segments, in, out, sh,
                                                        counts, pool_out, free_count);
        break;
      default:  // Belady needs next uses: GpuResidency rejects it
        status = policy::StepStatus::kUnknownPolicy;
        break;
    }
    if (result.status != policy::StepStatus::kOk) status = result.status;
  }
  if (tid == 0) {
    counts.n = n;
    counts.status = static_cast<std::uint32_t>(status);
    if (status != policy::StepStatus::kOk) {
      counts.hits = counts.fetches = counts.bypassed = counts.victims = 0;
    }
  }
  __syncthreads();

  // 5. Unstage, and write the pool's part of the fetch list.
  const std::uint32_t fetches = result.fetches;
  const std::uint32_t bypassed = result.bypassed;
  if (stage_slots) {
    for (std::uint32_t i = tid; i < view.extent; i += blockDim.x) {
      view.slot_key[i] = staged_key[i];
      view.slot_last_use[i] = staged_last_use[i];
      if (aux) view.slot_aux[i] = staged_aux[i];
    }
  }
  if (stage_keys) {
    for (std::uint32_t i = tid; i < n; i += blockDim.x) {
      p.keys[region + i] = keys[i];
      p.slot_of[region + i] = slot_of[i];
      if (i < fetches) p.fetch_index[region + i] = fetch_index[i];
      if (i < bypassed) p.bypass_index[region + i] = bypass_index[i];
    }
  }
  const std::uint32_t slot_base = p.pool_slot_base[pool];
  for (std::uint32_t j = tid; j < region_end - region; j += blockDim.x) {
    std::uint32_t host_page = kSkipEntry;
    std::uint32_t slot = kSkipEntry;
    if (j < fetches + bypassed) {
      const std::uint32_t i = j < fetches ? fetch_index[j] : bypass_index[j - fetches];
      const PageKey key = keys[i];
      host_page = p.stream_host_base[first + policy::key_stream(key)] + policy::key_page(key);
      if (j < fetches) {
        slot = slot_base + static_cast<std::uint32_t>(slot_of[i]);
      } else if (p.scratch_slot_base != kSkipEntry) {
        slot = p.scratch_slot_base + region + j;
      }
    }
    p.fetch_host_page[region + j] = host_page;
    p.fetch_slot[region + j] = slot;
  }
}

}  // namespace

std::uint64_t residency_shared_bytes(std::uint32_t stage_extent, bool aux,
                                     std::uint32_t stage_keys) {
  return residency_slot_stage_offset(stage_extent, aux) +
         std::uint64_t{stage_keys} * (sizeof(PageKey) + 3 * sizeof(std::uint32_t));
}

std::uint32_t residency_concurrent_blocks(std::uint64_t shared_bytes) {
  int device = 0;
  int sms = 0;
  int per_sm = 0;
  SPIN_CUDA_CHECK(cudaGetDevice(&device));
  SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  SPIN_CUDA_CHECK(cudaFuncSetAttribute(residency_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes)));
  SPIN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, residency_kernel, kResidencyThreads, static_cast<std::size_t>(shared_bytes)));
  return static_cast<std::uint32_t>(sms * per_sm);
}

std::uint64_t residency_stage_limit_bytes() {
  int device = 0;
  int optin = 0;
  SPIN_CUDA_CHECK(cudaGetDevice(&device));
  SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<std::uint64_t>(optin) > kStaticSharedBytes ? optin - kStaticSharedBytes : 0;
}

void launch_residency(const ResidencyParams& params, CUstream_st* stream) {
  if (params.pools == 0) return;
  const std::uint64_t shared =
      residency_shared_bytes(params.stage_extent, params.stage_aux != 0, params.stage_keys);
  SPIN_CUDA_CHECK(cudaFuncSetAttribute(
      residency_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  residency_kernel<<<params.pools, kResidencyThreads, shared, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

}  // namespace spin::exec
