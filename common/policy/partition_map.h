// Partition → page mapping and the static region of a stream (DESIGN.md §4.1, §2).
//
// Device-capable (STYLE.md, "one policy, two compilers"): plain views and pure functions, so the
// simulator and a CUDA kernel map a selection to the same pages.
//
// Contract
// - Fixed partitions: partition i covers tokens [i·g, (i+1)·g) clipped to the stored tokens.
//   g = page_tokens makes a partition a page; g < page_tokens lets several partitions share a
//   page; g > page_tokens makes a partition span several pages.
// - Variable partitions (clusters): KV is stored in cluster order, partition i covers the storage
//   run [offsets[i], offsets[i+1]); offsets ascend. A run maps to every page it overlaps.
// - Either way partition ids ascend with storage position, so a selection sorted by id maps to
//   pages in non-decreasing order and duplicates are dropped by comparing with the last page.
// - Static region: the pages that overlap the attention sinks [0, sink_tokens), the local window
//   [stored − window, stored) and the unfinished last page. They are always resident and outside
//   the cache; a selected static page is counted as a static access, never a hit or a miss.
//
// - page_tokens is a power of two (every algorithm's page is), so page math is shifts.
//
// Complexity: partition_pages O(1); map_selection_pages O(selected partitions + pages emitted).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common/hd.h"

