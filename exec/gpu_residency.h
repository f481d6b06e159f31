// GpuResidency: the host side of the residency kernel (residency_kernel.h). It owns the device
// state of a set of pools (slot arrays, two-level page tables, one segment pool per pool) and,
// per step, plans a launch (uploads the streams' selections and partition maps into one plain
// ResidencyParams), runs it, and reads the decisions back for logs and tests.
//
// Call order: construct → { [set_capacity] → plan(step) → run() → [download() → decisions()] }*.
// plan() is synchronous (uploads; it first waits for the last run, whatever its stream, so that
// the uploads never overwrite what a queued kernel reads); run() only launches on the given
// stream; download() synchronises. The fetch list of the last run stays on the device
// (fetch_host_page(), fetch_slot(), fetch_list_size()) for launch_gather, holes included.
//
// Mirrors the policy engine (common/policy/engine.h): a pool's extent is the largest capacity it
// was given (set_capacity, as Engine::set_cache_pages grows a pool), slots start empty, and keys
// are (stream in pool, page). Given the same pools, capacities, `now` and selections, the
// decisions are the engine's, bit for bit (the gpu suite diffs the decision logs). Belady needs
// next uses the kernel does not take: it is a simulator-only policy and is rejected here.
//
// Memory: per pool max_extent · (8 + 4 [+ 4 aux]) bytes of slots, streams · directory entries ·
// 4 bytes of directory, and (min(streams · entries, max_extent) + max_extent) segments of
// 4 · 2^segment_pages_log2 bytes (enough that a step never finds the segment pool exhausted).
// Per step, O(selected partitions) host work to build the CSR arrays and bounds.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/policy/decision_log.h"
#include "exec/gather.h"
#include "exec/memory.h"
#include "exec/residency_kernel.h"

namespace spin::exec {

struct GpuPoolSpec {
  std::uint32_t streams = 1;            // streams in the pool
  std::uint32_t max_extent = 0;         // slots allocated (the largest capacity it will get)
  std::uint32_t capacity = 0;           // initial capacity (≤ max_extent)
  std::uint32_t directory_entries = 1;  // per stream: ceil(max logical pages / segment pages)
  policy::PolicyParams policy{policy::PolicyKind::kBucketedLru, 64, 0};
  std::uint32_t slot_base = 0;  // HBM slot of the pool's slot 0 (for the fetch list)
};

// One stream's selection at a step, in the launch's stream order (pool by pool, each pool's
// streams in order). map.offsets (variable partitions) is a host pointer; plan() uploads it.
struct StreamSelection {
  policy::PartitionMapView map;
  policy::StaticRegion region;
  std::span<const std::uint32_t> ids;  // ascending, valid for map (not checked here)
  std::uint32_t host_base = 0;         // host page index of the stream's page 0
};

// What the residency kernel keeps in shared memory during a step, where it fits without
// lowering the number of pools that run at once (else the next smaller choice is taken).
enum class Staging : std::uint32_t {
  kNone = 0,               // everything in global memory
  kSelection = 1,          // the pool's keys and per-key outputs (the default)
  kSelectionAndSlots = 2,  // and the pool's slot arrays
};

class GpuResidency {
 public:
  GpuResidency(std::span<const GpuPoolSpec> pools, std::uint32_t segment_pages_log2,
               Staging staging = Staging::kSelection);

  std::uint32_t pools() const { return static_cast<std::uint32_t>(specs_.size()); }
  std::uint32_t streams() const { return streams_; }
  // Takes effect at the next plan(); grows the extent like Engine (≤ max_extent).
  void set_capacity(std::uint32_t pool, std::uint32_t capacity);
  // What the last plan() staged in shared memory.
  bool staged_slots() const { return params_.stage_extent > 0; }
  bool staged_keys() const { return params_.stage_keys > 0; }

  // now: [pools]; selections: [streams()] in pool order. scratch_slot_base: first HBM slot of
  // the bypass scratch (one slot per fetch-list entry), or kSkipEntry to leave bypasses out.
  void plan(std::span<const std::uint32_t> now, std::span<const StreamSelection> selections,
            std::uint32_t scratch_slot_base = kSkipEntry);
  void run(CUstream_st* stream = nullptr);
  void download();

