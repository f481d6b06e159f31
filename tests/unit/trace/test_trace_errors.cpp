// Trace bad input: every case names where (byte offset, stream and step, or file and line) and
// what was expected.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/trace/format.h"
#include "common/trace/interchange.h"
#include "common/trace/reader.h"
#include "common/trace/trace_data.h"
#include "common/trace/writer.h"
#include "tests/support.h"
#include "tests/unit/trace/trace_fixtures.h"

using namespace spin;
using namespace spin::trace;
using spin::test::contains;
using spin::test::read_error;
using spin::test::read_file;
using spin::test::small_chunks;
using spin::test::small_header;
using spin::test::small_trace;
using spin::test::small_trace_bytes;
using spin::test::TempDir;
using spin::test::write_file;
namespace f = spin::trace::format;

namespace {

struct Layout {
  f::Footer footer;
  std::vector<f::IndexEntry> entries;
};

Layout layout_of(const std::string& bytes) {
  const auto b = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  Layout l;
  l.footer = f::decode_footer(b.last(f::kFooterBytes), "", b.size());
  l.entries = f::decode_index(b.subspan(l.footer.index_offset, l.footer.index_bytes), "",
                              l.footer.index_offset);
  return l;
}

std::string flipped(std::string bytes, size_t at) {
  bytes[at] = static_cast<char>(bytes[at] ^ 0x20);
  return bytes;
}

std::string import_error(const std::string& name, const std::string& text,
                         const std::string& meta = "") {
  TempDir dir;
  write_file(dir / name, text);
  if (!meta.empty()) write_file(dir / (name + ".meta.jsonl"), meta);
  try {
    if (name.ends_with(".csv")) {
      import_csv(dir / name, metadata_path_for(dir / name), dir / "out.spt");
    } else {
      import_jsonl(dir / name, dir / "out.spt");
    }
  } catch (const InputError& e) {
    CHECK(!std::filesystem::exists(dir / "out.spt"));
    // Strip the temporary directory so that messages compare as "name:line: ...".
    std::string m = e.what();
    for (size_t at; (at = m.find(dir.path().string() + "/")) != std::string::npos;) {
      m.erase(at, dir.path().string().size() + 1);
    }
    return m;
  }
  return "";
}

const std::string kHeaderLine =
    R"({"type":"header","format":"spin-trace","version":"1.0","model":{"name":"m","layers":1,)"
    R"("query_heads":2,"kv_heads":2,"head_dim":4,"dtype_bytes":2},"algorithms":[{"name":"a",)"
    R"("partition":"fixed","partition_tokens":8,"page_tokens":8,"budget_ratio":0,)"
    R"("budget_tokens":0,"sink_tokens":0,"local_window_tokens":0,"reindex_interval_tokens":0}],)"
    R"("source":"t","seed":1})";
// Prompt 20 tokens, g = 8: 3 partitions at steps 0..3, 4 from step 4 (context 24 → ceil = 3; 25
// at step 5 → 4).
const std::string kRequestLine =
    R"({"type":"request","id":5,"arrival_us":0,"prompt_tokens":20,"output_tokens":3,)"
    R"("decode_steps":3,"algorithm":"a"})";

std::string step_line(int step, const std::string& selections) {
  return fmt::format(R"({{"type":"step","request":5,"layer":0,"step":{},"selections":{}}})", step,
                     selections);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reader

TEST_CASE("trace reader: a file truncated at any offset is reported as truncated with its size",
          "[unit][trace]") {
  const std::string bytes = small_trace_bytes(21);
  for (size_t cut = 0; cut < bytes.size(); cut += (cut < 40 || cut + 80 > bytes.size()) ? 1 : 37) {
    const std::string m = read_error(bytes.substr(0, cut));
    INFO("cut at " << cut << ": " << m);
    CHECK(contains(m, "truncated"));
    CHECK((cut == 0 || contains(m, fmt::format("{} bytes", cut))));
  }
}

TEST_CASE("trace reader: a wrong magic says the file is not a spin trace and shows the bytes",
          "[unit][trace]") {
  std::string bytes = small_trace_bytes(22);
  bytes.replace(0, 4, "PK\x03\x04");
  CHECK(contains(read_error(bytes),
                 "not a spin trace: bytes 0..7 are [50 4b 03 04 0d 0a 1a 0a], expected the magic "
                 "[89 53 50 54 0d 0a 1a 0a]"));
  CHECK(contains(read_error(std::string(200, 'x')), "not a spin trace"));
}

TEST_CASE("trace reader: an unsupported major version is refused; a newer minor version reads",
          "[unit][trace]") {
  std::string bytes = small_trace_bytes(23);
  const auto v2 = f::encode_header({2, 3});
  bytes.replace(0, v2.size(), std::string(v2.begin(), v2.end()));
  CHECK(contains(read_error(bytes),
                 "unsupported trace format version 2.3 (byte 8): this spin reads version 1.x"));
  const auto v1 = f::encode_header({1, 7});
  bytes.replace(0, v1.size(), std::string(v1.begin(), v1.end()));
  CHECK(read_error(bytes) == "");
}

TEST_CASE("trace reader: a flipped byte in the file header is reported as header corruption",
          "[unit][trace]") {
  const std::string bytes = small_trace_bytes(24);
  for (size_t at = 0; at < f::kHeaderBytes; ++at) {
    const std::string m = read_error(flipped(bytes, at));
    INFO("byte " << at << ": " << m);
    CHECK(contains(m, at < 8 ? "not a spin trace: bytes 0..7"
                             : "file header (bytes 0..23) is corrupted: checksum mismatch"));
  }
}

TEST_CASE("trace reader: a flipped byte in a chunk is reported with the chunk's byte offset",
          "[unit][trace]") {
  const std::string bytes = small_trace_bytes(25);
  const Layout l = layout_of(bytes);
  const uint64_t table = 2 * f::kHeadEntryBytes;
  for (size_t i = 0; i < l.entries.size(); i += 5) {
    const f::IndexEntry& e = l.entries[i];
    const std::string where = fmt::format("chunk at byte {} (request id ", e.offset);
    const std::string t = read_error(flipped(bytes, e.offset + 3));
    INFO(t);
    CHECK(contains(t, where));
    CHECK(contains(t, fmt::format("the head table (bytes {}..{}) is corrupted: checksum mismatch",
                                  e.offset, e.offset + table - 1)));
    const std::string s = read_error(flipped(bytes, e.offset + e.stored_bytes - 1));
    INFO(s);
    CHECK(contains(s, where));
    CHECK(contains(s, fmt::format("layer {}, head 1, steps [{}, {})", e.layer, e.first_step,
                                  e.first_step + e.step_count)));
    CHECK(contains(
        s, fmt::format("..{}) is corrupted: checksum mismatch", e.offset + e.stored_bytes - 1)));
  }
}

TEST_CASE(
    "trace reader: a flipped byte in the metadata, the index or the footer names the "
    "section's bytes",
    "[unit][trace]") {
  const std::string bytes = small_trace_bytes(26);
  const Layout l = layout_of(bytes);
  const f::Footer& ft = l.footer;
  const std::string metadata =
      fmt::format("the metadata section (bytes {}..{}) is corrupted", ft.metadata_offset,
                  ft.metadata_offset + ft.metadata_bytes - 1);
  const std::string index = fmt::format("the chunk index (bytes {}..{}) is corrupted",
                                        ft.index_offset, ft.index_offset + ft.index_bytes - 1);
  const uint64_t foot = bytes.size() - f::kFooterBytes;
  const std::string footer =
      fmt::format("footer (bytes {}..{}) is corrupted: checksum mismatch", foot, bytes.size() - 1);
  for (uint64_t at = ft.metadata_offset; at < bytes.size(); at += 3) {
    const std::string m = read_error(flipped(bytes, at));
    INFO("byte " << at << ": " << m);
    if (at < ft.index_offset) {
      CHECK(contains(m, metadata));
    } else if (at < foot) {
      CHECK(contains(m, index));
    } else if (at < bytes.size() - 8) {
      CHECK(contains(m, footer));
    } else {
      CHECK(contains(m, "truncated or unfinished trace"));
    }
  }
}

TEST_CASE(
    "trace reader: ids beyond the context behind valid checksums are reported with the "
    "chunk, stream and step",
    "[unit][trace]") {
  TempDir dir;
  TraceData t;
  t.header = small_header();
  RequestData r;
  r.info = {9, 0, 100, 2, 2, 0};  // fixed8: 13 partitions at step 0
  for (int k = 0; k < 2 * 2 * 2; ++k) r.append(std::vector<uint32_t>{3, 12});
  t.requests.push_back(r);
  write_trace(t, dir / "t.spt");
  std::string bytes = read_file(dir / "t.spt");
  // Shrink the prompt in the metadata to 60 tokens (8 partitions) and reseal the checksums.
  const Layout l = layout_of(bytes);
  auto b = std::vector<uint8_t>(bytes.begin(), bytes.end());
  auto [header, requests] = f::decode_metadata(
      std::span(b).subspan(l.footer.metadata_offset, l.footer.metadata_bytes), "", 0, {});
  requests[0].prompt_tokens = 60;
  const std::vector<uint8_t> metadata = f::encode_metadata(header, requests);
  REQUIRE(metadata.size() == l.footer.metadata_bytes);
  bytes.replace(l.footer.metadata_offset, metadata.size(),
                std::string(metadata.begin(), metadata.end()));
  REQUIRE(spin::test::reseal(bytes, 2));
  const std::string m = read_error(bytes);
  CHECK(contains(m,
                 "selection chunk at byte 24 (request id 9, layer 0, head 0, steps [0, 2)): "
                 "step 0, segment byte 3: partition id 12 is out of range: 8 partitions exist "
                 "at this step"));
}

TEST_CASE(
    "trace reader: chunks that do not cover a layer's steps in order are reported with the "
    "index entry",
    "[unit][trace]") {
  std::string bytes = small_trace_bytes(27);
  const Layout l = layout_of(bytes);
  std::vector<f::IndexEntry> entries = l.entries;
  size_t k = 1;
  while (entries[k].first_step == 0) ++k;  // the second chunk of some layer
  entries[k].first_step += 1;
  const std::vector<uint8_t> index = f::encode_index(entries);
  bytes.replace(l.footer.index_offset, index.size(), std::string(index.begin(), index.end()));
  REQUIRE(spin::test::reseal(bytes, 2));
  const std::string m = read_error(bytes);
  CHECK(contains(m, fmt::format("chunk index entry {} (byte {}): request id ", k,
                                l.footer.index_offset + 8 + k * f::kIndexEntryBytes)));
  CHECK(contains(
      m, fmt::format("selection chunk covers steps [{}, +{}), expected a non-empty range "
                     "starting at step {}",
                     entries[k].first_step, entries[k].step_count, entries[k].first_step - 1)));
}

// ---------------------------------------------------------------------------------------------
// Writer

TEST_CASE(
    "trace writer: bad selections are rejected naming request, layer, head, step and "
    "position",
    "[unit][trace]") {
  TempDir dir;
  TraceWriter w(dir / "t.spt", small_header());
  w.begin_request({3, 0, 20, 4, 4, 0});  // fixed8: 3 partitions at step 0
  const std::vector<uint32_t> offsets = {0, 2, 4};
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, std::vector<uint32_t>{0, 1, 1, 3}),
                    "request id 3, layer 0, head 1, step 0: partition id 3 at position 1 is out of "
                    "range: 3 partitions exist at this step");
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, std::vector<uint32_t>{2, 1, 0, 1}),
                    "request id 3, layer 0, head 0, step 0: partition id 1 at position 1 is not "
                    "greater than the previous id 2 (ids must be strictly ascending, without "
                    "duplicates)");
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, std::vector<uint32_t>{0, 1, 2, 2}),
                    Catch::Contains("head 1, step 0: partition id 2 at position 1 is not greater"));
  try {
    w.add_step(0, 0, offsets, std::vector<uint32_t>{0, 1, 1, 5});
  } catch (const SelectionError& e) {
    CHECK(e.head == 1);
    CHECK(e.position == 1);
  }
  CHECK_THROWS_WITH(
      w.add_step(0, 0, std::vector<uint32_t>{0, 2}, std::vector<uint32_t>{0, 1}),
      "request id 3: layer 0: step 0: 2 head offsets given, expected kv_heads + 1 = 3");
}

