#include "common/policy/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace spin::policy {

std::uint32_t log2_exact(std::uint32_t power_of_two) {
  std::uint32_t log2 = 0;
  while ((1u << log2) < power_of_two) ++log2;
  return log2;
}

std::uint32_t max_pages_per_partition(std::uint32_t partition_tokens, std::uint32_t page_tokens) {
  const std::uint64_t worst_start = page_tokens - std::gcd(partition_tokens, page_tokens);
  return static_cast<std::uint32_t>((worst_start + partition_tokens + page_tokens - 1) /
                                    page_tokens);
}

void validate(const PartitionGeometry& geometry) {
  const std::uint32_t pt = geometry.page_tokens;
  if (pt == 0 || (pt & (pt - 1)) != 0) {
    throw InputError(fmt::format("page_tokens: expected a power of two, got {}", pt));
  }
  if (geometry.partition_tokens == 0) {
    throw InputError("partition_tokens: expected a positive token count, got 0");
  }
  if (geometry.kind != PartitionKind::kFixed && geometry.kind != PartitionKind::kVariable) {
    throw InputError("partition kind: expected fixed or variable");
  }
}

StaticRegion static_region(const StaticRegionParams& params, std::uint32_t page_tokens,
                           std::uint32_t stored_tokens) {
  return make_static_region(params.sink_tokens, params.local_window_tokens, stored_tokens,
                            log2_exact(page_tokens));
}

std::uint32_t static_page_count(const StaticRegionParams& params, std::uint32_t page_tokens,
                                std::uint32_t stored_tokens) {
  const StaticRegion region = static_region(params, page_tokens, stored_tokens);
  const std::uint32_t pages = pages_for_tokens(stored_tokens, log2_exact(page_tokens));
  const std::uint32_t middle = region.local_begin_page > region.sink_end_page
                                   ? region.local_begin_page - region.sink_end_page
                                   : 0;
  return pages - middle;
}

PartitionMap::PartitionMap(const PartitionGeometry& geometry) : geometry_(geometry) {
  validate(geometry);
  page_tokens_log2_ = log2_exact(geometry.page_tokens);
}

void PartitionMap::set_stored_tokens(std::uint32_t tokens) {
  if (tokens < stored_tokens_) {
    throw InputError(fmt::format("stored tokens went down from {} to {}", stored_tokens_, tokens));
  }
  stored_tokens_ = tokens;
}

void PartitionMap::append_clusters(std::uint32_t start_token,
                                   std::span<const std::uint32_t> lengths) {
  if (geometry_.kind != PartitionKind::kVariable) {
    throw InputError("append_clusters: the partitions are fixed-size, not variable clusters");
  }
  if (offsets_.empty()) {
    offsets_.push_back(start_token);
  } else if (start_token != offsets_.back()) {
    throw InputError(fmt::format(
        "append_clusters: new clusters start at token {}, expected the end of the last one, {}",
        start_token, offsets_.back()));
  }
  for (const std::uint32_t length : lengths) {
    if (length == 0) throw InputError("append_clusters: a cluster has length 0");
    const std::uint64_t end = std::uint64_t{offsets_.back()} + length;
    if (end > 0xFFFFFFFFu) throw InputError("append_clusters: clusters pass 2^32 tokens");
    offsets_.push_back(static_cast<std::uint32_t>(end));
  }
}

std::uint32_t PartitionMap::num_partitions() const {
  if (geometry_.kind == PartitionKind::kFixed) {
    return static_cast<std::uint32_t>(
        (std::uint64_t{stored_tokens_} + geometry_.partition_tokens - 1) /
        geometry_.partition_tokens);
  }
  return offsets_.empty() ? 0 : static_cast<std::uint32_t>(offsets_.size() - 1);
}

PartitionMapView PartitionMap::view() const {
  if (!offsets_.empty() && offsets_.back() > stored_tokens_) {
    throw InputError(fmt::format("the clusters cover tokens up to {} but the stream stores {}",
                                 offsets_.back(), stored_tokens_));
  }
  return PartitionMapView{geometry_.kind,   page_tokens_log2_, geometry_.partition_tokens,
                          num_partitions(), stored_tokens_,    offsets_.data()};
}

std::uint64_t PartitionMap::offset_table_bytes() const {
  return offsets_.size() * sizeof(std::uint32_t);
}

MappedSelection map_selection(const PartitionMapView& map, const StaticRegion& region,
                              std::span<const std::uint32_t> partition_ids,
                              std::vector<std::uint32_t>& pages, const char* what) {
  const MappedSelection mapped = map_selection_into(map, region, partition_ids, pages, what);
  pages.resize(mapped.cacheable_pages);
  return mapped;
}

MappedSelection map_selection_into(const PartitionMapView& map, const StaticRegion& region,
                                   std::span<const std::uint32_t> partition_ids,
                                   std::vector<std::uint32_t>& buffer, const char* what) {
  // Validate (one branch-free pass; the error path finds the culprit), and bound the pages the
  // selection can touch so that `pages` only grows when needed.
  // Sorted ids are all in range iff the last one is.
  const std::size_t n = partition_ids.size();
  const std::uint32_t* const ids = partition_ids.data();
  std::uint32_t bad = n > 0 && ids[n - 1] >= map.num_partitions ? 1 : 0;
  for (std::size_t i = 1; i < n; ++i) bad |= static_cast<std::uint32_t>(ids[i] < ids[i - 1]);
  for (std::size_t i = 0; bad != 0 && i < partition_ids.size(); ++i) {
    if (partition_ids[i] >= map.num_partitions) {
      throw InputError(fmt::format("{}: partition {} does not exist (the stream has {})", what,
                                   partition_ids[i], map.num_partitions));
    }
    if (i > 0 && partition_ids[i] < partition_ids[i - 1]) {
      throw InputError(fmt::format("{}: partition ids are not sorted ({} after {})", what,
                                   partition_ids[i], partition_ids[i - 1]));
    }
  }
  std::uint64_t bound = 0;
  if (map.kind == PartitionKind::kFixed) {
    bound = partition_ids.size() * std::uint64_t{max_pages_per_partition(
                                       map.partition_tokens, 1u << map.page_tokens_log2)};
  } else {
    for (const std::uint32_t id : partition_ids) {
      const PageRange range = partition_pages(map, id);
      bound += range.end - range.begin;
    }
  }
  const std::uint64_t stream_pages = pages_for_tokens(map.stored_tokens, map.page_tokens_log2);
  const std::uint64_t most = bound < stream_pages ? bound : stream_pages;
  if (buffer.size() < most) buffer.resize(std::max<std::uint64_t>(most, buffer.size() * 2));
  return map_selection_pages(map, region, partition_ids.data(),
                             static_cast<std::uint32_t>(partition_ids.size()), buffer.data());
}

}  // namespace spin::policy
