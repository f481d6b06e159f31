// The nvcc half of the device-capable compile check (STYLE.md, "one policy, two compilers"):
// every device-capable header of the policy core, included and called from a kernel, so that a
// CUDA build fails as soon as one of them stops compiling for the device. The kernel is never
// launched; the executor's real kernels call the same functions.
#include <cstdint>

#include "common/policy/page_key.h"
#include "common/policy/page_table.h"
#include "common/policy/partition_map.h"
#include "common/policy/residency.h"
#include "common/policy/residency_coop.h"

namespace spin::exec {

// One thread runs one pool step, as the residency kernel will. External linkage, so that nvcc
// neither drops nor warns about the unlaunched kernel.
__global__ void policy_core_compile_check(spin::policy::PoolView pool,
                                          spin::policy::PolicyParams params,
                                          spin::policy::SegmentPoolView* segments,
                                          spin::policy::PartitionMapView map,
                                          const std::uint32_t* ids,  // [n]
                                          std::uint32_t n,
                                          std::uint32_t* pages,         // [map's pages]
                                          spin::policy::PageKey* keys,  // [n]
                                          std::uint32_t* histogram,     // [kHistogramBins]
                                          spin::policy::StepOutput* out, std::uint32_t now,
                                          std::uint32_t* status) {
  using namespace spin::policy;
  const StaticRegion region = make_static_region(4, 64, map.stored_tokens, map.page_tokens_log2);
  const MappedSelection mapped = map_selection_pages(map, region, ids, n, pages);
  for (std::uint32_t i = 0; i < mapped.cacheable_pages; ++i) keys[i] = make_page_key(0, pages[i]);
  const StepInput in{keys, nullptr, mapped.cacheable_pages, now};
  status[0] = static_cast<std::uint32_t>(pool_step(pool, params, *segments, in, histogram, *out));
  status[1] = page_table_lookup(pool.table, *segments, keys[0]) >= 0 ? key_page(keys[0]) : 0;
  status[2] = policy_uses_aux(params.kind) ? 1u : 0u;
  // The cooperative phases run on one thread (residency_kernel.cu runs them on a block).
  std::uint32_t offsets[4];
  TargetCounts counts[4];
  status[3] = static_cast<std::uint32_t>(
      coop_pool_step(pool, params, *segments, in, histogram, *out, 4, offsets, counts));
}

}  // namespace spin::exec
