#include "exec/cuda_check.h"
#include "exec/gather.h"
#include "exec/residency_kernel.h"

namespace spin::exec {
namespace {

using policy::PageKey;

// Static shared memory of the kernel besides the staged slots (histogram and a few words), with
// room to spare; the staging limit leaves it out.
constexpr std::uint64_t kStaticSharedBytes = 2048;

__global__ void __launch_bounds__(kResidencyThreads) residency_kernel(const ResidencyParams p) {
  extern __shared__ __align__(16) unsigned char staged[];
  __shared__ std::uint32_t histogram[policy::kHistogramBins];
  __shared__ std::uint32_t pool_n;
  __shared__ std::uint32_t pool_fetches;
  __shared__ std::uint32_t pool_bypassed;

  const std::uint32_t pool = blockIdx.x;
  const std::uint32_t tid = threadIdx.x;
  const std::uint32_t first = p.pool_first_stream[pool];
  const std::uint32_t last = p.pool_first_stream[pool + 1];
  const std::uint32_t region = p.page_offsets[first];
  const std::uint32_t region_end = p.page_offsets[last];
  const policy::PoolView view = p.pool_views[pool];

  // 1. Map each stream's partition ids to its distinct cacheable pages (one thread per stream).
  for (std::uint32_t s = first + tid; s < last; s += blockDim.x) {
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
  for (std::uint32_t s = first + tid; s < last; s += blockDim.x) {
    const std::uint32_t start = p.stream_pages[s];
    const std::uint32_t end = s + 1 < last ? p.stream_pages[s + 1] : n;
    const std::uint32_t* pages = p.pages + p.page_offsets[s];
    for (std::uint32_t j = 0; j < end - start; ++j) {
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

  // Warm-up: every thread looks up a share of the keys, so the directory and segment entries
  // that thread 0 reads next are in this SM's L1 (a dependent pair of L2 reads per key on one
  // thread was most of the step's time). Writes the same slot_of values pool_step writes first;
  // the rule's decisions do not depend on it.
  {
    const policy::SegmentPoolView segments = p.segment_pools[pool];
    for (std::uint32_t i = tid; i < n; i += blockDim.x) {
      slot_of[i] = policy::page_table_lookup(view.table, segments, keys[i]);
    }
  }
  __syncthreads();

  // 4. The rule itself, unchanged, on one thread.
  if (tid == 0) {
    policy::PoolView local = view;
    if (stage_slots) {
      local.slot_key = staged_key;
      local.slot_last_use = staged_last_use;
      local.slot_aux = aux ? staged_aux : nullptr;
    }
    policy::SegmentPoolView segments = p.segment_pools[pool];
    const std::uint32_t victims_at = p.victim_offsets[pool];
    policy::StepOutput out{slot_of,
                           fetch_index,
                           bypass_index,
                           p.victim_slot + victims_at,
                           p.victim_key + victims_at,
                           0,
                           0,
                           0,
                           0};
    const policy::StepInput in{keys, nullptr, n, p.pool_now[pool]};
    const policy::StepStatus status =
        policy::pool_step(local, p.policy[pool], segments, in, histogram, out);
    PoolStepCounts& counts = p.counts[pool];
    counts.n = n;
    counts.status = static_cast<std::uint32_t>(status);
    if (status == policy::StepStatus::kOk) {
      p.pool_views[pool].resident = local.resident;
      p.segment_pools[pool].free_count = segments.free_count;
      counts.hits = out.hits;
      counts.fetches = out.fetches;
      counts.bypassed = out.bypassed;
      counts.victims = out.victims;
    } else {
      counts.hits = counts.fetches = counts.bypassed = counts.victims = 0;
    }
    pool_fetches = counts.fetches;
    pool_bypassed = counts.bypassed;
  }
  __syncthreads();

  // 5. Unstage, and write the pool's part of the fetch list.
  const std::uint32_t fetches = pool_fetches;
  const std::uint32_t bypassed = pool_bypassed;
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
