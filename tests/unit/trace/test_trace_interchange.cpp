// Trace interchange: CSV, JSON Lines and page-reference exports, imports, and the trace CLI.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <sstream>

#include "common/trace/interchange.h"
#include "common/trace/reader.h"
#include "common/trace/trace_data.h"
#include "tests/support.h"
#include "tests/unit/trace/trace_fixtures.h"

using namespace spin;
using namespace spin::trace;
using spin::test::contains;
using spin::test::read_file;
using spin::test::run_spin;
using spin::test::small_chunks;
using spin::test::small_trace;
using spin::test::TempDir;
using spin::test::write_file;

namespace {

// A one-request trace small enough to check exported text by hand: 1 layer, 2 KV heads,
// 16-token pages, 8-token partitions, prompt 20 tokens, 3 decode steps.
TraceData hand_trace(PartitionKind kind) {
  TraceData t;
  t.header.model = {"hand", 1, 2, 2, 4, 2};
  t.header.algorithms.push_back({"a", kind, 8, 16, 0.5, 0, 0, 0, 0});
  t.header.source = "hand";
  RequestData r;
  r.info = {42, 5, 20, 3, 3, 0};
  if (kind == PartitionKind::kVariable) {
    for (int h = 0; h < 2; ++h) {
      PartitionMap m(std::vector<uint32_t>{10, 7}, 20);  // clusters [0,10) [10,17)
      m.grow(2, std::vector<uint32_t>{4});               // [17,21) from step 2
      r.maps.push_back(m);
    }
  }
  // Step 0: context 20 tokens (fixed: partitions 0..2; variable: 2 clusters); step 2: 22 tokens
  // (variable: 3 clusters).
  r.append(std::vector<uint32_t>{0, 1});  // step 0, head 0
  r.append(std::vector<uint32_t>{1});     // step 0, head 1
  r.append(std::vector<uint32_t>{});      // step 1: nothing on either head
  r.append(std::vector<uint32_t>{});
  r.append(std::vector<uint32_t>{2});  // step 2, head 0
  r.append(std::vector<uint32_t>{0, 1, 2});
  t.requests.push_back(r);
  return t;
}

}  // namespace

TEST_CASE("trace interchange: write, read, export CSV, import gives identical selections",
          "[unit][trace]") {
  TempDir dir;
  for (uint64_t seed : {11, 12}) {
    const TraceData t = small_trace(seed, 18);
    write_trace(t, dir / "a.spt", small_chunks());
    const auto r = run_spin({"trace", "export", (dir / "a.spt").string(), "--format", "csv",
                             "--out", (dir / "a.csv").string()});
    REQUIRE(r.status == 0);
    CHECK(std::filesystem::exists(dir / "a.csv.meta.jsonl"));
    const auto i =
        run_spin({"trace", "import", (dir / "a.csv").string(), "--out", (dir / "b.spt").string()});
    INFO(i.err);
    REQUIRE(i.status == 0);
    CHECK(contains(i.out, "wrote"));
    CHECK(read_all(dir / "b.spt") == t);
    // The same CSV without its last row (cut at a line boundary) is refused: the metadata
    // records the rows export wrote.
    std::string text = read_file(dir / "a.csv");
    text.erase(text.rfind('\n', text.size() - 2) + 1);
    write_file(dir / "a.csv", text);
    const auto cut =
        run_spin({"trace", "import", (dir / "a.csv").string(), "--out", (dir / "c.spt").string()});
    CHECK(cut.status != 0);
    CHECK(contains(cut.err, "the CSV was cut short"));
    CHECK(!std::filesystem::exists(dir / "c.spt"));
  }
}

