// Page keys: the identity of one logical page inside one pool (DESIGN.md §2, §4.2).
//
// Device-capable (STYLE.md, "one policy, two compilers"). A key packs (stream in pool, logical
// page) into 64 bits so that ascending keys are ascending (stream, page) order, the order in
// which the residency rule assigns slots to misses. Streams of a pool are numbered 0.. in
// (layer, KV head) order; a logical page is the page index in the stream's storage order.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace spin::policy {

using PageKey = std::uint64_t;

// The key of no page (an empty slot).
inline constexpr PageKey kNoPage = ~PageKey{0};

SPIN_HD constexpr PageKey make_page_key(std::uint32_t stream_in_pool, std::uint32_t page) {
  return (static_cast<PageKey>(stream_in_pool) << 32) | page;
}
SPIN_HD constexpr std::uint32_t key_stream(PageKey key) {
  return static_cast<std::uint32_t>(key >> 32);
}
SPIN_HD constexpr std::uint32_t key_page(PageKey key) {
  return static_cast<std::uint32_t>(key & 0xFFFFFFFFu);
}

}  // namespace spin::policy