TEST_CASE(
    "trace writer: steps out of order, missing or past the end are rejected with the "
    "expected step",
    "[unit][trace]") {
  TempDir dir;
  TraceWriter w(dir / "t.spt", small_header());
  const std::vector<uint32_t> offsets = {0, 0, 0};
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, {}),
                    "add_step: no request is open (call begin_request)");
  w.begin_request({3, 0, 20, 4, 2, 0});
  CHECK_THROWS_WITH(w.add_step(0, 1, offsets, {}),
                    "request id 3: layer 0: step 1 given, expected step 0 (each layer's steps are "
                    "added in order, contiguous from 0)");
  w.add_step(0, 0, offsets, {});
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, {}),
                    Catch::Contains("step 0 given, expected step 1"));
  w.add_step(0, 1, offsets, {});
  CHECK_THROWS_WITH(w.add_step(0, 2, offsets, {}),
                    "request id 3: layer 0: step 2 is past the request's 2 decode steps");
  CHECK_THROWS_WITH(w.add_step(2, 0, offsets, {}),
                    "request id 3: add_step: layer 2 out of range (the model has 2 layers)");
  CHECK_THROWS_WITH(w.end_request(),
                    "request id 3: layer 1: 0 steps were added, the request has decode_steps = 2");
  CHECK_THROWS_WITH(w.begin_request({4, 0, 20, 4, 2, 0}),
                    Catch::Contains("begin_request(id 4) while this request is open"));
  CHECK_THROWS_WITH(w.finish(), Catch::Contains("finish() called while this request is open"));
}