TEST_CASE("trace interchange: write, read, export JSON Lines, import gives an identical trace",
          "[unit][trace]") {
  TempDir dir;
  const TraceData t = small_trace(13, 15);
  write_trace(t, dir / "a.spt", small_chunks());
  const auto r = run_spin({"trace", "export", (dir / "a.spt").string(), "--format", "jsonl",
                           "--out", (dir / "a.jsonl").string()});
  REQUIRE(r.status == 0);
  const auto i = run_spin({"trace", "import", (dir / "a.jsonl").string(), "--out",
                           (dir / "b.spt").string(), "--zstd-level", "0"});
  INFO(i.err);
  REQUIRE(i.status == 0);
  CHECK(read_all(dir / "b.spt") == t);
  // The import is canonical: exporting the imported trace gives the same text.
  std::ostringstream again;
  export_jsonl(TraceReader(dir / "b.spt"), again);
  CHECK(again.str() == read_file(dir / "a.jsonl"));
  // An output that cannot be written is the output's error, not the header line's.
  std::filesystem::create_directory(dir / "folder.spt");
  const auto to_folder = run_spin(
      {"trace", "import", (dir / "a.jsonl").string(), "--out", (dir / "folder.spt").string()});
  CHECK(to_folder.status == 2);
  CHECK(to_folder.err == "spin: error: cannot write the trace to '" +
                             (dir / "folder.spt").string() + "': it is a directory\n");
}

TEST_CASE("trace export: CSV rows list each selected partition with the pages it maps to",
          "[unit][trace]") {
  TempDir dir;
  write_trace(hand_trace(PartitionKind::kFixed), dir / "f.spt");
  std::ostringstream csv;
  export_csv(TraceReader(dir / "f.spt"), {}, csv);
  // Partition 2 at step 2 covers tokens [16, 22) (the context ends at 22): page 1 only.
  CHECK(csv.str() ==
        "request,layer,head,step,partition,first_page,page_count\n"
        "42,0,0,0,0,0,1\n42,0,0,0,1,0,1\n42,0,1,0,1,0,1\n"
        "42,0,0,2,2,1,1\n42,0,1,2,0,0,1\n42,0,1,2,1,0,1\n42,0,1,2,2,1,1\n");
  write_trace(hand_trace(PartitionKind::kVariable), dir / "v.spt");
  std::ostringstream vcsv;
  export_csv(TraceReader(dir / "v.spt"), {.request_id = {}, .layer = {}, .head = 1}, vcsv);
  // Clusters [0,10) [10,17) [17,21): cluster 1 spans pages 0 and 1.
  CHECK(vcsv.str() ==
        "request,layer,head,step,partition,first_page,page_count\n"
        "42,0,1,0,1,0,2\n42,0,1,2,0,0,1\n42,0,1,2,1,0,2\n42,0,1,2,2,1,1\n");
}

TEST_CASE("trace export: page-refs lists each page once per stream step with a stable object id",
          "[unit][trace]") {
  TempDir dir;
  write_trace(hand_trace(PartitionKind::kVariable), dir / "v.spt");
  std::ostringstream refs;
  export_page_refs(TraceReader(dir / "v.spt"), {.request_id = 42, .layer = 0, .head = 1}, refs);
  const uint64_t p0 = page_object_id(0, 0, 1, 0), p1 = page_object_id(0, 0, 1, 1);
  CHECK(p0 == (uint64_t{1} << 24));
  // obj_size = 2 · 16 tokens · head_dim 4 · 2 bytes = 256. Page 1, the unfinished last page of
  // a 20- or 22-token context, is in the static region (the local window's last page), which
  // replay does not count as a cache access either: not listed.
  CHECK(refs.str() == fmt::format("time,obj_id,obj_size,request,layer,head,step,page\n"
                                  "0,{0},256,42,0,1,0,0\n2,{0},256,42,0,1,2,0\n",
                                  p0));
  CHECK(p1 == p0 + 1);
  CHECK(page_object_id(3, 2, 1, 5) == (uint64_t{3} << 40 | uint64_t{2} << 32 | 1 << 24 | 5));

  // With 16 sink tokens page 0 is static too: nothing is left to list.
  TraceData sinks = hand_trace(PartitionKind::kVariable);
  sinks.header.algorithms[0].sink_tokens = 16;
  write_trace(sinks, dir / "s.spt");
  std::ostringstream cached;
  export_page_refs(TraceReader(dir / "s.spt"), {.request_id = 42, .layer = 0, .head = 1}, cached);
  CHECK(cached.str() == "time,obj_id,obj_size,request,layer,head,step,page\n");
}

