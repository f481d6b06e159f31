#include "common/policy/metadata.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"
#include "common/policy/budget.h"

namespace spin::policy {

double expected_occupied_segments(std::uint64_t pages, std::uint64_t resident,
                                  std::uint64_t segment_pages) {
  double occupied = 0;
  for (std::uint64_t first = 0; first < pages; first += segment_pages) {
    const std::uint64_t size = std::min(segment_pages, pages - first);
    // P(no resident page in this segment) = C(pages - size, resident) / C(pages, resident).
    double empty = 1.0;
    for (std::uint64_t i = 0; i < size && empty > 0.0; ++i) {
      empty *= pages - resident > i
                   ? static_cast<double>(pages - resident - i) / static_cast<double>(pages - i)
                   : 0.0;
    }
    occupied += 1.0 - empty;
  }
  return occupied;
}

MetadataComparison compare_metadata(const MetadataComparisonConfig& config) {
  if (config.tensor_parallel == 0 || config.kv_heads % config.tensor_parallel != 0) {
    throw InputError(fmt::format("tensor_parallel {} does not divide the {} KV heads",
                                 config.tensor_parallel, config.kv_heads));
  }
  MetadataComparison c;
  const PartitionGeometry geometry{PartitionKind::kFixed, config.page_tokens,
                                   config.partition_tokens};
  validate(geometry);
  BudgetParams budget;
  budget.ratio = config.budget_ratio;
  c.streams =
      std::uint64_t{config.batch} * config.layers * config.kv_heads / config.tensor_parallel;
  c.pages_per_stream = pages_for_tokens(config.context_tokens, log2_exact(config.page_tokens));
  const std::uint64_t partitions =
      (std::uint64_t{config.context_tokens} + config.partition_tokens - 1) /
      config.partition_tokens;
  c.resident_pages_per_stream = cache_pages(
      {.mandatory_pages = mandatory_pages_per_stream(budget, geometry, config.context_tokens),
       .dynamic_pages = c.pages_per_stream},
      config.buffer_ratio);
  const std::uint64_t directory_entries =
      (c.pages_per_stream + config.segment_pages - 1) / config.segment_pages;
  c.segments_per_stream =
      config.occupancy == SegmentOccupancy::kClustered
          ? static_cast<double>((c.resident_pages_per_stream + config.segment_pages - 1) /
                                config.segment_pages)
          : expected_occupied_segments(c.pages_per_stream, c.resident_pages_per_stream,
                                       config.segment_pages);
  c.flat_page_table_bytes = c.streams * c.pages_per_stream * kSegmentEntryBytes;
  c.host_tables_bytes = c.streams * (c.pages_per_stream * kHostAddressBytes +
                                     (partitions + 1) * kPartitionOffsetBytes);
  c.flat_all_tables_bytes = c.flat_page_table_bytes + c.host_tables_bytes;
  c.two_level_bytes =
      static_cast<double>(c.streams) *
      (static_cast<double>(directory_entries * kDirectoryEntryBytes) +
       c.segments_per_stream * static_cast<double>(config.segment_pages * kSegmentEntryBytes));
  c.two_level_ratio = static_cast<double>(c.flat_page_table_bytes) / c.two_level_bytes;
  const std::uint64_t pool_streams = config.kv_heads / config.tensor_parallel;
  const std::uint64_t pools = c.streams / pool_streams;
  c.hashed_bytes = pools * (2 * pool_streams * c.resident_pages_per_stream + 1) * kHashBucketBytes;
  c.hashed_ratio =
      static_cast<double>(c.flat_page_table_bytes) / static_cast<double>(c.hashed_bytes);
  c.host_ratio =
      static_cast<double>(c.flat_all_tables_bytes) / static_cast<double>(c.flat_page_table_bytes);
  c.overall_ratio = static_cast<double>(c.flat_all_tables_bytes) / c.two_level_bytes;
  return c;
}

}  // namespace spin::policy
