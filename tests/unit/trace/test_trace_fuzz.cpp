// Seeded mutation fuzzing of the trace reader and decoders (tests/README.md, "Conventions"): every
// outcome is a successful read or an InputError, never another exception, a crash or a hang. It
// runs under ASan + UBSan in CI, so it is kept to a few seconds. Inputs that ever broke the reader
// live in tests/data/fuzz/trace/ and are replayed.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <random>

#include "common/error.h"
#include "common/trace/codec.h"
#include "common/trace/format.h"
#include "common/trace/trace_data.h"
#include "tests/support.h"
#include "tests/unit/trace/trace_fixtures.h"

using namespace spin;
using namespace spin::trace;
using spin::test::read_error;
using spin::test::small_trace;
using spin::test::TempDir;

namespace {

// Applies one random mutation: flip bits of 1-4 bytes, truncate, insert random bytes, delete a
// range, or duplicate a range.
void mutate(std::string& b, std::mt19937_64& rng, size_t lo, size_t hi) {
  const auto below = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const size_t at = lo + below(hi - lo);
  switch (below(5)) {
    case 0:
      for (size_t i = 0, n = 1 + below(4); i < n; ++i) {
        const size_t p = lo + below(hi - lo);
        b[p] = static_cast<char>(b[p] ^ (1 + below(255)));
      }
      break;
    case 1:
      b.resize(at);
      break;
    case 2: {
      std::string ins(1 + below(16), '\0');
      for (char& c : ins) c = static_cast<char>(rng());
      b.insert(at, ins);
      break;
    }
    case 3:
      b.erase(at, 1 + below(16));
      break;
    default:
      b.insert(at, b.substr(at, 1 + below(32)));
  }
}

// One valid, small trace image: several small chunks per layer with raw segments (level 0), or
// fewer, larger chunks whose segments are zstd frames (level 3).
std::string fuzz_seed_image(int zstd_level) {
  TempDir dir;
  const WriterOptions options = {.chunk_selections = zstd_level == 0 ? 30u : 100000u,
                                 .zstd_level = zstd_level};
  write_trace(small_trace(31, zstd_level == 0 ? 12 : 40), dir / "t.spt", options);
  return spin::test::read_file(dir / "t.spt");
}

// How many segments of the image are stored as zstd frames.
int compressed_segments(const std::string& image) {
  const auto b = std::span(reinterpret_cast<const uint8_t*>(image.data()), image.size());
  const format::Footer f = format::decode_footer(b.last(format::kFooterBytes), "", b.size());
  int n = 0;
  for (const format::IndexEntry& e :
       format::decode_index(b.subspan(f.index_offset, f.index_bytes), "", f.index_offset)) {
    for (const format::HeadEntry& h :
         format::decode_head_table(b.subspan(e.offset, 2 * format::kHeadEntryBytes), "", 0)) {
      n += h.stored_bytes < h.raw_bytes;
    }
  }
  return n;
}

}  // namespace

TEST_CASE("trace reader fuzz: every mutation of a valid file is reported as an InputError",
          "[unit][trace][fuzz]") {
  // Every byte of a trace is under a checksum and the sections tile the file, so no mutation may
  // read successfully.
  CHECK(compressed_segments(fuzz_seed_image(0)) == 0);
  CHECK(compressed_segments(fuzz_seed_image(3)) > 4);
  for (int level : {0, 3}) {
    const std::string seed = fuzz_seed_image(level);
    std::mt19937_64 rng(1000 + level);
    for (int i = 0; i < 300; ++i) {
      std::string b = seed;
      mutate(b, rng, 0, b.size());
      if (b == seed) continue;
      const std::string m = read_error(b);
      INFO("mutation " << i << " at level " << level);
      CHECK(!m.empty());
    }
  }
}

TEST_CASE("trace reader fuzz: mutations behind valid checksums read or raise an InputError",
          "[unit][trace][fuzz]") {
  // Flips inside the chunks, metadata and index, then every checksum recomputed: the decoders and
  // the structural checks see the damage.
  int resealed = 0, rejected = 0;
  for (int level : {0, 3}) {
    const std::string seed = fuzz_seed_image(level);
    std::mt19937_64 rng(2000 + level);
    const size_t end = seed.size() - format::kFooterBytes;
    for (int i = 0; i < 700; ++i) {
      std::string b = seed;
      for (size_t k = 0, n = 1 + rng() % 3; k < n; ++k) {
        const size_t p = format::kHeaderBytes + rng() % (end - format::kHeaderBytes);
        b[p] = static_cast<char>(b[p] ^ (1 + rng() % 255));
      }
      if (!spin::test::reseal(b, 2)) continue;
      ++resealed;
      rejected += !read_error(b).empty();  // an InputError or a clean read; anything else fails
    }
  }
  CHECK(resealed > 1000);
  CHECK(rejected > resealed / 2);
}