TEST_CASE("trace writer: request fields, ids and partition maps are validated", "[unit][trace]") {
  TempDir dir;
  TraceWriter w(dir / "t.spt", small_header());
  CHECK_THROWS_WITH(w.begin_request({1, 0, 20, 4, 5, 0}),
                    "request id 1: decode_steps: 5 exceeds output_tokens (4)");
  CHECK_THROWS_WITH(w.begin_request({1, 0, 20, 4, 4, 3}),
                    "request id 1: algorithm: index 3 out of range (the trace has 3 algorithms)");
  w.begin_request({1, 0, 20, 4, 1, 2});  // variable partitions
  const std::vector<uint32_t> ok = {10, 10};
  CHECK_THROWS_WITH(w.set_partition_map(0, 0, std::vector<uint32_t>{4, 0}),
                    "request id 1: layer 0, head 0: initial partition map: cluster 1 has 0 tokens "
                    "(every cluster holds >= 1 token)");
  CHECK_THROWS_WITH(w.set_partition_map(0, 0, std::vector<uint32_t>{15, 6}),
                    "request id 1: layer 0, head 0: initial partition map: clusters cover 21 "
                    "tokens by cluster 1, more than the 20 tokens of the context");
  CHECK_THROWS_WITH(w.set_partition_map(0, 2, ok),
                    Catch::Contains("head 2 out of range (the model has 2 KV heads)"));
  for (uint32_t l = 0; l < 2; ++l) {
    for (uint32_t h = 0; h < 2; ++h) w.set_partition_map(l, h, ok);
  }
  CHECK_THROWS_WITH(w.set_partition_map(0, 0, ok), Catch::Contains("called twice"));
  CHECK_THROWS_WITH(w.grow_partition_map(1, 0, 0, std::vector<uint32_t>{1}),
                    Catch::Contains("map growth must come after step 0 and before step 1"));
  CHECK_THROWS_WITH(
      w.grow_partition_map(0, 0, 0, std::vector<uint32_t>{1}),
      Catch::Contains("clusters cover 21 tokens by cluster 2, more than the 20 tokens"));
  const std::vector<uint32_t> offsets = {0, 1, 1};
  CHECK_THROWS_WITH(w.add_step(0, 0, offsets, std::vector<uint32_t>{2}),
                    Catch::Contains("partition id 2 at position 0 is out of range: 2 partitions "
                                    "exist at this step"));
  w.add_step(0, 0, offsets, std::vector<uint32_t>{1});
  w.add_step(1, 0, offsets, std::vector<uint32_t>{0});
  w.end_request();
  CHECK_THROWS_WITH(w.begin_request({1, 0, 20, 4, 0, 0}),
                    "request id 1 appears twice (ids must be unique)");
}

