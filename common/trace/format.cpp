#include "common/trace/format.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <tuple>

#include "common/error.h"

namespace spin::trace::format {
namespace {

std::string hex(std::span<const uint8_t> bytes) {
  std::string s;
  for (uint8_t b : bytes) s += fmt::format("{}{:02x}", s.empty() ? "" : " ", b);
  return s;
}

bool has_magic(std::span<const uint8_t> bytes, const std::array<uint8_t, 8>& magic) {
  return bytes.size() >= magic.size() && std::equal(magic.begin(), magic.end(), bytes.begin());
}

}  // namespace

uint64_t checksum(std::span<const uint8_t> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

void ByteWriter::f64(double v) { u64(std::bit_cast<uint64_t>(v)); }

void ByteWriter::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  out_.insert(out_.end(), s.begin(), s.end());
}

double ByteReader::f64(std::string_view what) { return std::bit_cast<double>(u64(what)); }

std::string ByteReader::str(std::string_view what) {
  const uint32_t n = u32(what);
  if (n > remaining()) {
    fail(fmt::format("{} claims {} bytes but only {} remain in the section", what, n, remaining()));
  }
  std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
  pos_ += n;
  return s;
}

void ByteReader::skip(size_t n, std::string_view what) {
  if (remaining() < n) {
    fail(fmt::format("truncated: expected {} ({} bytes), {} bytes remain", what, n, remaining()));
  }
  pos_ += n;
}

void ByteReader::fail(std::string_view what) const {
  throw InputError(fmt::format("{}: {} at byte {}: {}", file_, section_, offset(), what));
}

uint64_t ByteReader::get(size_t n, std::string_view what) {
  if (remaining() < n) {
    fail(fmt::format("truncated: expected {} ({} bytes), {} bytes remain", what, n, remaining()));
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{bytes_[pos_ + i]} << (8 * i);
  pos_ += n;
  return v;
}

std::array<uint8_t, kHeaderBytes> encode_header(const FileHeader& h) {
  std::vector<uint8_t> v;
  ByteWriter w(v);
  w.bytes(kHeaderMagic);
  w.u16(h.version_major);
  w.u16(h.version_minor);
  w.u32(0);
  w.u64(checksum(v));
  std::array<uint8_t, kHeaderBytes> out;
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

FileHeader decode_header(std::span<const uint8_t> bytes, std::string_view file,
                         uint64_t file_bytes) {
  if (file_bytes == 0) {
    throw InputError(
        fmt::format("{}: empty file (truncated?): a spin trace starts with the magic "
                    "[{}] at byte 0",
                    file, hex(kHeaderMagic)));
  }
  if (bytes.size() < kHeaderMagic.size() &&
      std::equal(bytes.begin(), bytes.end(), kHeaderMagic.begin())) {
    throw InputError(
        fmt::format("{}: truncated file: {} bytes, ending inside the 8-byte magic at byte 0", file,
                    file_bytes));
  }
  if (!has_magic(bytes, kHeaderMagic)) {
    throw InputError(fmt::format(
        "{}: not a spin trace: bytes 0..7 are [{}], expected the magic [{}] ({} bytes in the file)",
        file, hex(bytes.first(std::min<size_t>(bytes.size(), 8))), hex(kHeaderMagic), file_bytes));
  }
  if (bytes.size() < kHeaderBytes) {
    throw InputError(fmt::format(
        "{}: truncated file: {} bytes, but the file header alone is {} bytes (bytes 0..{})", file,
        file_bytes, kHeaderBytes, kHeaderBytes - 1));
  }
  ByteReader r(bytes.first(kHeaderBytes), file, 0, "file header");
  r.skip(kHeaderMagic.size(), "magic");
  FileHeader h;
  h.version_major = r.u16("version_major");
  h.version_minor = r.u16("version_minor");
  const uint32_t reserved = r.u32("reserved");
  const uint64_t sum = r.u64("checksum");
  if (sum != checksum(bytes.first(16))) {
    throw InputError(fmt::format(
        "{}: file header (bytes 0..23) is corrupted: checksum mismatch at byte 16 (stored {:016x}, "
        "computed {:016x} over bytes 0..15)",
        file, sum, checksum(bytes.first(16))));
  }
  if (h.version_major != kFormatMajor) {
    throw InputError(fmt::format(
        "{}: unsupported trace format version {}.{} (byte 8): this spin reads version {}.x", file,
        h.version_major, h.version_minor, kFormatMajor));
  }
  if (reserved != 0) {
    throw InputError(fmt::format("{}: file header: the reserved field at byte 12 must be 0, got {}",
                                 file, reserved));
  }
  return h;
}

std::array<uint8_t, kFooterBytes> encode_footer(const Footer& f) {
  std::vector<uint8_t> v;
  ByteWriter w(v);
  for (uint64_t x : {f.metadata_offset, f.metadata_bytes, f.metadata_checksum, f.index_offset,
                     f.index_bytes, f.index_checksum}) {
    w.u64(x);
  }
  w.u64(checksum(v));
  w.bytes(kFooterMagic);
  std::array<uint8_t, kFooterBytes> out;
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

Footer decode_footer(std::span<const uint8_t> bytes, std::string_view file, uint64_t file_bytes) {
  const uint64_t at = file_bytes - kFooterBytes;
  if (!has_magic(bytes.subspan(kFooterBytes - 8), kFooterMagic)) {
    throw InputError(fmt::format(
        "{}: truncated or unfinished trace: the file is {} bytes and its last 8 bytes (at byte "
        "{}) are [{}], not the footer magic [{}]; a complete trace ends with a {}-byte footer",
        file, file_bytes, file_bytes - 8, hex(bytes.subspan(kFooterBytes - 8)), hex(kFooterMagic),
        kFooterBytes));
  }
  ByteReader r(bytes, file, at, "footer");
  Footer f;
  f.metadata_offset = r.u64("metadata_offset");
  f.metadata_bytes = r.u64("metadata_bytes");
  f.metadata_checksum = r.u64("metadata_checksum");
  f.index_offset = r.u64("index_offset");
  f.index_bytes = r.u64("index_bytes");
  f.index_checksum = r.u64("index_checksum");
  const uint64_t sum = r.u64("checksum");
  if (sum != checksum(bytes.first(48))) {
    throw InputError(fmt::format(
        "{}: footer (bytes {}..{}) is corrupted: checksum mismatch at byte {} (stored {:016x}, "
        "computed {:016x})",
        file, at, file_bytes - 1, at + 48, sum, checksum(bytes.first(48))));
  }
  // The sections must tile the file: chunks, then metadata, then index, then the footer.
  const bool tiles = f.metadata_offset >= kHeaderBytes && f.metadata_offset <= at &&
                     f.metadata_bytes <= at - f.metadata_offset &&
                     f.index_offset == f.metadata_offset + f.metadata_bytes &&
                     f.index_bytes == at - f.index_offset;
  if (!tiles) {
    throw InputError(fmt::format(
        "{}: footer at byte {}: sections do not tile the file: metadata [{}, +{}), index [{}, "
        "+{}), expected metadata to start at or after byte {} and the index to end at the footer "
        "(byte {})",
        file, at, f.metadata_offset, f.metadata_bytes, f.index_offset, f.index_bytes, kHeaderBytes,
        at));
  }
  return f;
}

bool index_order(const IndexEntry& a, const IndexEntry& b) {
  return std::tuple(a.request, a.layer, a.kind, a.first_step) <
         std::tuple(b.request, b.layer, b.kind, b.first_step);
}

std::vector<uint8_t> encode_index(std::span<const IndexEntry> entries) {
  std::vector<uint8_t> v;
  v.reserve(8 + entries.size() * kIndexEntryBytes);
  ByteWriter w(v);
  w.u64(entries.size());
  for (const IndexEntry& e : entries) {
    w.u32(static_cast<uint32_t>(e.kind));
    w.u32(e.request);
    w.u32(e.layer);
    w.u32(e.first_step);
    w.u32(e.step_count);
    w.u32(0);
    w.u64(e.offset);
    w.u64(e.stored_bytes);
    w.u64(e.raw_bytes);
    w.u64(e.count);
    w.u64(e.checksum);
  }
  return v;
}

std::vector<IndexEntry> decode_index(std::span<const uint8_t> bytes, std::string_view file,
                                     uint64_t file_offset) {
  ByteReader r(bytes, file, file_offset, "chunk index");
  const uint64_t n = r.u64("entry count");
  if (n != r.remaining() / kIndexEntryBytes || r.remaining() % kIndexEntryBytes != 0) {
    r.fail(
        fmt::format("the index claims {} entries but holds {} bytes after the count ({} per "
                    "entry expected)",
                    n, r.remaining(), kIndexEntryBytes));
  }
  std::vector<IndexEntry> entries(n);
  for (size_t i = 0; i < entries.size(); ++i) {
    IndexEntry& e = entries[i];
    const uint64_t at = r.offset();
    const auto bad = [&](std::string_view what) {
      throw InputError(fmt::format("{}: chunk index entry {} (byte {}): {}", file, i, at, what));
    };
    const uint32_t kind = r.u32("kind");
    if (kind > static_cast<uint32_t>(ChunkKind::kPartitionMap)) {
      bad(fmt::format("kind {} is unknown (0 = selections, 1 = partition map)", kind));
    }
    e.kind = static_cast<ChunkKind>(kind);
    e.request = r.u32("request");
    e.layer = r.u32("layer");
    e.first_step = r.u32("first_step");
    e.step_count = r.u32("step_count");
    if (r.u32("reserved") != 0) bad("the reserved field (entry bytes 20..23) must be 0");
    e.offset = r.u64("offset");
    e.stored_bytes = r.u64("stored_bytes");
    e.raw_bytes = r.u64("raw_bytes");
    e.count = r.u64("count");
    e.checksum = r.u64("checksum");
  }
  return entries;
}

void encode_head_table(std::span<const HeadEntry> heads, std::vector<uint8_t>& out) {
  ByteWriter w(out);
  for (const HeadEntry& h : heads) {
    w.u32(h.stored_bytes);
    w.u32(h.raw_bytes);
    w.u64(h.count);
    w.u64(h.checksum);
  }
}

std::vector<HeadEntry> decode_head_table(std::span<const uint8_t> bytes, std::string_view file,
                                         uint64_t file_offset) {
  ByteReader r(bytes, file, file_offset, "chunk head table");
  std::vector<HeadEntry> heads(bytes.size() / kHeadEntryBytes);
  for (HeadEntry& h : heads) {
    h.stored_bytes = r.u32("stored_bytes");
    h.raw_bytes = r.u32("raw_bytes");
    h.count = r.u64("count");
    h.checksum = r.u64("checksum");
  }
  return heads;
}

std::vector<uint8_t> encode_metadata(const TraceHeader& h, std::span<const RequestInfo> requests) {
  std::vector<uint8_t> v;
  ByteWriter w(v);
  w.str(h.model.name);
  for (uint32_t x : {h.model.layers, h.model.query_heads, h.model.kv_heads, h.model.head_dim,
                     h.model.dtype_bytes}) {
    w.u32(x);
  }
  w.u32(static_cast<uint32_t>(h.algorithms.size()));
  for (const AlgorithmInfo& a : h.algorithms) {
    w.str(a.name);
    w.u32(static_cast<uint32_t>(a.partition_kind));
    w.u32(a.partition_tokens);
    w.u32(a.page_tokens);
    w.f64(a.budget_ratio);
    w.u32(a.budget_tokens);
    w.u32(a.sink_tokens);
    w.u32(a.local_window_tokens);
    w.u32(a.reindex_interval_tokens);
  }
  w.str(h.source);
  w.u64(h.seed);
  w.u64(requests.size());
  for (const RequestInfo& r : requests) {
    w.u64(r.id);
    w.u64(r.arrival_us);
    w.u32(r.prompt_tokens);
    w.u32(r.output_tokens);
    w.u32(r.decode_steps);
    w.u32(r.algorithm);
  }
  return v;
}

std::pair<TraceHeader, std::vector<RequestInfo>> decode_metadata(std::span<const uint8_t> bytes,
                                                                 std::string_view file,
                                                                 uint64_t file_offset,
                                                                 const FileHeader& version) {
  ByteReader r(bytes, file, file_offset, "metadata section");
  TraceHeader h;
  h.version_major = version.version_major;
  h.version_minor = version.version_minor;
  h.model.name = r.str("model name");
  h.model.layers = r.u32("model.layers");
  h.model.query_heads = r.u32("model.query_heads");
  h.model.kv_heads = r.u32("model.kv_heads");
  h.model.head_dim = r.u32("model.head_dim");
  h.model.dtype_bytes = r.u32("model.dtype_bytes");
  constexpr size_t kMinAlgorithmBytes = 4 + 4 * 3 + 8 + 4 * 4;
  const uint32_t algorithms = r.u32("algorithm count");
  if (algorithms > r.remaining() / kMinAlgorithmBytes) {
    r.fail(fmt::format("algorithm count {} does not fit in the {} remaining bytes", algorithms,
                       r.remaining()));
  }
  h.algorithms.resize(algorithms);
  for (AlgorithmInfo& a : h.algorithms) {
    a.name = r.str("algorithm name");
    const uint64_t kind_at = r.offset();
    const uint32_t kind = r.u32("partition_kind");
    if (kind > static_cast<uint32_t>(PartitionKind::kVariable)) {
      throw InputError(fmt::format(
          "{}: metadata section at byte {}: partition_kind {} is unknown (0 = fixed, 1 = "
          "variable)",
          file, kind_at, kind));
    }
    a.partition_kind = static_cast<PartitionKind>(kind);
    a.partition_tokens = r.u32("partition_tokens");
    a.page_tokens = r.u32("page_tokens");
    a.budget_ratio = r.f64("budget_ratio");
    a.budget_tokens = r.u32("budget_tokens");
    a.sink_tokens = r.u32("sink_tokens");
    a.local_window_tokens = r.u32("local_window_tokens");
    a.reindex_interval_tokens = r.u32("reindex_interval_tokens");
  }
  h.source = r.str("source");
  h.seed = r.u64("seed");
  constexpr size_t kRequestBytes = 32;
  const uint64_t requests_at = r.offset();
  const uint64_t n = r.u64("request count");
  if (n > r.remaining() / kRequestBytes) {
    r.fail(fmt::format("request count {} does not fit in the {} remaining bytes ({} per request)",
                       n, r.remaining(), kRequestBytes));
  }
  std::vector<RequestInfo> requests(n);
  for (RequestInfo& q : requests) {
    q.id = r.u64("request id");
    q.arrival_us = r.u64("arrival_us");
    q.prompt_tokens = r.u32("prompt_tokens");
    q.output_tokens = r.u32("output_tokens");
    q.decode_steps = r.u32("decode_steps");
    q.algorithm = r.u32("algorithm");
  }
  if (r.remaining() != 0 && version.version_minor <= kFormatMinor) {
    r.fail(fmt::format("{} unexpected bytes after the request table", r.remaining()));
  }
  try {
    validate_header(h);
  } catch (const InputError& e) {
    throw InputError(
        fmt::format("{}: metadata section at byte {}: {}", file, file_offset, e.what()));
  }
  std::vector<uint64_t> ids;
  ids.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const uint64_t at = requests_at + 8 + i * kRequestBytes;
    try {
      validate_request(h, requests[i]);
    } catch (const InputError& e) {
      throw InputError(fmt::format("{}: metadata section, request record {} at byte {}: {}", file,
                                   i, at, e.what()));
    }
    ids.push_back(requests[i].id);
  }
  std::sort(ids.begin(), ids.end());
  if (const auto dup = std::adjacent_find(ids.begin(), ids.end()); dup != ids.end()) {
    throw InputError(fmt::format("{}: metadata section at byte {}: request id {} appears twice",
                                 file, requests_at, *dup));
  }
  return {std::move(h), std::move(requests)};
}

}  // namespace spin::trace::format