namespace spin::policy {

enum class PartitionKind : std::uint32_t { kFixed = 0, kVariable = 1 };

// One stream's partition map as plain data.
struct PartitionMapView {
  PartitionKind kind;
  std::uint32_t page_tokens_log2;  // tokens per page = 1 << page_tokens_log2
  std::uint32_t partition_tokens;  // g, fixed partitions only (> 0)
  std::uint32_t num_partitions;    // valid ids are [0, num_partitions)
  std::uint32_t stored_tokens;     // tokens in the stream's storage
  const std::uint32_t* offsets;    // [num_partitions + 1] storage offsets, variable only
};
static_assert(std::is_trivially_copyable_v<PartitionMapView>);

// Pages [begin, end) in storage order.
struct PageRange {
  std::uint32_t begin;
  std::uint32_t end;
};
static_assert(std::is_trivially_copyable_v<PageRange>);

// A page p is static iff p < sink_end_page or p >= local_begin_page.
struct StaticRegion {
  std::uint32_t sink_end_page;
  std::uint32_t local_begin_page;
};
static_assert(std::is_trivially_copyable_v<StaticRegion>);

// What map_selection_pages found: distinct cacheable pages (written out) and distinct static pages.
struct MappedSelection {
  std::uint32_t cacheable_pages;
  std::uint32_t static_pages;
};
static_assert(std::is_trivially_copyable_v<MappedSelection>);

// ceil(tokens / 2^page_tokens_log2)
SPIN_HD constexpr std::uint32_t pages_for_tokens(std::uint64_t tokens,
                                                 std::uint32_t page_tokens_log2) {
  return static_cast<std::uint32_t>((tokens + (std::uint64_t{1} << page_tokens_log2) - 1) >>
                                    page_tokens_log2);
}

// Pages overlapped by one partition; an empty partition gives an empty range.
SPIN_HD PageRange partition_pages(const PartitionMapView& map, std::uint32_t partition) {
  std::uint64_t begin_token = 0;
  std::uint64_t end_token = 0;
  if (map.kind == PartitionKind::kFixed) {
    begin_token = static_cast<std::uint64_t>(partition) * map.partition_tokens;
    end_token = begin_token + map.partition_tokens;
    if (end_token > map.stored_tokens) end_token = map.stored_tokens;
    if (begin_token > end_token) begin_token = end_token;
  } else {
    begin_token = map.offsets[partition];
    end_token = map.offsets[partition + 1];
  }
  const std::uint32_t begin = static_cast<std::uint32_t>(begin_token >> map.page_tokens_log2);
  if (end_token == begin_token) return PageRange{begin, begin};
  return PageRange{begin, pages_for_tokens(end_token, map.page_tokens_log2)};
}

// The static region of a stream holding `stored_tokens` tokens.
SPIN_HD StaticRegion make_static_region(std::uint32_t sink_tokens,
                                        std::uint32_t local_window_tokens,
                                        std::uint32_t stored_tokens,
                                        std::uint32_t page_tokens_log2) {
  const std::uint32_t sinks = sink_tokens < stored_tokens ? sink_tokens : stored_tokens;
  const std::uint32_t local_start =
      stored_tokens > local_window_tokens ? stored_tokens - local_window_tokens : 0;
  std::uint32_t local_begin = local_start >> page_tokens_log2;
  const std::uint32_t full_pages = stored_tokens >> page_tokens_log2;
  if (full_pages < local_begin) local_begin = full_pages;  // the unfinished last page
  return StaticRegion{pages_for_tokens(sinks, page_tokens_log2), local_begin};
}

SPIN_HD constexpr bool is_static_page(const StaticRegion& region, std::uint32_t page) {
  return page < region.sink_end_page || page >= region.local_begin_page;
}

// Maps a selection to its distinct pages.
// ids:       [n] partition ids, non-decreasing, each < map.num_partitions
// out_pages: [at least the stream's page count] receives the distinct cacheable pages, ascending
SPIN_HD MappedSelection map_selection_pages(const PartitionMapView& map, const StaticRegion& region,
                                            const std::uint32_t* ids, std::uint32_t n,
                                            std::uint32_t* out_pages) {
  MappedSelection result{0, 0};
  if (map.kind == PartitionKind::kFixed && map.partition_tokens == (1u << map.page_tokens_log2)) {
    // A partition is a page: only duplicates and the static region to drop. The ids ascend, so
    // the static pages are a prefix (sinks) and a suffix (local window) of them, and the ids
    // between are all cacheable.
    std::uint32_t begin = 0;
    while (begin < n && ids[begin] < region.sink_end_page) {
      result.static_pages += static_cast<std::uint32_t>(begin == 0 || ids[begin] != ids[begin - 1]);
      ++begin;
    }
    std::uint32_t end = n;
    while (end > begin && ids[end - 1] >= region.local_begin_page) {
      result.static_pages += static_cast<std::uint32_t>(end == n || ids[end - 1] != ids[end]);
      --end;
    }
    // Without duplicates (the usual case, found by one pass the compiler vectorises) the ids
    // are the pages.
    const std::uint32_t* const cacheable = ids + begin;
    const std::size_t kept = end - begin;
    std::uint32_t duplicates = 0;
    for (std::size_t i = 1; i < kept; ++i) {  // size_t: i − 1 cannot wrap, so it vectorises
      duplicates |= static_cast<std::uint32_t>(cacheable[i] == cacheable[i - 1]);
    }
    if (duplicates == 0) {
      for (std::size_t i = 0; i < kept; ++i) out_pages[i] = cacheable[i];
      result.cacheable_pages = end - begin;
      return result;
    }
    // Branch-free: a duplicate overwrites the copy of the id before it (never the first id
    // here, which is above every id before it), so no write passes the distinct pages.
    std::uint32_t count = 0;
    std::uint32_t previous = begin < end ? ids[begin] + 1 : 0;
    for (std::uint32_t i = begin; i < end; ++i) {
      const std::uint32_t p = ids[i];
      count -= static_cast<std::uint32_t>(p == previous);
      out_pages[count++] = p;
      previous = p;
    }
    result.cacheable_pages = count;
    return result;
  }
  std::uint32_t next_page = 0;  // pages below it were already emitted or counted
  for (std::uint32_t i = 0; i < n; ++i) {
    const PageRange range = partition_pages(map, ids[i]);
    for (std::uint32_t p = range.begin > next_page ? range.begin : next_page; p < range.end; ++p) {
      if (is_static_page(region, p)) {
        ++result.static_pages;
      } else {
        out_pages[result.cacheable_pages++] = p;
      }
    }
    if (range.end > next_page) next_page = range.end;
  }
  return result;
}

}  // namespace spin::policy