TEST_CASE("trace writer: a header that breaks the model or algorithm rules is refused by field",
          "[unit][trace]") {
  TempDir dir;
  TraceHeader h = small_header();
  h.model.query_heads = 3;
  CHECK_THROWS_WITH(TraceWriter(dir / "t.spt", h),
                    "model.query_heads: must be a multiple of kv_heads (2), got 3");
  h = small_header();
  h.algorithms[1].name = "fixed8";
  CHECK_THROWS_WITH(TraceWriter(dir / "t.spt", h), "algorithms[1].name: 'fixed8' appears twice");
  h = small_header();
  h.algorithms[0].partition_tokens = 0;
  CHECK_THROWS_WITH(TraceWriter(dir / "t.spt", h),
                    "algorithms[0].partition_tokens: must be >= 1 for fixed partitions, got 0");
  // Range errors give the value found.
  h = small_header();
  h.algorithms[0].page_tokens = 12;
  CHECK_THROWS_WITH(TraceWriter(dir / "t.spt", h),
                    "algorithms[0].page_tokens: must be a power of two (pages are addressed by "
                    "shifts), got 12");
  h = small_header();
  h.model.dtype_bytes = 9;
  CHECK_THROWS_WITH(TraceWriter(dir / "t.spt", h), "model.dtype_bytes: must be in [1, 8], got 9");
  CHECK(!std::filesystem::exists(dir / "t.spt.partial"));
}

