// Host-side partition maps: the geometry of an algorithm's partitions and the growing map of one
// stream (DESIGN.md §4.1). Produces the plain PartitionMapView that the mapping functions of
// partition_map.h (device-capable) read.
//
// Contract
// - Fixed partitions need no table: the view is computed from (g, page_tokens, stored tokens),
//   and the partition count grows with the stored tokens.
// - Variable partitions (clusters) keep an offsets table that only grows: append_clusters adds
//   runs after the last one (e.g. when the algorithm re-indexes every 1024 generated tokens); a
//   partition's pages never change once it exists.
// - page_tokens is a power of two; g and cluster lengths are any positive token counts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/policy/partition_map.h"

namespace spin::policy {

struct PartitionGeometry {
  PartitionKind kind = PartitionKind::kFixed;
  std::uint32_t page_tokens = 8;       // tokens per page, a power of two
  std::uint32_t partition_tokens = 8;  // fixed: g; variable: mean cluster length (budget sizing)
};

// Throws InputError naming the bad field.
void validate(const PartitionGeometry& geometry);

// The static region's extent in tokens (DESIGN.md §2): always resident, outside the cache.
struct StaticRegionParams {
  std::uint32_t sink_tokens = 0;          // attention sinks at the start of storage
  std::uint32_t local_window_tokens = 0;  // the most recent tokens
};

// The static region of a stream storing `stored_tokens` (the unfinished last page included).
StaticRegion static_region(const StaticRegionParams& params, std::uint32_t page_tokens,
                           std::uint32_t stored_tokens);
// Pages of a stream storing `stored_tokens` that are in its static region.
std::uint32_t static_page_count(const StaticRegionParams& params, std::uint32_t page_tokens,
                                std::uint32_t stored_tokens);

std::uint32_t log2_exact(std::uint32_t power_of_two);

// The most pages one fixed partition of g tokens can overlap: partitions start at multiples of g,
// so at page offsets that are multiples of gcd(g, page_tokens); the worst starts at
// page_tokens − gcd and spans ceil((page_tokens − gcd + g) / page_tokens) pages.
std::uint32_t max_pages_per_partition(std::uint32_t partition_tokens, std::uint32_t page_tokens);

class PartitionMap {
 public:
  explicit PartitionMap(const PartitionGeometry& geometry);

  // The stream now stores `tokens` tokens (context growth). Never decreases.
  void set_stored_tokens(std::uint32_t tokens);
  // Variable maps: appends clusters of the given lengths (> 0) starting at storage offset
  // `start_token`, which must equal the end of the last cluster unless the map is empty.
  void append_clusters(std::uint32_t start_token, std::span<const std::uint32_t> lengths);

  // Valid until the next call of a non-const member. Throws InputError if the clusters extend
  // past the stored tokens.
  PartitionMapView view() const;
  std::uint32_t num_partitions() const;
  std::uint32_t stored_tokens() const { return stored_tokens_; }
  // Bytes of the host-side partition offset table (variable maps; 0 for fixed).
  std::uint64_t offset_table_bytes() const;

 private:
  PartitionGeometry geometry_;
  std::uint32_t page_tokens_log2_;
  std::uint32_t stored_tokens_ = 0;
  std::vector<std::uint32_t> offsets_;  // variable: [clusters + 1]; empty before the first append
};

// Maps sorted partition ids to distinct cacheable pages (appended to `pages` after clearing it)
// exactly as the device-capable map_selection_pages does, after validating the ids (ascending,
// in range). Throws InputError naming `what` (e.g. "request 3 layer 2 head 1").
MappedSelection map_selection(const PartitionMapView& map, const StaticRegion& region,
                              std::span<const std::uint32_t> partition_ids,
                              std::vector<std::uint32_t>& pages, const char* what);
// The same into a reused buffer: `buffer` only grows (never shrinks, so repeated calls neither
// reallocate nor clear it); the pages are its first `cacheable_pages` elements.
MappedSelection map_selection_into(const PartitionMapView& map, const StaticRegion& region,
                                   std::span<const std::uint32_t> partition_ids,
                                   std::vector<std::uint32_t>& buffer, const char* what);

}  // namespace spin::policy
