// Metadata accounting (common/policy/metadata.h): the paper's comparison at Llama-3.1-70B,
// 128K context, batch 32 (docs/policy.md explains every assumption).
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/policy/metadata.h"

namespace spin::policy::test {

TEST_CASE("metadata: the paper's configuration, per GPU at TP 4, with locality", "[unit][policy]") {
  const MetadataComparison c = compare_metadata(MetadataComparisonConfig{});
  CHECK(c.streams == 32 * 80 * 8 / 4);                    // 5120 KV-head streams per GPU
  CHECK(c.pages_per_stream == 16384);                     // 128K / 8-token pages
  CHECK(c.resident_pages_per_stream == 5 * 256);          // (1 + 4) × 256 mandatory pages
  CHECK(c.segments_per_stream == 3);                      // 1280 pages in 512-page segments
  CHECK(c.flat_page_table_bytes == 5120ull * 16384 * 4);  // 0.34 GB
  CHECK(c.host_tables_bytes == 5120ull * (16384 * 8 + 16385 * 4));  // 1.01 GB
  CHECK(c.flat_all_tables_bytes == 1342197760ull);                  // 1.34 GB (5.4 GB on 4 GPUs)
  CHECK(c.two_level_bytes == Approx(5120.0 * (32 * 4 + 3 * 512 * 4)));  // 32 MB
  CHECK(c.two_level_ratio == Approx(10.45).epsilon(0.001));             // paper: 13.9–17.4
  CHECK(c.host_ratio == Approx(4.0).epsilon(0.001));                    // paper: 3.5–4.5
  CHECK(c.overall_ratio == Approx(41.8).epsilon(0.001));                // paper: 49–78
  // Hashed: 2560 pools of 2 KV heads, 2 · 2560 + 1 buckets each; 52 MB whatever the locality.
  CHECK(c.hashed_bytes == 2560ull * (2 * 2 * 1280 + 1) * 4);
  CHECK(c.hashed_ratio == Approx(6.4).epsilon(0.001));
  // Smaller segments track a clustered working set more tightly.
  MetadataComparisonConfig small;
  small.segment_pages = 256;
  CHECK(compare_metadata(small).two_level_ratio == Approx(65536.0 / (64 * 4 + 5 * 256 * 4)));
}

TEST_CASE("metadata: a working set spread uniformly touches every segment", "[unit][policy]") {
  MetadataComparisonConfig uniform;
  uniform.occupancy = SegmentOccupancy::kUniform;
  const MetadataComparison c = compare_metadata(uniform);
  CHECK(c.segments_per_stream == Approx(32.0).epsilon(1e-9));
  CHECK(c.two_level_ratio < 1.0);  // the directory is pure overhead then
  CHECK(c.hashed_ratio == compare_metadata(MetadataComparisonConfig{}).hashed_ratio);
  // Exact small case: 2 of 6 pages in segments of 2: P(a segment is empty) = C(4,2)/C(6,2).
  CHECK(expected_occupied_segments(6, 2, 2) == Approx(3 * (1 - 6.0 / 15.0)));
  CHECK(expected_occupied_segments(7, 7, 2) == Approx(4.0));
  CHECK(expected_occupied_segments(8, 0, 2) == 0.0);
}

TEST_CASE("metadata: tensor parallelism must divide the KV heads", "[unit][policy]") {
  MetadataComparisonConfig bad;
  bad.tensor_parallel = 3;
  CHECK_THROWS_AS(compare_metadata(bad), InputError);
}

}  // namespace spin::policy::test