// ---------------------------------------------------------------------------------------------
// Import

TEST_CASE("trace import: JSON Lines errors name the file, the line and what was expected",
          "[unit][trace]") {
  const std::string head = kHeaderLine + "\n" + kRequestLine + "\n";
  CHECK(import_error("t.jsonl", head + "{\"type\": \"step\", \n") ==
        "t.jsonl:3: not valid JSON: parse error at line 1, column 18: syntax error while parsing "
        "object key - unexpected end of input; expected string literal");
  CHECK(import_error("t.jsonl",
                     head + R"({"type":"step","request":5,"step":0,"selections":[[],[]]})") ==
        "t.jsonl:3: step line: field 'layer' is missing");
  CHECK(import_error("t.jsonl", head + step_line(0, R"([[0,"x"],[]])")) ==
        "t.jsonl:3: step line: field 'selections[0][1]' must be an unsigned integer < 2^32, got "
        "\"x\"");
  CHECK(import_error("t.jsonl", head + step_line(0, "[[0]]")) ==
        "t.jsonl:3: step line: 'selections' has 1 arrays, expected one per KV head (2)");
  CHECK(import_error("t.jsonl", head + step_line(1, "[[],[]]")) ==
        "t.jsonl:3: step line: request id 5: layer 0: step 1 given, expected step 0 (each layer's "
        "steps are added in order, contiguous from 0)");
  CHECK(import_error("t.jsonl", head + step_line(0, "[[],[]]") + "\n" + step_line(0, "[[],[]]")) ==
        "t.jsonl:4: step line: request id 5: layer 0: step 0 given, expected step 1 (each layer's "
        "steps are added in order, contiguous from 0)");
  CHECK(import_error("t.jsonl", head + step_line(0, "[[0,3],[]]")) ==
        "t.jsonl:3: step line: request id 5, layer 0, head 0, step 0: partition id 3 at position "
        "1 is out of range: 3 partitions exist at this step");
  CHECK(import_error("t.jsonl", head + step_line(0, "[[],[2,1]]")) ==
        "t.jsonl:3: step line: request id 5, layer 0, head 1, step 0: partition id 1 at position "
        "1 is not greater than the previous id 2 (ids must be strictly ascending, without "
        "duplicates)");
  CHECK(import_error("t.jsonl", head + step_line(0, "[[],[]]")) ==
        "t.jsonl: at the end of the input (line 3): request id 5: layer 0: 1 steps were added, "
        "the request has decode_steps = 3");
  CHECK(import_error("t.jsonl", kRequestLine + "\n") ==
        "t.jsonl:1: request line: the first line must be the header (\"type\": \"header\"), got "
        "\"type\": \"request\"");
  CHECK(import_error("t.jsonl", head + R"({"type":"frame"})") ==
        "t.jsonl:3: frame line: unknown line type \"frame\" (known: header, request, "
        "partition_map, map_growth, step)");
  CHECK(import_error(
            "t.jsonl",
            head + R"({"type":"step","request":6,"layer":0,"step":0,"selections":[[],[]]})") ==
        "t.jsonl:3: step line: the line is for request id 6, but the open request is id 5; the "
        "lines of a request follow its request line");
  CHECK(import_error("t.jsonl", "") == "t.jsonl: no header line: the input is empty");
  CHECK(import_error("t.jsonl", head + kHeaderLine) ==
        "t.jsonl:3: header line: a second header line: the header is the first line only");
  std::string bad_version = kHeaderLine;
  bad_version.replace(bad_version.find("\"1.0\""), 5, "\"2.0\"");
  CHECK(import_error("t.jsonl", bad_version) ==
        "t.jsonl:1: header line: unsupported interchange version \"2.0\": this spin reads 1.x");
  std::string bad_model = kHeaderLine;
  bad_model.replace(bad_model.find("\"layers\":1"), 10, "\"layers\":-1");
  CHECK(import_error("t.jsonl", bad_model) ==
        "t.jsonl:1: header line: field 'model.layers' must be an unsigned integer < 2^32, got -1");
  // A field the format does not have (a misspelling would otherwise be dropped), a field twice.
  CHECK(import_error(
            "t.jsonl",
            head + R"({"type":"step","request":5,"layer":0,"step":0,"selection":[[],[]]})") ==
        "t.jsonl:3: step line: unknown field 'selection' (expected type, request, layer, step, "
        "selections)");
  std::string extra_model = kHeaderLine;
  extra_model.replace(extra_model.find("\"layers\":1"), 10, "\"layers\":1,\"experts\":8");
  CHECK(import_error("t.jsonl", extra_model) ==
        "t.jsonl:1: header line: unknown field 'model.experts' (expected name, layers, "
        "query_heads, kv_heads, head_dim, dtype_bytes)");
  CHECK(import_error("t.jsonl", head +
                                    R"({"type":"step","request":5,"layer":0,"layer":1,"step":0,)" +
                                    R"("selections":[[],[]]})") ==
        "t.jsonl:3: the field 'layer' is given twice");
  std::string counted_request = kRequestLine;  // csv_rows belongs to a CSV's metadata only
  counted_request.insert(counted_request.size() - 1, R"(,"csv_rows":2)");
  CHECK(import_error("t.jsonl", kHeaderLine + "\n" + counted_request + "\n")
            .starts_with("t.jsonl:2: request line: unknown field 'csv_rows' (expected type, id,"));
  CHECK(import_error("t.jsonl", head + step_line(0, "[[1e999],[]]")) ==
        "t.jsonl:3: not valid JSON: number overflow parsing '1e999'");
}

