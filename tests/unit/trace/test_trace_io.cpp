// Trace writer and reader: round trips, stream sampling, info counts.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/trace/file_source.h"
#include "common/trace/reader.h"
#include "common/trace/trace_data.h"
#include "common/trace/writer.h"
#include "tests/support.h"
#include "tests/unit/trace/trace_fixtures.h"

using namespace spin;
using namespace spin::trace;
using spin::test::contains;
using spin::test::small_chunks;
using spin::test::small_trace;
using spin::test::TempDir;

TEST_CASE(
    "trace writer/reader: a written trace reads back identical, fixed and variable "
    "partitions with map growth",
    "[unit][trace]") {
  TempDir dir;
  for (uint64_t seed : {1, 2, 3}) {
    const TraceData t = small_trace(seed, 16);
    for (const WriterOptions& o : {small_chunks(), WriterOptions{}, WriterOptions{1, 0}}) {
      write_trace(t, dir / "t.spt", o);
      const TraceData back = read_all(dir / "t.spt");
      CHECK(back.header == t.header);
      REQUIRE(back.requests.size() == t.requests.size());
      for (size_t i = 0; i < t.requests.size(); ++i) CHECK(back.requests[i] == t.requests[i]);
      CHECK(back == t);
    }
  }
}

TEST_CASE(
    "trace writer: nothing is at the final path until finish(), and an abandoned writer "
    "leaves no file",
    "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(4);
  {
    TraceWriter w(dir / "a.spt", t.header);
    w.begin_request(t.requests[0].info);
    CHECK(!std::filesystem::exists(dir / "a.spt"));
    CHECK(std::filesystem::exists(dir / "a.spt.partial"));
  }
  CHECK(!std::filesystem::exists(dir / "a.spt"));
  CHECK(!std::filesystem::exists(dir / "a.spt.partial"));
  TraceWriter w(dir / "b.spt", t.header);
  w.finish();
  CHECK(std::filesystem::exists(dir / "b.spt"));
  CHECK(!std::filesystem::exists(dir / "b.spt.partial"));
  const TraceReader r(dir / "b.spt");
  CHECK(r.requests().empty());
  CHECK(r.info().selections == 0);
}

TEST_CASE("trace reader: a sampled subset of heads reads the same selections as a full read",
          "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(5, 20);
  write_trace(t, dir / "t.spt", small_chunks());
  const TraceReader reader(dir / "t.spt");
  for (size_t req = 0; req < t.requests.size(); ++req) {
    for (uint32_t layer = 0; layer < 2; ++layer) {
      for (const std::vector<uint32_t>& heads :
           {std::vector<uint32_t>{1}, std::vector<uint32_t>{0}, std::vector<uint32_t>{1, 0}}) {
        LayerCursor c = reader.open_layer(req, layer, heads);
        CHECK(std::vector<uint32_t>(c.heads().begin(), c.heads().end()) == heads);
        uint32_t steps = 0;
        while (c.next()) {
          CHECK(c.step() == steps);
          for (uint32_t h : heads) {
            const auto got = c.selection(h);
            const auto want = t.selection(req, layer, c.step(), h);
            CHECK(std::vector<uint32_t>(got.begin(), got.end()) ==
                  std::vector<uint32_t>(want.begin(), want.end()));
          }
          ++steps;
        }
        CHECK(steps == t.requests[req].info.decode_steps);
        CHECK(!c.next());
      }
    }
  }
}

TEST_CASE("trace reader: the cursor exposes the partition map in force at each step",
          "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(6, 16);
  write_trace(t, dir / "t.spt", small_chunks());
  const TraceReader reader(dir / "t.spt");
  const RequestData& var = t.requests[2];
  LayerCursor c = reader.open_layer(2, 1, std::vector<uint32_t>{1});
  const PartitionMap& m = var.maps[1 * 2 + 1];
  REQUIRE(c.partition_map(1) != nullptr);
  CHECK(*c.partition_map(1) == m);
  while (c.next()) {
    const uint32_t n = m.clusters_at(c.step());
    CHECK(c.partition_count(1) == n);
    CHECK(c.partition_offsets(1).size() == n + 1);
    CHECK(c.partition_offsets(1).back() == m.offsets()[n]);
    if (c.step() < 4) CHECK(n == m.initial_clusters());
    if (c.step() >= 11) CHECK(n == m.clusters());
  }
  LayerCursor f = reader.open_layer(0, 0);
  REQUIRE(f.next());
  CHECK(f.partition_map(0) == nullptr);
  CHECK(f.partition_offsets(0).empty());
  CHECK(f.partition_count(0) == (t.requests[0].info.prompt_tokens + 7) / 8);
}

TEST_CASE("trace reader: a file read as a TraceSource yields the same steps as a LayerCursor",
          "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(9, 14);
  write_trace(t, dir / "t.spt", small_chunks());
  const FileSource source(dir / "t.spt");
  const TraceSource& s = source;
  CHECK(s.header() == t.header);
  REQUIRE(s.requests().size() == 3);
  CHECK(s.algorithm_of(2).partition_kind == PartitionKind::kVariable);
  const std::unique_ptr<StepStream> stream = s.open_layer(2, 1, std::vector<uint32_t>{0});
  uint32_t steps = 0;
  while (stream->next()) {
    const auto got = stream->selection(0);
    const auto want = t.selection(2, 1, stream->step(), 0);
    CHECK(std::equal(got.begin(), got.end(), want.begin(), want.end()));
    const uint32_t n = t.requests[2].maps[2].clusters_at(stream->step());
    CHECK(stream->partition_offsets(0).size() == n + 1);
    ++steps;
  }
  CHECK(steps == 14);
}

TEST_CASE(
    "trace reader: info counts requests, streams, steps, selections and chunks without "
    "decoding",
    "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(7, 16);
  write_trace(t, dir / "t.spt", small_chunks());
  const TraceInfo i = TraceReader(dir / "t.spt").info();
  uint64_t selections = 0;
  for (const RequestData& r : t.requests) selections += r.ids.size();
  CHECK(i.requests == 3);
  CHECK(i.streams == 3 * 2 * 2);
  CHECK(i.request_steps == 48);
  CHECK(i.stream_steps == 48 * 4);
  CHECK(i.selections == selections);
  CHECK(i.map_chunks == 2);
  CHECK(i.selection_chunks > 6);
  CHECK(i.file_bytes == std::filesystem::file_size(dir / "t.spt"));
  CHECK(i.bytes_per_selection() > 0);
}

TEST_CASE("trace reader: open_layer rejects out-of-range and repeated heads by name",
          "[unit][trace]") {
  TempDir dir;
  write_trace(small_trace(8), dir / "t.spt");
  const TraceReader reader(dir / "t.spt");
  CHECK_THROWS_WITH(reader.open_layer(3, 0), Catch::Contains("request index 3 out of range"));
  CHECK_THROWS_WITH(reader.open_layer(0, 2), Catch::Contains("layer 2 out of range"));
  CHECK_THROWS_WITH(reader.open_layer(0, 0, std::vector<uint32_t>{2}),
                    Catch::Contains("head 2 is out of range"));
  CHECK_THROWS_WITH(reader.open_layer(0, 0, std::vector<uint32_t>{1, 1}),
                    Catch::Contains("head 1 is listed twice"));
  LayerCursor c = reader.open_layer(0, 0, std::vector<uint32_t>{1});
  REQUIRE(c.next());
  CHECK_THROWS_AS(c.selection(0), InvariantError);
}
