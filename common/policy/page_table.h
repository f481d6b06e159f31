// GPU page tables (DESIGN.md §4.4), device-capable: where each resident page of a pool sits.
// Two layouts behind one set of functions (page_table_lookup / _insert / _erase), picked per pool
// by DirectoryView::directory (null: hashed):
//
// Two-level (DESIGN.md §4.4). Per stream, a small top-level directory of segment handles; each
// segment maps S = 2^log2 consecutive logical pages to an HBM slot or kAbsentSlot. Segments come
// from a pool shared by every stream that uses it: a segment is taken (lowest free handle on a
// fresh pool; the most recently released one afterwards) when the first page of its range becomes
// resident and given back when its last resident page leaves. The directory grows with the
// context (1/S of a flat table); the segments with the number of S-page ranges holding a resident
// page, which is the working set only when selections are clustered. Lookups are two array reads.
//
// Hashed (docs/policy.md §7). Per pool, an open-addressing table of `bucket_count` 4-byte
// buckets (bucket_count > the pool's extent), each kAbsentSlot or the slot of one resident page;
// the page's key is the slot's key (`slot_key`, the pool's PoolView::slot_key). Linear probing
// from bucket ⌊hash(key)·bucket_count / 2^32⌋, deletion by backward shift (no tombstones), so
// its bytes follow the pool's slots whatever the context and the selections' spread. No segment
// pool is used. Lookup, insert and erase are O(1) expected (load ≤ 1/2 as the engine sizes it).
//
// Invariants (checked by the host's check_invariants):
// - two-level: directory[s][d] is kNoSegment or a handle owned by exactly that (stream, d);
//   an owned segment has used > 0 and used == number of its entries != kAbsentSlot;
//   free_stack[0, free_count) holds each unowned handle once; every entry of a free segment is
//   kAbsentSlot (the pool's owner fills new segments with it, and erase restores an entry before
//   its segment can be given back, so taking a segment needs no clearing);
// - hashed: each resident slot is in exactly one bucket, reachable from its key's home bucket
//   without crossing an empty bucket; no other bucket is used.
//
// Concurrency: the functions are sequential. Calls that share a segment pool (or a hashed table)
// must be serialised (a CUDA kernel runs one pool at a time per segment pool, or gives each pool
// its own pool).
//
// Complexity: lookup O(1); insert O(1); erase O(1) (hashed: expected).
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

