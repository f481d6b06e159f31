// Two-level GPU page table (DESIGN.md §4.4), device-capable.
//
// Per stream, a small top-level directory of segment handles; each segment maps S = 2^log2
// consecutive logical pages to an HBM slot or kAbsentSlot. Segments come from a pool shared by
// every stream that uses it: a segment is taken (lowest free handle on a fresh pool; the most
// recently released one afterwards) when the first page of its range becomes resident and given
// back when its last resident page leaves, so the table's size follows the working set, not the
// context. Lookups are two array reads.
//
// Invariants (checked by the host's check_invariants):
// - directory[s][d] is kNoSegment or a handle owned by exactly that (stream, d);
// - an owned segment has used > 0 and used == number of its entries != kAbsentSlot;
// - free_stack[0, free_count) holds each unowned handle once;
// - every entry of a free segment is kAbsentSlot: the pool's owner fills new segments with it,
//   and erase restores an entry before its segment can be given back, so taking a segment needs
//   no clearing.
//
// Concurrency: the functions are sequential. Calls that share a segment pool must be serialised
// (a CUDA kernel runs one pool at a time per segment pool, or gives each pool its own pool).
//
// Complexity: lookup O(1); insert O(1); erase O(1).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/hd.h"
#include "common/policy/page_key.h"

namespace spin::policy {

inline constexpr std::int32_t kAbsentSlot = -1;
inline constexpr std::uint32_t kNoSegment = 0xFFFFFFFFu;

// The shared pool of second-level segments.
struct SegmentPoolView {
  std::int32_t* entries;      // [capacity, 1 << segment_pages_log2] slot or kAbsentSlot
  std::uint32_t* used;        // [capacity] entries != kAbsentSlot of an owned segment
  std::uint32_t* free_stack;  // [capacity] unowned handles; the top is free_stack[free_count-1]
  std::uint32_t capacity;     // segments
  std::uint32_t free_count;   // unowned segments
  std::uint32_t segment_pages_log2;
};
static_assert(std::is_trivially_copyable_v<SegmentPoolView>);

// The top-level directories of one pool's streams.
struct DirectoryView {
  std::uint32_t* directory;  // [streams, entries_per_stream] segment handle or kNoSegment
  std::uint32_t streams;
  std::uint32_t entries_per_stream;  // ceil(max logical pages / S)
};
static_assert(std::is_trivially_copyable_v<DirectoryView>);

SPIN_HD std::uint32_t* directory_entry(const DirectoryView& dir, const SegmentPoolView& segs,
                                       PageKey key) {
  return dir.directory + static_cast<std::uint64_t>(key_stream(key)) * dir.entries_per_stream +
         (key_page(key) >> segs.segment_pages_log2);
}

SPIN_HD std::int32_t* segment_entry(const SegmentPoolView& segs, std::uint32_t handle,
                                    PageKey key) {
  const std::uint32_t mask = (1u << segs.segment_pages_log2) - 1;
  return segs.entries + (static_cast<std::uint64_t>(handle) << segs.segment_pages_log2) +
         (key_page(key) & mask);
}

// The slot holding `key`, or kAbsentSlot.
SPIN_HD std::int32_t page_table_lookup(const DirectoryView& dir, const SegmentPoolView& segs,
                                       PageKey key) {
  const std::uint32_t handle = *directory_entry(dir, segs, key);
  if (handle == kNoSegment) return kAbsentSlot;
  return *segment_entry(segs, handle, key);
}

// Maps an absent `key` to `slot`. Requires a free segment when the key's range has none.
SPIN_HD void page_table_insert(const DirectoryView& dir, SegmentPoolView& segs, PageKey key,
                               std::int32_t slot) {
  std::uint32_t* handle = directory_entry(dir, segs, key);
  if (*handle == kNoSegment) {
    *handle = segs.free_stack[--segs.free_count];
    segs.used[*handle] = 0;  // its entries are all kAbsentSlot already (see the invariants)
  }
  *segment_entry(segs, *handle, key) = slot;
  ++segs.used[*handle];
}

// Unmaps a present `key`; gives its segment back when that was the segment's last page.
SPIN_HD void page_table_erase(const DirectoryView& dir, SegmentPoolView& segs, PageKey key) {
  std::uint32_t* handle = directory_entry(dir, segs, key);
  *segment_entry(segs, *handle, key) = kAbsentSlot;
  if (--segs.used[*handle] == 0) {
    segs.free_stack[segs.free_count++] = *handle;
    *handle = kNoSegment;
  }
}

}  // namespace spin::policy