TEST_CASE("trace import: CSV errors name the file, the line and what was expected",
          "[unit][trace]") {
  const std::string meta = kHeaderLine + "\n" + kRequestLine + "\n";
  const std::string cols = "request,layer,head,step,partition\n";
  CHECK(import_error("t.csv", cols + "5,0,0,0,x\n", meta) ==
        "t.csv:2: column 'partition': expected an unsigned integer, got 'x'");
  CHECK(import_error("t.csv", cols + "5,0,0,0\n", meta) ==
        "t.csv:2: 4 fields, the header row has 5");
  CHECK(import_error("t.csv", "request,layer,head,partition\n", meta) ==
        "t.csv:1: the header row lacks column 'step' (needs request, layer, head, step, "
        "partition, named exactly, without spaces around them); it has 'request', 'layer', "
        "'head', 'partition'");
  CHECK(import_error("t.csv", "request, layer, head, step, partition\n", meta) ==
        "t.csv:1: the header row lacks column 'layer' (needs request, layer, head, step, "
        "partition, named exactly, without spaces around them); it has 'request', ' layer', "
        "' head', ' step', ' partition'");
  CHECK(import_error("t.csv", cols + "7,0,0,0,1\n", meta) ==
        "t.csv:2: request id 7 is not in the metadata file");
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n5,0,0,0,0\n", meta) ==
        "t.csv:3: request id 5, layer 0, head 0, step 0: partition id 0 at position 1 is not "
        "greater than the previous id 1 (ids must be strictly ascending, without duplicates)");
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n5,0,1,0,0\n5,0,1,0,3\n", meta) ==
        "t.csv:4: request id 5, layer 0, head 1, step 0: partition id 3 at position 1 is out of "
        "range: 3 partitions exist at this step");
  CHECK(import_error("t.csv", cols + "5,0,0,1,1\n5,0,0,0,1\n", meta) ==
        "t.csv:3: step 0 of layer 0 comes after step 1 (rows of a layer are in ascending step "
        "order, each (layer, step) contiguous)");
  CHECK(import_error("t.csv", cols + "5,0,1,0,1\n5,0,0,0,1\n", meta) ==
        "t.csv:3: head 0 follows head 1 within request id 5, layer 0, step 0 (the rows of a step "
        "are sorted by head)");
  CHECK(import_error("t.csv", cols + "5,0,2,0,1\n", meta) ==
        "t.csv:2: head 2 out of range (the model has 2 KV heads)");
  CHECK(import_error("t.csv", cols + "5,0,0,3,1\n", meta) ==
        "t.csv:2: request id 5: layer 0: step 3 is past the request's 3 decode steps");
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n") ==
        "cannot open t.csv.meta.jsonl: No such file or directory");
  CHECK(import_error("t.csv", cols, meta + step_line(0, "[[],[]]")) ==
        "t.csv.meta.jsonl:3: step line: a metadata file has no step lines: the selections are the "
        "CSV's rows");
  // Steps without rows selected nothing: a CSV with no rows at all is a valid, empty request.
  CHECK(import_error("t.csv", cols, meta) == "");
  // Export records each request's rows (csv_rows): a CSV cut at a line boundary is an error.
  std::string counted = kRequestLine;
  counted.insert(counted.size() - 1, R"(,"csv_rows":2)");
  const std::string counted_meta = kHeaderLine + "\n" + counted + "\n";
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n5,0,1,0,0\n", counted_meta) == "");
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n", counted_meta) ==
        "t.csv: at the end of the input (line 2) (where the rows of request id 5 end): the CSV "
        "holds 1 rows of request id 5 where its metadata (t.csv.meta.jsonl:2: request line, "
        "csv_rows) says export wrote 2: the CSV was cut short, or rows were lost");
  CHECK(import_error("t.csv", cols + "5,0,0,0,1\n5,0,1,0,0\n5,0,1,0,1\n", counted_meta) ==
        "t.csv: at the end of the input (line 4) (where the rows of request id 5 end): the CSV "
        "holds 3 rows of request id 5 where its metadata (t.csv.meta.jsonl:2: request line, "
        "csv_rows) says export wrote 2: rows were added to the CSV");
  // A column twice is ambiguous; a UTF-8 byte order mark (spreadsheet exports) is skipped.
  CHECK(import_error("t.csv", "request,layer,head,step,partition,request\n", meta) ==
        "t.csv:1: the header row has column 'request' twice");
  CHECK(import_error("t.csv", "\xEF\xBB\xBF" + cols, meta) == "");
}