// One pool's page table: the top-level directories of its streams (two-level), or its hashed
// table (directory == nullptr). The hashed fields come last, so a two-level view may be written
// {directory, streams, entries_per_stream}.
struct DirectoryView {
  std::uint32_t* directory;  // [streams, entries_per_stream] segment handle or kNoSegment
  std::uint32_t streams;
  std::uint32_t entries_per_stream;  // ceil(max logical pages / S)
  // Hashed layout only.
  std::int32_t* buckets;    // [bucket_count] slot or kAbsentSlot
  const PageKey* slot_key;  // [pool extent] the key each slot holds (the pool's slot_key)
  std::uint32_t bucket_count;
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

SPIN_HD constexpr bool page_table_hashed(const DirectoryView& dir) {
  return dir.directory == nullptr;
}

// Two-level layout: the most segments one step of a pool can take, with `n` selected pages and
// `capacity` slots: one per cached miss (at most min(n, capacity)) and at most one per directory
// entry.
SPIN_HD constexpr std::uint32_t most_new_segments(const DirectoryView& dir, std::uint32_t capacity,
                                                  std::uint32_t n) {
  const std::uint64_t entries = static_cast<std::uint64_t>(dir.streams) * dir.entries_per_stream;
  const std::uint32_t cached = n < capacity ? n : capacity;
  return entries < cached ? static_cast<std::uint32_t>(entries) : cached;
}

// Hashed layout: the bucket where the probe for `key` starts (multiplicative hash, then the high
// bits scaled to bucket_count, which need not be a power of two).
SPIN_HD std::uint32_t hashed_home(const DirectoryView& dir, PageKey key) {
  const std::uint64_t mixed = key * 0x9E3779B97F4A7C15ull;
  return static_cast<std::uint32_t>(((mixed >> 32) * dir.bucket_count) >> 32);
}

// Hashed layout: the bucket holding `key`, or the empty bucket that ends its probe, starting
// the probe at bucket `b` (the home bucket or one after it on the key's probe run).
SPIN_HD std::uint32_t hashed_find_from(const DirectoryView& dir, PageKey key, std::uint32_t b) {
  for (;;) {
    const std::int32_t slot = dir.buckets[b];
    if (slot == kAbsentSlot || dir.slot_key[slot] == key) return b;
    if (++b == dir.bucket_count) b = 0;
  }
}

// Hashed layout: the bucket holding `key`, or the empty bucket that ends its probe.
SPIN_HD std::uint32_t hashed_find(const DirectoryView& dir, PageKey key) {
  return hashed_find_from(dir, key, hashed_home(dir, key));
}

// The slot holding `key`, or kAbsentSlot.
SPIN_HD std::int32_t page_table_lookup(const DirectoryView& dir, const SegmentPoolView& segs,
                                       PageKey key) {
  if (page_table_hashed(dir)) return dir.buckets[hashed_find(dir, key)];
  const std::uint32_t handle = *directory_entry(dir, segs, key);
  if (handle == kNoSegment) return kAbsentSlot;
  return *segment_entry(segs, handle, key);
}

// page_table_lookup of keys[0, n) into slots[0, n), in passes of independent loads (hashed: the
// home buckets of all keys, then their slots' keys, then the rare longer probes), so that many
// cache misses are in flight at once.
// keys: [n]; slots: [n]
SPIN_HD void page_table_lookup_many(const DirectoryView& dir, const SegmentPoolView& segs,
                                    const PageKey* keys, std::uint32_t n, std::int32_t* slots) {
  if (!page_table_hashed(dir)) {
    // Keys ascend: one directory row per run of keys of one stream.
    const std::uint32_t log2 = segs.segment_pages_log2;
    const std::uint32_t mask = (1u << log2) - 1;
    for (std::uint32_t i = 0; i < n;) {
      const std::uint32_t stream = key_stream(keys[i]);
      const std::uint32_t* const row =
          dir.directory + static_cast<std::uint64_t>(stream) * dir.entries_per_stream;
      // The run's end, by a branch-free binary search (stream < table.streams < 2^32), so that
      // the loop below has one bound to test: keys[last] is in the run, and the first key
      // past it is in (last, last + len].
      const PageKey stream_end = make_page_key(stream + 1, 0);
      std::uint32_t last = i;
      for (std::uint32_t len = n - i; len > 1;) {
        const std::uint32_t half = len / 2;
        last = keys[last + half] < stream_end ? last + half : last;
        len -= half;
      }
      for (const std::uint32_t end = last + 1; i < end; ++i) {
        const std::uint32_t page = key_page(keys[i]);
        const std::uint32_t handle = row[page >> log2];
        slots[i] = handle == kNoSegment
                       ? kAbsentSlot
                       : segs.entries[(static_cast<std::uint64_t>(handle) << log2) | (page & mask)];
      }
    }
    return;
  }
  for (std::uint32_t i = 0; i < n; ++i) slots[i] = dir.buckets[hashed_home(dir, keys[i])];
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::int32_t slot = slots[i];
    if (slot != kAbsentSlot && dir.slot_key[slot] != keys[i]) {
      std::uint32_t b = hashed_home(dir, keys[i]) + 1;
      if (b == dir.bucket_count) b = 0;
      slots[i] = dir.buckets[hashed_find_from(dir, keys[i], b)];
    }
  }
}

// Maps an absent `key` to `slot`. Two-level: requires a free segment when the key's range has
// none. Hashed: requires slot_key[slot] == key and a table with an empty bucket besides.
SPIN_HD void page_table_insert(const DirectoryView& dir, SegmentPoolView& segs, PageKey key,
                               std::int32_t slot) {
  if (page_table_hashed(dir)) {
    dir.buckets[hashed_find(dir, key)] = slot;
    return;
  }
  std::uint32_t* handle = directory_entry(dir, segs, key);
  if (*handle == kNoSegment) {
    *handle = segs.free_stack[--segs.free_count];
    segs.used[*handle] = 0;  // its entries are all kAbsentSlot already (see the invariants)
  }
  *segment_entry(segs, *handle, key) = slot;
  ++segs.used[*handle];
}

// Unmaps a present `key`. Two-level: gives its segment back when that was the segment's last
// page. Hashed: the slot still holds `key`; later entries of the probe run move back into the
// hole when their home allows it (Knuth's algorithm R), so no probe crosses an empty bucket.
SPIN_HD void page_table_erase(const DirectoryView& dir, SegmentPoolView& segs, PageKey key) {
  if (page_table_hashed(dir)) {
    std::uint32_t hole = hashed_find(dir, key);
    std::uint32_t b = hole;
    for (;;) {
      if (++b == dir.bucket_count) b = 0;
      const std::int32_t slot = dir.buckets[b];
      if (slot == kAbsentSlot) break;
      const std::uint32_t home = hashed_home(dir, dir.slot_key[slot]);
      // The entry may move to the hole iff its home is not cyclically within (hole, b].
      const bool stays = hole <= b ? (hole < home && home <= b) : (hole < home || home <= b);
      if (!stays) {
        dir.buckets[hole] = slot;
        hole = b;
      }
    }
    dir.buckets[hole] = kAbsentSlot;
    return;
  }
  std::uint32_t* handle = directory_entry(dir, segs, key);
  *segment_entry(segs, *handle, key) = kAbsentSlot;
  if (--segs.used[*handle] == 0) {
    segs.free_stack[segs.free_count++] = *handle;
    *handle = kNoSegment;
  }
}

}  // namespace spin::policy
