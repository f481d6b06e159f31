// Replay: the policy core alone over a trace source, without a timing model (`spin replay`).
//
// Every request is replayed on its own (its pools never share slots with another request's), from
// step 0 to its last recorded step, all layers of a step together; the request's cache holds
// floor((1 + k)·M_r) pages at buffer ratio k, with M_r recomputed at every step from the
// algorithm's retrieval budget and the context (docs/policy.md). Requests run in parallel on
// `threads` workers, each with its own Engine; results are merged in request order, so the
// output does not depend on the thread count. Belady reads each request's whole future first
// (memory: every selected page of the request, 8 bytes each).
//
// This is the fast path of policy studies; a full simulation reports the same hit counts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "common/policy/cache_config.h"
#include "common/policy/engine.h"
#include "common/trace/source.h"

namespace spin::sim {

struct ReplayOptions {
  policy::CacheConfig cache;
  unsigned threads = 1;
  // Where to write the decision log (docs/policy.md), or nothing. Requests are logged in order.
  std::optional<std::filesystem::path> decision_log;
  // Check the policy engine's invariants after every pool step (slower; for new policies).
  bool check_invariants = false;
  // Called after each finished request with (done, total), from the calling thread.
  std::function<void(size_t, size_t)> progress;
};

struct ReplayResult {
  std::string policy;
  std::uint64_t requests = 0;
  std::uint64_t request_steps = 0;  // decode steps over all requests
  // Bytes of one page (K and V of one stream), ascending: one entry unless the trace's
  // algorithms have different page sizes.
  std::vector<std::uint64_t> page_bytes;
  std::vector<policy::PolicyStats> layers;  // [layers], summed over requests
  policy::PolicyStats total;
  // Metadata of the request whose two-level tables peaked highest (requests replay one at a
  // time, so this is the footprint of one request, next to the flat table it would need).
  policy::MetadataBytes peak_metadata;
};

ReplayResult replay(const trace::TraceSource& source, const ReplayOptions& options);

}  // namespace spin::sim