TEST_CASE("trace export: JSON Lines has a header, request, map, growth and step lines",
          "[unit][trace]") {
  TempDir dir;
  write_trace(hand_trace(PartitionKind::kVariable), dir / "v.spt");
  std::ostringstream out;
  export_jsonl(TraceReader(dir / "v.spt"), out);
  const std::string s = out.str();
  CHECK(s.rfind(R"({"type":"header","format":"spin-trace","version":"1.0","model":{"name":"hand")",
                0) == 0);
  CHECK(contains(s, R"({"type":"request","id":42,"arrival_us":5,"prompt_tokens":20,)"
                    R"("output_tokens":3,"decode_steps":3,"algorithm":"a"})"));
  CHECK(contains(s, R"({"type":"partition_map","request":42,"layer":0,"head":1,)"
                    R"("cluster_tokens":[10,7]})"));
  CHECK(contains(s, R"({"type":"step","request":42,"layer":0,"step":1,"selections":[[],[]]})"));
  CHECK(contains(s,
                 R"({"type":"map_growth","request":42,"layer":0,"head":1,"step":2,)"
                 R"("cluster_tokens":[4]})"
                 "\n"
                 R"({"type":"step","request":42,"layer":0,"step":2,"selections":[[2],[0,1,2]]})"));
}

TEST_CASE("trace info: prints the header, counts and bytes per selection; --json is parseable",
          "[unit][trace]") {
  TempDir dir;
  write_trace(small_trace(14), dir / "a.spt", small_chunks());
  const auto r = run_spin({"trace", "info", (dir / "a.spt").string(), "--verify"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(contains(r.out, "format        spin trace 1.0"));
  CHECK(contains(r.out, "model         tiny: 2 layers, 4 query heads, 2 KV heads"));
  CHECK(contains(r.out, "algorithm 2   clusters: variable clusters"));
  CHECK(contains(r.out, "requests      3"));
  CHECK(contains(r.out, "bytes per selected partition"));
  CHECK(contains(r.out, "verified"));
  const auto j = run_spin({"trace", "info", (dir / "a.spt").string(), "--json"});
  REQUIRE(j.status == 0);
  const auto parsed = nlohmann::json::parse(j.out);
  CHECK(parsed["counts"]["requests"] == 3);
  CHECK(parsed["model"]["kv_heads"] == 2);
  CHECK(parsed["bytes"]["file"] == std::filesystem::file_size(dir / "a.spt"));
}

TEST_CASE("trace export: an unknown format or a filter on jsonl is refused with the known formats",
          "[unit][trace]") {
  TempDir dir;
  write_trace(small_trace(15), dir / "a.spt");
  const auto r = run_spin({"trace", "export", (dir / "a.spt").string(), "--format", "xml"});
  CHECK(r.status == 2);
  CHECK(contains(r.err, "unknown --format 'xml'; known formats: csv, jsonl, page-refs"));
  const auto f =
      run_spin({"trace", "export", (dir / "a.spt").string(), "--format", "jsonl", "--layer", "0"});
  CHECK(f.status == 2);
  CHECK(contains(f.err, "jsonl is always the complete trace"));
  const auto q = run_spin(
      {"trace", "export", (dir / "a.spt").string(), "--format", "csv", "--request", "999"});
  CHECK(q.status == 2);
  CHECK(contains(q.err, "no request has id 999"));
}

TEST_CASE("trace sample: traces/sample.spt opens, verifies and matches its documented shape",
          "[unit][trace]") {
  const TraceReader reader(spin::test::source_path("traces/sample.spt"));
  reader.verify();
  const TraceInfo i = reader.info();
  CHECK(reader.header().algorithms.at(0).name == "shadowkv");
  CHECK(reader.header().algorithms.at(0).partition_tokens == 8);
  CHECK(i.requests >= 2);
  CHECK(i.file_bytes < 1024 * 1024);
}

TEST_CASE("trace export: a CSV to a device has no metadata file beside it", "[unit][trace]") {
  if (!std::filesystem::is_character_file("/dev/null")) return;
  TempDir dir;
  write_trace(hand_trace(PartitionKind::kFixed), dir / "h.spt");
  const auto r = run_spin(
      {"trace", "export", (dir / "h.spt").string(), "--format", "csv", "--out", "/dev/null"});
  CHECK(r.status == 0);
  CHECK(contains(r.err, "without its metadata"));
  CHECK_FALSE(std::filesystem::exists("/dev/null.meta.jsonl"));
}
