// The two-level page table (common/policy/page_table.h) and its accounting in the Engine.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <vector>

#include "common/policy/engine.h"
#include "common/policy/page_table.h"

namespace spin::policy::test {

TEST_CASE("page_table: segments are taken with their first page and given back when empty",
          "[unit][policy]") {
  // 2 streams × 64 pages, segments of 4 pages: 16 directory entries per stream, 6 segments.
  constexpr std::uint32_t kSegments = 6;
  // A fresh pool: every entry absent, as the invariant requires (taking a segment clears nothing).
  std::vector<std::int32_t> entries(kSegments * 4, kAbsentSlot);
  std::vector<std::uint32_t> used(kSegments, 0);
  std::vector<std::uint32_t> free_stack;
  for (std::uint32_t h = kSegments; h-- > 0;) free_stack.push_back(h);
  SegmentPoolView segs{entries.data(), used.data(), free_stack.data(), kSegments, kSegments, 2};
  std::vector<std::uint32_t> directory(2 * 16, kNoSegment);
  const DirectoryView dir{directory.data(), 2, 16};

  const PageKey a = make_page_key(0, 5);
  const PageKey b = make_page_key(0, 6);  // same segment as a (pages 4..7)
  const PageKey c = make_page_key(1, 5);  // other stream
  CHECK(page_table_lookup(dir, segs, a) == kAbsentSlot);
  page_table_insert(dir, segs, a, 7);
  CHECK(segs.free_count == kSegments - 1);
  CHECK(directory[1] == 0);  // lowest handle first
  CHECK(page_table_lookup(dir, segs, a) == 7);
  CHECK(page_table_lookup(dir, segs, make_page_key(0, 4)) == kAbsentSlot);
  page_table_insert(dir, segs, b, 8);
  CHECK(segs.free_count == kSegments - 1);  // same segment
  CHECK(used[0] == 2);
  page_table_insert(dir, segs, c, 9);
  CHECK(segs.free_count == kSegments - 2);
  CHECK(directory[16 + 1] == 1);
  page_table_erase(dir, segs, a);
  CHECK(segs.free_count == kSegments - 2);  // b still there
  CHECK(page_table_lookup(dir, segs, b) == 8);
  page_table_erase(dir, segs, b);
  CHECK(segs.free_count == kSegments - 1);
  CHECK(directory[1] == kNoSegment);
  CHECK(free_stack[segs.free_count - 1] == 0);                   // released handle is reused first
  for (int i = 0; i < 4; ++i) CHECK(entries[i] == kAbsentSlot);  // given back all absent
}

TEST_CASE("page_table: random inserts and erases agree with a map", "[unit][policy]") {
  constexpr std::uint32_t kStreams = 3;
  constexpr std::uint32_t kPages = 200;
  constexpr std::uint32_t kLog2 = 3;  // 8 pages per segment: 25 per stream
  constexpr std::uint32_t kSegments = kStreams * 25;
  std::vector<std::int32_t> entries(kSegments << kLog2, kAbsentSlot);
  std::vector<std::uint32_t> used(kSegments);
  std::vector<std::uint32_t> free_stack;
  for (std::uint32_t h = kSegments; h-- > 0;) free_stack.push_back(h);
  SegmentPoolView segs{entries.data(), used.data(), free_stack.data(), kSegments, kSegments, kLog2};
  std::vector<std::uint32_t> directory(kStreams * 25, kNoSegment);
  const DirectoryView dir{directory.data(), kStreams, 25};
  std::map<PageKey, std::int32_t> truth;
  std::mt19937_64 rng(3);
  for (int op = 0; op < 20000; ++op) {
    const PageKey key = make_page_key(static_cast<std::uint32_t>(rng() % kStreams),
                                      static_cast<std::uint32_t>(rng() % kPages));
    if (truth.count(key)) {
      page_table_erase(dir, segs, key);
      truth.erase(key);
    } else {
      const auto slot = static_cast<std::int32_t>(rng() % 1000);
      page_table_insert(dir, segs, key, slot);
      truth[key] = slot;
    }
    if (op % 97 == 0) {
      std::map<std::uint32_t, std::uint32_t> occupied;  // segment index per stream → pages
      for (const auto& [k, slot] : truth) {
        CHECK(page_table_lookup(dir, segs, k) == slot);
        ++occupied[key_stream(k) * 25 + (key_page(k) >> kLog2)];
      }
      CHECK(kSegments - segs.free_count == occupied.size());  // exactly the occupied segments
    }
  }
}

TEST_CASE("engine: metadata follows the working set, not the context", "[unit][policy]") {
  // A 1M-token context limit, but each stream keeps touching the same few pages.
  Engine engine(EngineOptions{512, false});
  RequestSpec spec;
  spec.model = ModelShape{2, 4, 128, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 8, 8};
  spec.max_context_tokens = 1u << 20;  // 131072 pages per stream
  spec.cache_pages = 8 * 64;
  const RequestId id = engine.add_request(spec);
  for (std::uint32_t s = 0; s < 10; ++s) {
    engine.begin_step(id, s, 1u << 20);
    for (std::uint32_t layer = 0; layer < 2; ++layer) {
      for (std::uint32_t head = 0; head < 4; ++head) {
        std::vector<std::uint32_t> ids;
        for (std::uint32_t i = 0; i < 32; ++i) ids.push_back(1000 + 7 * i + s);  // pages 1000..1226
        engine.select(id, layer, head, ids);
      }
    }
    engine.end_step(id);
    engine.check_invariants();
  }
  const MetadataReport m = engine.metadata();
  // Per stream 256 directory entries of 4 bytes; pages 1000..1226 lie in segment 1 (512..1023)
  // and segment 2 (1024..1535): 2 segments × 512 × 4 bytes per stream.
  CHECK(m.current.directory == 8 * 256 * 4);
  CHECK(m.current.segments == 8 * 2 * 512 * 4);
  CHECK(m.current.flat_page_table == 8ull * 131072 * 4);
  CHECK(m.current.host_page_table == 8ull * 131072 * 8);
  CHECK(m.current.slot_state == 8 * 64 * 12);  // bucketed LRU: key + last use
  CHECK(m.current.two_level() * 20 < m.current.flat_page_table);
  engine.remove_request(id);
  const MetadataReport after = engine.metadata();
  CHECK(after.current.segments == 0);
  CHECK(after.current.directory == 0);
  CHECK(after.peak.segments == m.current.segments);
  engine.check_invariants();
}

}  // namespace spin::policy::test
