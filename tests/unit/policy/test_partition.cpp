// Partition → page mapping and the static region (common/policy/partition_map.h, partition.h),
// against a token-by-token reference.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "common/error.h"
#include "common/policy/partition.h"

namespace spin::policy::test {
namespace {

// Token-level reference: a partition's tokens, each mapped to its page.
struct Expected {
  std::vector<std::uint32_t> cacheable;
  std::uint32_t static_pages = 0;
};

Expected reference(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs,
                   const std::vector<std::uint32_t>& ids, std::uint32_t page_tokens,
                   const StaticRegionParams& region_params, std::uint32_t stored) {
  std::set<std::uint32_t> pages;
  for (const std::uint32_t id : ids) {
    for (std::uint64_t t = runs[id].first; t < runs[id].second; ++t) {
      pages.insert(static_cast<std::uint32_t>(t / page_tokens));
    }
  }
  // Static: pages holding a sink token, a local-window token, or the unfinished last page.
  std::set<std::uint32_t> static_pages;
  for (std::uint32_t t = 0; t < std::min(region_params.sink_tokens, stored); ++t) {
    static_pages.insert(t / page_tokens);
  }
  for (std::uint32_t t = stored > region_params.local_window_tokens
                             ? stored - region_params.local_window_tokens
                             : 0;
       t < stored; ++t) {
    static_pages.insert(t / page_tokens);
  }
  if (stored % page_tokens != 0) static_pages.insert(stored / page_tokens);
  Expected e;
  for (const std::uint32_t p : pages) {
    if (static_pages.count(p)) {
      ++e.static_pages;
    } else {
      e.cacheable.push_back(p);
    }
  }
  return e;
}

std::vector<std::uint32_t> random_ids(std::mt19937_64& rng, std::uint32_t partitions,
                                      std::uint32_t count) {
  std::vector<std::uint32_t> ids;
  std::uniform_int_distribution<std::uint32_t> pick(0, partitions - 1);
  for (std::uint32_t i = 0; i < count; ++i) ids.push_back(pick(rng));
  std::sort(ids.begin(), ids.end());  // duplicates kept on purpose
  return ids;
}

}  // namespace

TEST_CASE("partition_map: fixed partitions of g tokens map to the pages they overlap",
          "[unit][policy]") {
  std::mt19937_64 rng(11);
  for (const std::uint32_t page_tokens : {8u, 16u}) {
    for (const std::uint32_t g : {1u, 8u, 16u, 32u, 12u}) {
      for (const std::uint32_t stored : {1000u, 1024u, 37u}) {
        PartitionMap map(PartitionGeometry{PartitionKind::kFixed, page_tokens, g});
        map.set_stored_tokens(stored);
        const PartitionMapView view = map.view();
        REQUIRE(view.num_partitions == (stored + g - 1) / g);
        std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
        for (std::uint32_t i = 0; i < view.num_partitions; ++i) {
          runs.push_back({std::uint64_t{i} * g, std::min<std::uint64_t>((i + 1ull) * g, stored)});
        }
        for (const StaticRegionParams params :
             {StaticRegionParams{0, 0}, StaticRegionParams{4, 64}, StaticRegionParams{20, 9}}) {
          const StaticRegion region = static_region(params, page_tokens, stored);
          for (int trial = 0; trial < 40; ++trial) {
            std::vector<std::uint32_t> ids = random_ids(rng, view.num_partitions, 1 + trial * 7);
            // Odd trials without duplicates (a partition of one page then maps without dedup).
            if (trial % 2 == 1) ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
            std::vector<std::uint32_t> pages;
            const MappedSelection got = map_selection(view, region, ids, pages, "test");
            const Expected want = reference(runs, ids, page_tokens, params, stored);
            INFO("page_tokens " << page_tokens << " g " << g << " stored " << stored);
            CHECK(pages == want.cacheable);
            CHECK(got.cacheable_pages == want.cacheable.size());
            CHECK(got.static_pages == want.static_pages);
          }
        }
      }
    }
  }
}

TEST_CASE("partition_map: variable clusters map to the pages they overlap, and grow",
          "[unit][policy]") {
  std::mt19937_64 rng(5);
  PartitionMap map(PartitionGeometry{PartitionKind::kVariable, 8, 16});
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  std::uint32_t clustered = 4;  // the first 4 tokens (sinks) are stored before the clusters
  std::uint32_t stored = 4;
  const StaticRegionParams params{4, 32};
  for (int round = 0; round < 6; ++round) {
    // The algorithm re-indexes: the tokens generated since the last round become clusters.
    stored += 700;
    map.set_stored_tokens(stored);
    std::vector<std::uint32_t> lengths;
    while (clustered < stored - 40) {
      const std::uint32_t len =
          std::min(std::uniform_int_distribution<std::uint32_t>(1, 40)(rng), stored - clustered);
      lengths.push_back(len);
      runs.push_back({clustered, clustered + len});
      clustered += len;
    }
    const std::uint32_t before = map.num_partitions();
    map.append_clusters(runs[before].first, lengths);
    REQUIRE(map.num_partitions() == runs.size());
    CHECK(map.offset_table_bytes() == (runs.size() + 1) * 4);
    const PartitionMapView view = map.view();
    const StaticRegion region = static_region(params, 8, stored);
    for (int trial = 0; trial < 30; ++trial) {
      const std::vector<std::uint32_t> ids = random_ids(rng, view.num_partitions, 1 + trial * 3);
      std::vector<std::uint32_t> pages;
      const MappedSelection got = map_selection(view, region, ids, pages, "test");
      const Expected want = reference(runs, ids, 8, params, stored);
      CHECK(pages == want.cacheable);
      CHECK(got.static_pages == want.static_pages);
    }
  }
  CHECK_THROWS_AS(map.append_clusters(3, std::vector<std::uint32_t>{5}), InputError);
  CHECK_THROWS_AS(map.append_clusters(clustered, std::vector<std::uint32_t>{0}), InputError);
  map.append_clusters(clustered, std::vector<std::uint32_t>{100});  // past the stored tokens
  CHECK_THROWS_AS(map.view(), InputError);
}

TEST_CASE("partition_map: the static region covers sinks, the local window and the last page",
          "[unit][policy]") {
  // 8-token pages, 100 tokens: pages 0..12, page 12 unfinished (tokens 96..99).
  StaticRegion r = static_region(StaticRegionParams{0, 0}, 8, 100);
  CHECK(r.sink_end_page == 0);
  CHECK(r.local_begin_page == 12);
  r = static_region(StaticRegionParams{0, 0}, 8, 96);  // no unfinished page
  CHECK(r.local_begin_page == 12);
  r = static_region(StaticRegionParams{9, 20}, 8, 100);  // sinks 0..8, window 80..99
  CHECK(r.sink_end_page == 2);
  CHECK(r.local_begin_page == 10);
  CHECK(static_page_count(StaticRegionParams{9, 20}, 8, 100) == 2 + 3);
  CHECK(static_page_count(StaticRegionParams{64, 64}, 8, 100) == 13);  // overlapping: all
  CHECK(static_page_count(StaticRegionParams{0, 0}, 8, 0) == 0);
}

TEST_CASE("partition_map: bad geometry and selections are input errors", "[unit][policy]") {
  CHECK_THROWS_AS(PartitionMap(PartitionGeometry{PartitionKind::kFixed, 12, 8}), InputError);
  CHECK_THROWS_AS(PartitionMap(PartitionGeometry{PartitionKind::kFixed, 8, 0}), InputError);
  PartitionMap fixed(PartitionGeometry{PartitionKind::kFixed, 8, 8});
  fixed.set_stored_tokens(64);
  std::vector<std::uint32_t> pages;
  CHECK_THROWS_WITH(map_selection(fixed.view(), StaticRegion{0, 8},
                                  std::vector<std::uint32_t>{3, 8}, pages, "stream 0"),
                    Catch::Contains("stream 0: partition 8 does not exist"));
  CHECK_THROWS_WITH(map_selection(fixed.view(), StaticRegion{0, 8},
                                  std::vector<std::uint32_t>{3, 2}, pages, "stream 0"),
                    Catch::Contains("not sorted"));
  CHECK_THROWS_AS(fixed.append_clusters(0, std::vector<std::uint32_t>{8}), InputError);
  CHECK_THROWS_AS(fixed.set_stored_tokens(10), InputError);
}

}  // namespace spin::policy::test
