// A stream's whole future, for Belady/OPT (DESIGN.md §4.2): the pages it selects at each step,
// and for every access the step at which the same page is next selected.
//
// Usage (host only: replay and the simulator): the driver reads a (request, layer) of the trace
// into memory, builds one StreamFuture per KV head with push_selection (the same mapping as
// Engine::select; for variable clusters the driver replays the cluster appends on a PartitionMap of
// its own), and hands it to Engine::set_future before replaying the request. The future lists every
// step of the request in order (an empty selection where the stream selected nothing); the engine
// checks that the replay selects exactly these pages, passing over the steps before the first one
// it replays (a request resumed after a preemption skips the steps it ran before).
//
// Complexity: push O(pages); finalize O(accesses + highest page).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/policy/partition_map.h"

namespace spin::policy {

class StreamFuture {
 public:
  // Appends a step: its step counter (strictly increasing) and its cacheable pages (ascending,
  // distinct). Throws InputError otherwise.
  void push_step(std::uint32_t now, std::span<const std::uint32_t> pages);
  // Maps the selection as Engine::select does, then appends it.
  void push_selection(std::uint32_t now, const PartitionMapView& map, const StaticRegion& region,
                      std::span<const std::uint32_t> partition_ids);
  // Computes the next uses; call after the last push.
  void finalize();

  std::size_t steps() const { return now_.size(); }
  std::uint32_t now(std::size_t step) const { return now_[step]; }
  std::span<const std::uint32_t> pages(std::size_t step) const;
  // After finalize: for each page of the step, the `now` of its next selection, or kNeverUsed.
  std::span<const std::uint32_t> next_uses(std::size_t step) const;

 private:
  std::vector<std::uint32_t> now_;          // [steps]
  std::vector<std::uint64_t> begin_ = {0};  // [steps + 1] CSR into pages_
  std::vector<std::uint32_t> pages_;        // [accesses]
  std::vector<std::uint32_t> next_use_;     // [accesses] after finalize
  std::vector<std::uint32_t> scratch_;
};

}  // namespace spin::policy
