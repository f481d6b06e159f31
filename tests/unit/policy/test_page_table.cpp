// The page tables (common/policy/page_table.h: two-level and hashed) and their accounting in the
// Engine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <string>
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
  const DirectoryView dir{directory.data(), 2, 16, nullptr, nullptr, 0};

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
  const DirectoryView dir{directory.data(), kStreams, 25, nullptr, nullptr, 0};
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
      // page_table_lookup_many over ascending present and absent keys, at a density from none
      // to all, so that a stream's run may be empty, one key or the whole stream.
      const auto density = rng() % 9;
      std::vector<PageKey> keys;
      for (std::uint32_t s = 0; s < kStreams; ++s) {
        for (std::uint32_t p = 0; p < kPages; ++p) {
          if (rng() % 8 < density) keys.push_back(make_page_key(s, p));
        }
      }
      std::vector<std::int32_t> slots(keys.size());
      page_table_lookup_many(dir, segs, keys.data(), static_cast<std::uint32_t>(keys.size()),
                             slots.data());
      for (std::size_t i = 0; i < keys.size(); ++i) {
        CHECK(slots[i] == page_table_lookup(dir, segs, keys[i]));
      }
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

TEST_CASE("page_table: hashed, random inserts and erases agree with a map", "[unit][policy]") {
  // 40 slots in 41 buckets (a nearly full table: long probe runs, wrap-around) and in 81.
  for (const std::uint32_t buckets : {41u, 81u}) {
    constexpr std::uint32_t kSlots = 40;
    std::vector<PageKey> slot_key(kSlots, kNoPage);
    std::vector<std::int32_t> table(buckets, kAbsentSlot);
    const DirectoryView dir{nullptr, 3, 0, table.data(), slot_key.data(), buckets};
    SegmentPoolView no_segments{};
    std::map<PageKey, std::int32_t> truth;
    std::vector<std::int32_t> free_slots;
    for (std::int32_t s = kSlots; s-- > 0;) free_slots.push_back(s);
    std::mt19937_64 rng(buckets);
    for (int op = 0; op < 20000; ++op) {
      const PageKey key = make_page_key(static_cast<std::uint32_t>(rng() % 3),
                                        static_cast<std::uint32_t>(rng() % 100));
      if (truth.count(key)) {
        page_table_erase(dir, no_segments, key);
        slot_key[truth[key]] = kNoPage;  // after erase, as pool_step does
        free_slots.push_back(truth[key]);
        truth.erase(key);
      } else if (!free_slots.empty()) {
        const std::int32_t slot = free_slots[rng() % free_slots.size()];
        std::erase(free_slots, slot);
        slot_key[slot] = key;  // before insert, as pool_step does
        page_table_insert(dir, no_segments, key, slot);
        truth[key] = slot;
      }
      CHECK(page_table_lookup(dir, no_segments, key) == (truth.count(key) ? truth[key] : -1));
      if (op % 97 == 0) {
        std::uint32_t used = 0;
        for (std::uint32_t b = 0; b < buckets; ++b) {
          if (table[b] == kAbsentSlot) continue;
          ++used;
          CHECK(hashed_find(dir, slot_key[table[b]]) == b);  // reachable without a gap
        }
        CHECK(used == truth.size());
        std::vector<PageKey> keys;
        for (const auto& [k, slot] : truth) keys.push_back(k);
        std::vector<std::int32_t> slots(keys.size());
        page_table_lookup_many(dir, no_segments, keys.data(),
                               static_cast<std::uint32_t>(keys.size()), slots.data());
        for (std::size_t i = 0; i < keys.size(); ++i) CHECK(slots[i] == truth[keys[i]]);
      }
    }
  }
}

namespace {

// A request with spread selections (pages all over the context), replayed with `layout`;
// returns the decision log and the metadata.
std::pair<std::string, MetadataReport> spread_replay(PageTableLayout layout,
                                                     std::uint32_t context_tokens) {
  Engine engine(EngineOptions{512, true, layout});
  RequestSpec spec;
  spec.model = ModelShape{2, 4, 128, 2};
  spec.geometry = PartitionGeometry{PartitionKind::kFixed, 8, 8};
  spec.max_context_tokens = context_tokens;
  spec.cache_pages = 8 * 100;
  const RequestId id = engine.add_request(spec);
  std::mt19937_64 rng(5);
  const std::uint32_t pages = context_tokens / 8;
  for (std::uint32_t s = 0; s < 30; ++s) {
    engine.begin_step(id, s, context_tokens);
    for (std::uint32_t k = 0; k < 8; ++k) {
      std::vector<std::uint32_t> ids;
      for (std::uint32_t i = 0; i < 40; ++i)
        ids.push_back(static_cast<std::uint32_t>(rng() % pages));
      std::sort(ids.begin(), ids.end());
      engine.select(id, k / 4, k % 4, ids);
    }
    engine.end_step(id);
    engine.check_invariants();
  }
  std::pair<std::string, MetadataReport> result{engine.decision_log(), engine.metadata()};
  engine.remove_request(id);
  engine.check_invariants();
  return result;
}

}  // namespace

TEST_CASE("engine: a hashed page table follows the cache, not the context or the spread",
          "[unit][policy]") {
  const auto [log_two_level, two_level] = spread_replay(PageTableLayout::kTwoLevel, 1u << 20);
  const auto [log_hashed, hashed] = spread_replay(PageTableLayout::kHashed, 1u << 20);
  const auto [log_small, hashed_small] = spread_replay(PageTableLayout::kHashed, 1u << 16);
  CHECK(log_hashed == log_two_level);  // the layout changes no decision
  CHECK(log_hashed.size() > 1000);
  // Two pools of 400 slots: 2 · (2 · 400 + 1) buckets of 4 bytes, at any context.
  CHECK(hashed.peak.hash_table == 2 * (2 * 400 + 1) * 4);
  CHECK(hashed.peak.directory == 0);
  CHECK(hashed.peak.segments == 0);
  CHECK(hashed_small.peak.hash_table == hashed.peak.hash_table);
  CHECK(hashed.peak.page_table() * 100 < hashed.peak.flat_page_table);
  CHECK(two_level.peak.hash_table == 0);
  CHECK(two_level.peak.page_table() == two_level.peak.two_level());
}

}  // namespace spin::policy::test