  const PoolStepCounts& counts(std::uint32_t pool) const { return counts_[pool]; }
  // The pool's decisions of the last downloaded step; request and pool are the caller's labels.
  policy::PoolDecisions decisions(std::uint32_t pool, std::uint64_t request,
                                  std::uint32_t pool_label) const;
  // The last step's fetch list on the device: fetch_list_size() entries, holes as kSkipEntry.
  const std::uint32_t* fetch_host_page() const { return fetch_host_page_.data(); }
  const std::uint32_t* fetch_slot() const { return fetch_slot_.data(); }
  std::uint32_t fetch_list_size() const { return list_size_; }
  // Host copies after download().
  std::span<const std::uint32_t> fetch_host_page_host() const { return h_fetch_host_page_; }
  std::span<const std::uint32_t> fetch_slot_host() const { return h_fetch_slot_; }
  const ResidencyParams& params() const { return params_; }

 private:
  std::vector<GpuPoolSpec> specs_;
  std::uint32_t streams_ = 0;
  Staging staging_ = Staging::kSelection;
  std::uint32_t segment_pages_log2_ = 0;
  std::uint32_t max_extent_ = 0;
  std::uint64_t stage_limit_bytes_ = 0;
  bool any_aux_ = false;
  std::vector<policy::PoolView> views_;  // host copies (device pointers); capacity/extent edited
  std::vector<std::uint32_t> pool_first_stream_;
  std::vector<std::uint32_t> victim_offsets_;
  std::vector<std::uint32_t> slot_bases_;
  // Device state.
  DeviceArray<policy::PageKey> slot_key_;
  DeviceArray<std::uint32_t> slot_last_use_;
  DeviceArray<std::uint32_t> slot_aux_;
  DeviceArray<std::uint32_t> directory_;
  DeviceArray<std::int32_t> seg_entries_;
  DeviceArray<std::uint32_t> seg_used_;
  DeviceArray<std::uint32_t> seg_free_;
  DeviceArray<policy::PoolView> d_views_;
  DeviceArray<policy::SegmentPoolView> d_segments_;
  DeviceArray<policy::PolicyParams> d_policy_;
  DeviceArray<std::uint32_t> d_first_stream_;
  DeviceArray<std::uint32_t> d_victim_offsets_;
  DeviceArray<std::uint32_t> d_slot_base_;
  DeviceArray<std::int32_t> victim_slot_;
  DeviceArray<policy::PageKey> victim_key_;
  DeviceArray<PoolStepCounts> d_counts_;
  // Per-step arrays (grown as needed).
  DeviceArray<std::uint32_t> d_now_;
  DeviceArray<policy::PartitionMapView> d_maps_;
  DeviceArray<policy::StaticRegion> d_regions_;
  DeviceArray<std::uint32_t> d_id_offsets_;
  DeviceArray<std::uint32_t> d_ids_;
  DeviceArray<std::uint32_t> d_page_offsets_;
  DeviceArray<std::uint32_t> d_offsets_;  // variable partition offsets of all streams
  DeviceArray<std::uint32_t> d_host_base_;
  DeviceArray<std::uint32_t> d_stream_pages_;
  DeviceArray<std::uint32_t> d_stream_static_;
  DeviceArray<std::uint32_t> pages_;
  DeviceArray<policy::PageKey> keys_;
  DeviceArray<std::int32_t> slot_of_;
  DeviceArray<std::uint32_t> fetch_index_;
  DeviceArray<std::uint32_t> bypass_index_;
  DeviceArray<std::uint32_t> fetch_host_page_;
  DeviceArray<std::uint32_t> fetch_slot_;
  std::uint32_t list_size_ = 0;
  ResidencyParams params_{};
  bool views_dirty_ = true;
  LaunchFence fence_;  // the last run, which plan() waits for
  // Host copies of the last step.
  std::vector<std::uint32_t> h_now_;
  std::vector<std::uint32_t> h_page_offsets_;
  std::vector<PoolStepCounts> counts_;
  std::vector<policy::PageKey> h_keys_;
  std::vector<std::int32_t> h_slot_of_;
  std::vector<std::uint32_t> h_fetch_index_;
  std::vector<std::uint32_t> h_bypass_index_;
  std::vector<std::int32_t> h_victim_slot_;
  std::vector<policy::PageKey> h_victim_key_;
  std::vector<std::uint32_t> h_fetch_host_page_;
  std::vector<std::uint32_t> h_fetch_slot_;
};

}  // namespace spin::exec
