// The residency kernel (DESIGN.md §4.2, §6): the per-pool step rule of the policy core, on the
// GPU, for many pools in one launch (all pools of a layer, or of a whole step), reading the
// streams' selections and the page table in device memory and writing each pool's decisions and
// its part of the gather kernel's fetch list. No host round trip between selection and copy.
//
// One rule, two compilers: the kernel maps selections with policy::map_selection_pages and runs
// the step rule as the phases of policy's cooperative formulation (common/policy/
// residency_coop.h), which make pool_step's decisions bit for bit (a unit test diffs them on the
// CPU), so its decisions are the CPU policy engine's (common/policy/engine.h) on the same
// inputs; the gpu suite diffs the two decision logs.
//
// Launch layout: one block (kResidencyThreads threads) per pool. A warp per stream maps the
// stream's selection to pages where a partition is a page (else one thread per stream); thread 0
// turns the per-stream counts into offsets; a warp per stream writes the pool's keys in (stream,
// page) order. Then the block runs the rule: thread t runs range t (coop_range) of every phase,
// over keys, slots, victims or fetches, with a barrier (or a block-wide prefix sum, one barrier)
// between phases; bin selection of the radix passes runs on one warp. Last, the block writes the
// pool's fetch list. Staging (same rule, faster memory): with stage_keys the pool's keys and
// per-key outputs (slot_of, fetch_index, bypass_index) live in shared memory during the step and
// are copied out after it; with stage_extent the slot arrays are copied in and back. The caller
// enables each only where it fits (residency_shared_bytes ≤ residency_stage_limit_bytes) and all
// pools still run at once (residency_concurrent_blocks).
//
// Each pool has its own segment pool (SegmentPoolView); slots chosen never depend on segment
// handles, so this is a storage choice, not a different rule (the order in which a step's
// emptied segments return to the free stack, and so later handles, may vary between runs). It
// must hold at least most_new_segments (page_table.h) free segments at every step (size it
// min(streams · directory entries, extent) + extent to be always safe); otherwise the pool's
// status is kSegmentPoolExhausted and that pool is left unchanged. A policy that frees fewer
// slots than its step needs (a breach of residency.h's contract) ends the pool's step with
// kTooFewVictims (hits pinned, nothing fetched or evicted) instead of fetching into no slot.
//
// Per-launch arrays (device memory), with streams of pool p = [pool_first_stream[p],
// pool_first_stream[p+1]) numbered 0.. within the pool (their key's stream), and the pool's
// region R(p) = [page_offsets[pool_first_stream[p]], page_offsets[pool_first_stream[p+1]]):
// keys, slot_of, fetch_index, bypass_index, fetch_host_page and fetch_slot of pool p live in R(p)
// (indices inside the pool's step are relative to the region's start). page_offsets[s+1] −
// page_offsets[s] must bound stream s's distinct cacheable pages (e.g. its page count, or
// selected partitions × the most pages one partition spans). victim_slot and victim_key of pool
// p start at victim_offsets[p] and hold the pool's extent.
//
// Fetch list (the gather kernel's input): in R(p), entries [0, fetches) are the cached misses
// in fetch order (host page = stream_host_base[stream] + logical page, slot = pool_slot_base[p]
// + slot); entries [fetches, fetches + bypassed) the bypassed misses, to scratch slot
// scratch_slot_base + (index in the launch's list), or kSkipEntry when scratch_slot_base is
// kSkipEntry; the rest are holes (kSkipEntry).
//
// Complexity: per pool, O(selected partitions + pages) mapping in parallel over streams, then
// the rule's O(n + extent) work spread over the block's threads (10 to 14 barriers when the
// oldest bucket suffices, more when the radix select needs passes); pools run concurrently on all
// SMs.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/hd.h"
#include "common/policy/page_key.h"
#include "common/policy/page_table.h"
#include "common/policy/partition_map.h"
#include "common/policy/residency.h"

struct CUstream_st;