TEST_CASE("trace codec fuzz: mutated selection and map segments decode or raise an InputError",
          "[unit][trace][fuzz]") {
  std::mt19937_64 rng(3000);
  const TraceData t = small_trace(32, 24);
  // One raw selection segment per (request, layer, head), and the limits of its steps.
  codec::SelectionDecoder decoder;
  codec::StepSelections out;
  int decoded = 0;
  for (size_t r = 0; r < 2; ++r) {  // the fixed-partition requests
    const RequestInfo& info = t.requests[r].info;
    const uint32_t g = t.header.algorithms[info.algorithm].partition_tokens;
    std::vector<uint32_t> limits;
    for (uint32_t s = 0; s < info.decode_steps; ++s) {
      limits.push_back(fixed_partition_count(info.prompt_tokens, s, g));
    }
    for (uint32_t h = 0; h < 2; ++h) {
      codec::SelectionEncoder enc;
      std::vector<uint8_t> seg;
      for (uint32_t s = 0; s < info.decode_steps; ++s) enc.encode(t.selection(r, 1, s, h), seg);
      const std::string clean(seg.begin(), seg.end());
      for (int i = 0; i < 3000; ++i) {
        std::string b = clean;
        mutate(b, rng, 0, b.size());
        std::vector<uint8_t> padded(b.begin(), b.end());
        padded.resize(b.size() + codec::kDecodePadding, 0);
        try {
          decoder.decode(std::span(padded).first(b.size()), 0, limits, out);
          ++decoded;
        } catch (const InputError&) {
        }
      }
    }
  }
  CHECK(decoded > 0);
  const PartitionMap& m = t.requests[2].maps[3];
  std::vector<uint8_t> seg;
  codec::encode_partition_map(m, seg);
  const std::string clean(seg.begin(), seg.end());
  for (int i = 0; i < 4000; ++i) {
    std::string b = clean;
    mutate(b, rng, 0, b.size());
    std::vector<uint8_t> padded(b.begin(), b.end());
    padded.resize(b.size() + codec::kDecodePadding, 0);
    try {
      codec::decode_partition_map(std::span(padded).first(b.size()),
                                  t.requests[2].info.prompt_tokens,
                                  t.requests[2].info.decode_steps);
    } catch (const InputError&) {
    }
  }
}

TEST_CASE(
    "trace reader fuzz: the regression corpus in tests/data/fuzz/trace/ is rejected with "
    "the expected message",
    "[unit][trace][fuzz]") {
  // File → what the error must say (tests/data/fuzz/trace/README.md).
  const std::vector<std::pair<std::string, std::string>> corpus = {
      {"head-table-sizes", "head table entry claims 50331648 stored bytes, 0 raw bytes"},
      {"head-table-sums", "the head table sums to 13 stored bytes"},
      {"index-does-not-tile", "a chunk starts at byte 583, expected byte 584"},
      // Its minimized header has a page size that is not a power of two, which the header check
      // now rejects before the index check this file first reached.
      {"index-incomplete-layer", "algorithms[0].page_tokens: must be a power of two"},
      {"index-out-of-order", "entries are not in (request, layer, kind, first step) order"},
      {"index-second-map-chunk", "unexpected partition map chunk"},
      {"index-step-gap", "selection chunk covers steps [3, +131075)"},
      {"map-growth-past-end", "growth at step 20 is past the last recorded step 5"},
      {"map-truncated", "the segment ends before a growth step"},
      {"metadata-duplicate-request-id", "request id 100 appears twice"},
      {"metadata-request-count", "does not fit in the 274 remaining bytes"},
      {"segment-count-mismatch", "decoded 16 selections, the head table says 15"},
      {"segment-count-too-large", "step 4, segment byte 1: the step claims 48 ids"},
      {"segment-trailing-bytes", "step 3, segment byte 8: 4 bytes follow the last step"},
      {"segment-varint-past-end", "id 6 of 7 is a malformed varint or runs past the segment end"},
  };
  size_t files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(spin::test::source_path("tests/data/fuzz/trace"))) {
    files += entry.path().extension() == ".spt";
  }
  CHECK(files == corpus.size());
  for (const auto& [name, message] : corpus) {
    const auto path = spin::test::source_path("tests/data/fuzz/trace/" + name + ".spt");
    const std::string m = read_error(spin::test::read_file(path));
    INFO(path.string() << ": " << m);
    CHECK(m.find(message) != std::string::npos);
  }
}
