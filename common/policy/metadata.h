// Metadata accounting: what the residency tables cost, next to a flat worst-case table
// (DESIGN.md §4.4), and the paper's comparison at Llama-3.1-70B, 128K context, batch 32.
//
// Our tables and entry sizes
// - GPU top-level directory: one 4-byte segment handle per S logical pages of every live stream,
//   sized for the request's context limit (small and static).
// - GPU segments: S 4-byte slot entries each, only while one of their pages is resident.
// - GPU hashed table (the other layout, instead of directory and segments): per pool two 4-byte
//   buckets per slot (bucket_count = 2 · extent + 1), whatever the context.
// - GPU slot state: per cache slot an 8-byte page key, a 4-byte last use and, for policies that
//   need it, a 4-byte aux word. Identical for any page-table layout, so reported on its own.
// - Host page table (pinned): one 8-byte host address per stored logical page.
// - Host partition offsets (pinned): 4 bytes per variable cluster boundary (fixed partitions are
//   computed, no table).
// A flat GPU page table has one 4-byte slot entry per logical page of every stream, for the
// context limit. Everything is per KV head (a stream is one KV head; GQA query heads share it).
#pragma once

#include <algorithm>
#include <cstdint>

namespace spin::policy {

inline constexpr std::uint64_t kDirectoryEntryBytes = 4;
inline constexpr std::uint64_t kSegmentEntryBytes = 4;
inline constexpr std::uint64_t kHashBucketBytes = 4;
inline constexpr std::uint64_t kSlotKeyBytes = 8;
inline constexpr std::uint64_t kSlotLastUseBytes = 4;
inline constexpr std::uint64_t kSlotAuxBytes = 4;
inline constexpr std::uint64_t kHostAddressBytes = 8;
inline constexpr std::uint64_t kPartitionOffsetBytes = 4;

struct MetadataBytes {
  // GPU
  std::uint64_t directory = 0;   // top-level directories of the live streams
  std::uint64_t segments = 0;    // second-level segments in use
  std::uint64_t hash_table = 0;  // hashed page tables' buckets (PageTableLayout::kHashed)
  std::uint64_t slot_state = 0;  // per-slot key, last use and aux of every pool's slots
  // Host (pinned, read by kernels)
  std::uint64_t host_page_table = 0;    // host address of every stored logical page
  std::uint64_t partition_offsets = 0;  // variable clusters' offset tables
  // The alternative: a flat GPU page table for the same live streams at their context limits
  std::uint64_t flat_page_table = 0;

  std::uint64_t two_level() const { return directory + segments; }
  // The GPU page tables of whichever layout (slot state aside).
  std::uint64_t page_table() const { return directory + segments + hash_table; }
  bool operator==(const MetadataBytes&) const = default;
};

// current: now; peak: the maximum each field reached (fields peak independently).
inline MetadataBytes& operator+=(MetadataBytes& a, const MetadataBytes& b) {
  a.directory += b.directory;
  a.segments += b.segments;
  a.hash_table += b.hash_table;
  a.slot_state += b.slot_state;
  a.host_page_table += b.host_page_table;
  a.partition_offsets += b.partition_offsets;
  a.flat_page_table += b.flat_page_table;
  return a;
}

inline MetadataBytes& operator-=(MetadataBytes& a, const MetadataBytes& b) {
  a.directory -= b.directory;
  a.segments -= b.segments;
  a.hash_table -= b.hash_table;
  a.slot_state -= b.slot_state;
  a.host_page_table -= b.host_page_table;
  a.partition_offsets -= b.partition_offsets;
  a.flat_page_table -= b.flat_page_table;
  return a;
}

// Raises each field of `peak` to at least the same field of `now` (peaks are kept per field).
inline void raise_each(MetadataBytes& peak, const MetadataBytes& now) {
  peak.directory = std::max(peak.directory, now.directory);
  peak.segments = std::max(peak.segments, now.segments);
  peak.hash_table = std::max(peak.hash_table, now.hash_table);
  peak.slot_state = std::max(peak.slot_state, now.slot_state);
  peak.host_page_table = std::max(peak.host_page_table, now.host_page_table);
  peak.partition_offsets = std::max(peak.partition_offsets, now.partition_offsets);
  peak.flat_page_table = std::max(peak.flat_page_table, now.flat_page_table);
}

struct MetadataReport {
  MetadataBytes current;
  MetadataBytes peak;
};

enum class SegmentOccupancy {
  kClustered,  // resident pages fill ceil(resident / S) segments (selections with locality)
  kUniform,    // resident pages spread uniformly at random (expected occupied segments)
};

// The paper's configuration (spin-paper.md, "Metadata"); figures are per GPU.
struct MetadataComparisonConfig {
  std::uint32_t batch = 32;
  std::uint32_t context_tokens = 131072;
  std::uint32_t layers = 80;
  std::uint32_t kv_heads = 8;          // Llama-3.1-70B: 64 query heads share 8 KV heads
  std::uint32_t tensor_parallel = 4;   // KV heads split across GPUs
  std::uint32_t page_tokens = 8;       // ShadowKV's pages and partitions
  std::uint32_t partition_tokens = 8;  // one partition-offset entry per partition in the flat case
  std::uint32_t segment_pages = 512;   // S
  double budget_ratio = 0.0156;        // ShadowKV's retrieval budget
  double buffer_ratio = 4.0;           // k: resident pages per stream = (1 + k)·M
  SegmentOccupancy occupancy = SegmentOccupancy::kClustered;
};

struct MetadataComparison {
  std::uint64_t streams = 0;                    // batch × layers × kv_heads / tensor_parallel
  std::uint64_t pages_per_stream = 0;           // logical pages at the context limit
  std::uint64_t resident_pages_per_stream = 0;  // floor((1 + k)·M)
  double segments_per_stream = 0;               // occupied segments
  std::uint64_t flat_page_table_bytes = 0;      // flat GPU page table
  std::uint64_t flat_all_tables_bytes = 0;      // flat, every table on the GPU (worst case)
  std::uint64_t host_tables_bytes = 0;          // host page table + partition offsets
  double two_level_bytes = 0;                   // directory + occupied segments
  double two_level_ratio = 0;                   // flat page table / two-level (paper 13.9–17.4)
  // The hashed layout: one table per (request, layer) pool of kv_heads / tensor_parallel streams,
  // 2·slots + 1 buckets of 4 bytes; independent of the occupancy (spread or clustered).
  std::uint64_t hashed_bytes = 0;
  double hashed_ratio = 0;   // flat page table / hashed
  double host_ratio = 0;     // flat all tables / flat page table (paper 3.5–4.5)
  double overall_ratio = 0;  // flat all tables / two-level (paper 49–78)
};

MetadataComparison compare_metadata(const MetadataComparisonConfig& config);

// Expected segments holding at least one of `resident` pages placed uniformly at random among
// `pages` logical pages cut into segments of `segment_pages`.
double expected_occupied_segments(std::uint64_t pages, std::uint64_t resident,
                                  std::uint64_t segment_pages);

}  // namespace spin::policy
