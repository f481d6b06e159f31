// The decision log: every pool step's hits, victims, fetch list and bypasses as text lines, so two
// runs or two backends (simulator and executor) can be diffed byte for byte.
//
// Format (version 1). One header line, then per pool step one `step` line and up to four list
// lines, each omitted when its list is empty. Keys are `stream:page` (stream within the pool,
// logical page); all numbers are decimal; single spaces; lines end with '\n'.
//
//   # spin decision log v1
//   step <now> req <request> pool <pool> sel <n> hit <h> fetch <f> bypass <b> evict <v> static <s>
//   H <key>@<slot> ...   hits, ascending key
//   E <key>@<slot> ...   victims (the page each freed slot held), ascending slot
//   F <key>@<slot> ...   fetch list, in fetch order (ascending key and ascending slot)
//   B <key> ...          bypassed misses, ascending key
//
// `sel` counts the selected cacheable pages (h + f + b); `static` the selected static-region pages.
// `req` is the request's id: the engine's RequestId in an engine's own log, the trace's request id
// in `spin replay`'s.
// Pool steps appear in the order the driver runs them (for the engine: per request step, pools in
// ascending pool index).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/policy/page_key.h"

namespace spin::policy {

inline constexpr const char* kDecisionLogHeader = "# spin decision log v1\n";

// One pool step's decisions (views into the pool's step buffers).
struct PoolDecisions {
  std::uint64_t request = 0;
  std::uint32_t pool = 0;
  std::uint32_t now = 0;
  std::uint32_t static_pages = 0;
  std::span<const PageKey> keys;                // [n] the selection, ascending
  std::span<const std::int32_t> slot_of;        // [n] slot after the step, or kBypassSlot
  std::span<const std::uint32_t> fetch_index;   // cached misses, ascending
  std::span<const std::uint32_t> bypass_index;  // bypassed misses, ascending
  std::span<const std::int32_t> victim_slot;    // ascending
  std::span<const PageKey> victim_key;
  std::uint32_t hits = 0;
};

// Appends the step's lines (not the header) to `out`.
void append_decision_log(std::string& out, const PoolDecisions& decisions);

}  // namespace spin::policy