namespace spin::exec {

inline constexpr std::uint32_t kResidencyThreads = 256;

// What the step did in one pool (the counts of StepOutput, plus the static pages and status).
struct PoolStepCounts {
  std::uint32_t n;  // selected cacheable pages (keys)
  std::uint32_t hits;
  std::uint32_t fetches;
  std::uint32_t bypassed;
  std::uint32_t victims;
  std::uint32_t static_pages;
  std::uint32_t status;  // policy::StepStatus
};
static_assert(std::is_trivially_copyable_v<PoolStepCounts>);

struct ResidencyParams {
  std::uint32_t pools;
  std::uint32_t streams;
  policy::PoolView* pool_views;            // [pools] device-array views; resident is updated
  policy::SegmentPoolView* segment_pools;  // [pools] one per pool; free_count is updated
  const policy::PolicyParams* policy;      // [pools]
  const std::uint32_t* pool_now;           // [pools] the step counter of the pool's request
  const std::uint32_t* pool_first_stream;  // [pools + 1]
  // Selections, per stream of the launch.
  const policy::PartitionMapView* maps;  // [streams] (variable offsets in device memory)
  const policy::StaticRegion* regions;   // [streams]
  const std::uint32_t* id_offsets;       // [streams + 1] CSR into ids
  const std::uint32_t* ids;              // [id_offsets[streams]] ascending per stream
  const std::uint32_t* page_offsets;     // [streams + 1] page bound of each stream (see above)
  std::uint32_t* pages;                  // [page_offsets[streams]] scratch: mapped pages
  std::uint32_t* stream_pages;           // [streams] scratch: cacheable pages per stream
  std::uint32_t* stream_static;          // [streams] scratch: static pages per stream
  // Decisions, per pool region.
  policy::PageKey* keys;                // [page_offsets[streams]]
  std::int32_t* slot_of;                // [page_offsets[streams]]
  std::uint32_t* fetch_index;           // [page_offsets[streams]]
  std::uint32_t* bypass_index;          // [page_offsets[streams]]
  const std::uint32_t* victim_offsets;  // [pools]
  std::int32_t* victim_slot;            // [sum of extents]
  policy::PageKey* victim_key;          // [sum of extents]
  PoolStepCounts* counts;               // [pools]
  // The fetch list.
  const std::uint32_t* stream_host_base;  // [streams] host page index of the stream's page 0
  const std::uint32_t* pool_slot_base;    // [pools] HBM slot of the pool's slot 0
  std::uint32_t scratch_slot_base;        // bypass scratch, or kSkipEntry
  std::uint32_t* fetch_host_page;         // [page_offsets[streams]]
  std::uint32_t* fetch_slot;              // [page_offsets[streams]]
  // Shared-memory staging (0: off).
  std::uint32_t stage_extent;  // slot arrays: the largest extent of the launch, else 0
  std::uint32_t stage_aux;     // 1 if any pool's policy uses slot_aux
  std::uint32_t stage_keys;    // keys and per-key outputs: the largest region, else 0
};
static_assert(std::is_trivially_copyable_v<ResidencyParams>);

// Bytes before the staged keys: the staged slot arrays, rounded up to 16.
SPIN_HD constexpr std::uint64_t residency_slot_stage_offset(std::uint32_t stage_extent, bool aux) {
  return (std::uint64_t{stage_extent} * (sizeof(policy::PageKey) + 4 * (aux ? 2 : 1)) + 15) / 16 *
         16;
}
// Dynamic shared memory of a launch staging `stage_extent` slots and `stage_keys` keys.
std::uint64_t residency_shared_bytes(std::uint32_t stage_extent, bool aux,
                                     std::uint32_t stage_keys);
// The most shared memory a block of the residency kernel may use on the current device.
std::uint64_t residency_stage_limit_bytes();
// Blocks of the residency kernel that run at once on the current device with `shared_bytes` of
// dynamic shared memory each (pools beyond it wait for a free block: staging that lowers it
// below the pool count trades concurrency for faster slot accesses, usually a loss).
std::uint32_t residency_concurrent_blocks(std::uint64_t shared_bytes);

// Launches one block per pool on `stream`; checks the launch, does not synchronise.
void launch_residency(const ResidencyParams& params, CUstream_st* stream = nullptr);

}  // namespace spin::exec
