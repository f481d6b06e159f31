#include "tests/unit/trace/trace_fixtures.h"

#include <algorithm>
#include <random>

#include "common/error.h"
#include "common/trace/format.h"
#include "common/trace/reader.h"
#include "tests/support.h"

namespace spin::test {

using trace::AlgorithmInfo;
using trace::PartitionKind;
using trace::PartitionMap;

trace::TraceHeader small_header() {
  trace::TraceHeader h;
  h.model = {"tiny", 2, 4, 2, 16, 2};
  h.algorithms.push_back({"fixed8", PartitionKind::kFixed, 8, 8, 0.1, 0, 4, 16, 0});
  h.algorithms.push_back({"token", PartitionKind::kFixed, 1, 16, 0, 12, 0, 0, 0});
  h.algorithms.push_back({"clusters", PartitionKind::kVariable, 6, 8, 0.2, 0, 0, 8, 7});
  h.source = "tests/unit/trace/trace_fixtures.cpp";
  h.seed = 7;
  return h;
}

trace::TraceData small_trace(uint64_t seed, uint32_t steps) {
  std::mt19937_64 rng(seed);
  const auto below = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  trace::TraceData t;
  t.header = small_header();
  const uint32_t layers = t.header.model.layers, heads = t.header.model.kv_heads;
  for (uint32_t a = 0; a < 3; ++a) {
    trace::RequestData r;
    r.info = {100 + a * 7, 1000 * a, 60 + 13 * a, steps + 3, steps, a};
    const bool variable = a == 2;
    for (uint32_t k = 0; variable && k < layers * heads; ++k) {
      std::vector<uint32_t> lengths;
      for (uint32_t used = 0; used + 16 <= r.info.prompt_tokens;) {
        lengths.push_back(1 + below(8));
        used += lengths.back();
      }
      PartitionMap m(lengths, r.info.prompt_tokens);
      for (uint32_t step : {4u, 11u}) {
        if (step < steps) m.grow(step, std::vector<uint32_t>{1 + below(3), 1 + below(3)});
      }
      r.maps.push_back(m);
    }
    for (uint32_t layer = 0; layer < layers; ++layer) {
      std::vector<std::vector<uint32_t>> previous(heads);
      for (uint32_t step = 0; step < steps; ++step) {
        for (uint32_t head = 0; head < heads; ++head) {
          const uint32_t n =
              variable ? r.maps[layer * heads + head].clusters_at(step)
                       : trace::fixed_partition_count(r.info.prompt_tokens, step,
                                                      t.header.algorithms[a].partition_tokens);
          std::vector<uint32_t> sel;
          for (uint32_t id : previous[head]) {
            if (below(10) < 7) sel.push_back(id);
          }
          const uint32_t want = std::min<uint32_t>(n, 3 + below(6));
          for (uint32_t tries = 0; sel.size() < want && tries < 50; ++tries)
            sel.push_back(below(n));
          if (n > 0) sel.push_back(n - 1);
          std::sort(sel.begin(), sel.end());
          sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
          if (step % 7 == 5) sel.clear();  // an empty selection now and then
          r.append(sel);
          previous[head] = sel;
        }
      }
    }
    t.requests.push_back(std::move(r));
  }
  return t;
}

std::string small_trace_bytes(uint64_t seed) {
  TempDir dir;
  trace::write_trace(small_trace(seed), dir / "t.spt", small_chunks());
  return read_file(dir / "t.spt");
}

std::string read_error(const std::string& bytes) {
  TempDir dir;
  write_file(dir / "t.spt", bytes);
  try {
    trace::TraceReader(dir / "t.spt").verify();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

bool reseal(std::string& bytes, uint32_t kv_heads) {
  namespace f = trace::format;
  std::vector<uint8_t> b(bytes.begin(), bytes.end());
  const uint64_t size = b.size();
  if (size < f::kMinFileBytes) return false;
  const auto u64_at = [&](uint64_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{b[at + i]} << (8 * i);
    return v;
  };
  const uint64_t foot = size - f::kFooterBytes;
  f::Footer footer{u64_at(foot), u64_at(foot + 8), 0, u64_at(foot + 24), u64_at(foot + 32), 0};
  if (footer.metadata_offset > foot || footer.metadata_bytes > foot - footer.metadata_offset ||
      footer.index_offset > foot || footer.index_bytes > foot - footer.index_offset) {
    return false;
  }
  std::vector<f::IndexEntry> entries;
  try {
    entries = f::decode_index(std::span(b).subspan(footer.index_offset, footer.index_bytes), "",
                              footer.index_offset);
  } catch (const InputError&) {
    return false;
  }
  const uint64_t table_bytes = uint64_t{kv_heads} * f::kHeadEntryBytes;
  for (f::IndexEntry& e : entries) {
    if (e.offset > size || table_bytes > size - e.offset) continue;
    const auto table_span = std::span(b).subspan(e.offset, table_bytes);
    std::vector<f::HeadEntry> table = f::decode_head_table(table_span, "", e.offset);
    uint64_t at = e.offset + table_bytes;
    for (f::HeadEntry& h : table) {
      if (at > size || h.stored_bytes > size - at) break;
      h.checksum = f::checksum(std::span(b).subspan(at, h.stored_bytes));
      at += h.stored_bytes;
    }
    std::vector<uint8_t> encoded;
    f::encode_head_table(table, encoded);
    std::copy(encoded.begin(), encoded.end(), table_span.begin());
    e.checksum = f::checksum(encoded);
  }
  const std::vector<uint8_t> index = f::encode_index(entries);
  if (index.size() != footer.index_bytes) return false;
  std::copy(index.begin(), index.end(),
            b.begin() + static_cast<std::ptrdiff_t>(footer.index_offset));
  footer.index_checksum = f::checksum(index);
  footer.metadata_checksum =
      f::checksum(std::span(b).subspan(footer.metadata_offset, footer.metadata_bytes));
  const auto encoded = f::encode_footer(footer);
  std::copy(encoded.begin(), encoded.end(), b.begin() + static_cast<std::ptrdiff_t>(foot));
  const uint64_t header_sum = f::checksum(std::span(b).first(16));
  for (int i = 0; i < 8; ++i) b[16 + i] = static_cast<uint8_t>(header_sum >> (8 * i));
  bytes.assign(b.begin(), b.end());
  return true;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace spin::test
