// The byte layout of a .spt trace file (traces/README.md, "File layout"): internal to the
// writer and the reader, and to tests that craft files.
//
//   file header (24 bytes) | chunks ... | metadata section | chunk index | footer (64 bytes)
//
// Every integer is little-endian and assembled byte by byte (no struct memcpy), so the layout
// does not depend on the host. Every byte of a valid file is covered by a checksum: the header
// and footer carry their own, the footer covers the metadata and the index, an index entry covers
// its chunk's head table, and the head table covers each head's segment. Checksums are XXH3-64.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/trace/trace.h"

namespace spin::trace::format {

inline constexpr std::array<uint8_t, 8> kHeaderMagic = {0x89, 'S',  'P',  'T',
                                                        '\r', '\n', 0x1a, '\n'};
inline constexpr std::array<uint8_t, 8> kFooterMagic = {'S', 'P', 'T', 'E', 'N', 'D', 0x1a, '\n'};
inline constexpr size_t kHeaderBytes = 24;
inline constexpr size_t kFooterBytes = 64;
inline constexpr size_t kIndexEntryBytes = 64;
inline constexpr size_t kHeadEntryBytes = 24;
inline constexpr size_t kMinFileBytes = kHeaderBytes + 8 + kFooterBytes;  // empty index

uint64_t checksum(std::span<const uint8_t> bytes);  // XXH3-64, seed 0

// Appends little-endian values to a byte vector.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f64(double v);
  void str(std::string_view s);  // u32 length, then the bytes
  void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>& out_;
};

// Reads little-endian values from bytes that sit at `file_offset` in `file`; a read past the end
// throws InputError "FILE: <section> at byte N: truncated: expected <what>".
class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, std::string_view file, uint64_t file_offset,
             std::string_view section)
      : bytes_(bytes), file_(file), base_(file_offset), section_(section) {}
  uint8_t u8(std::string_view what) { return static_cast<uint8_t>(get(1, what)); }
  uint16_t u16(std::string_view what) { return static_cast<uint16_t>(get(2, what)); }
  uint32_t u32(std::string_view what) { return static_cast<uint32_t>(get(4, what)); }
  uint64_t u64(std::string_view what) { return get(8, what); }
  double f64(std::string_view what);
  std::string str(std::string_view what);
  void skip(size_t n, std::string_view what);
  size_t remaining() const { return bytes_.size() - pos_; }
  uint64_t offset() const { return base_ + pos_; }  // file offset of the next byte
  // Throws InputError "FILE: <section> at byte <offset()>: <what>".
  [[noreturn]] void fail(std::string_view what) const;

 private:
  uint64_t get(size_t n, std::string_view what);
  std::span<const uint8_t> bytes_;
  std::string_view file_;
  uint64_t base_;
  std::string_view section_;
  size_t pos_ = 0;
};

struct FileHeader {
  uint16_t version_major = kFormatMajor;
  uint16_t version_minor = kFormatMinor;
};
std::array<uint8_t, kHeaderBytes> encode_header(const FileHeader& h);
// Checks magic, checksum and major version; `file_bytes` is the file's size, for messages.
FileHeader decode_header(std::span<const uint8_t> bytes, std::string_view file,
                         uint64_t file_bytes);

struct Footer {
  uint64_t metadata_offset = 0, metadata_bytes = 0, metadata_checksum = 0;
  uint64_t index_offset = 0, index_bytes = 0, index_checksum = 0;
};
std::array<uint8_t, kFooterBytes> encode_footer(const Footer& f);
// `bytes` are the last kFooterBytes of a file of `file_bytes` bytes. Checks magic, checksum and
// that the sections tile [kHeaderBytes, file_bytes - kFooterBytes) in order.
Footer decode_footer(std::span<const uint8_t> bytes, std::string_view file, uint64_t file_bytes);

enum class ChunkKind : uint32_t { kSelections = 0, kPartitionMap = 1 };

// One entry of the chunk index: where a chunk is and what it holds.
struct IndexEntry {
  ChunkKind kind = ChunkKind::kSelections;
  uint32_t request = 0;  // index into the request table
  uint32_t layer = 0;
  uint32_t first_step = 0;
  uint32_t step_count = 0;
  uint64_t offset = 0;        // file offset of the chunk (its head table)
  uint64_t stored_bytes = 0;  // head table + segments
  uint64_t raw_bytes = 0;     // sum of the heads' uncompressed segment sizes
  uint64_t count = 0;         // selections (selection chunk) or clusters (map chunk)
  uint64_t checksum = 0;      // of the head table
};
// Sort order of the index: by request, layer, kind (selections first), first step.
bool index_order(const IndexEntry& a, const IndexEntry& b);

// One head's entry in a chunk's head table. A segment is stored raw when stored == raw bytes and
// as one zstd frame when stored < raw.
struct HeadEntry {
  uint32_t stored_bytes = 0;
  uint32_t raw_bytes = 0;
  uint64_t count = 0;     // selections or clusters of this head in the chunk
  uint64_t checksum = 0;  // of the stored segment
};

std::vector<uint8_t> encode_index(std::span<const IndexEntry> entries);
// Parses the index section (structure only; the reader checks entries against the metadata).
std::vector<IndexEntry> decode_index(std::span<const uint8_t> bytes, std::string_view file,
                                     uint64_t file_offset);

void encode_head_table(std::span<const HeadEntry> heads, std::vector<uint8_t>& out);
std::vector<HeadEntry> decode_head_table(std::span<const uint8_t> bytes, std::string_view file,
                                         uint64_t file_offset);

std::vector<uint8_t> encode_metadata(const TraceHeader& header,
                                     std::span<const RequestInfo> requests);
// Parses and validates the metadata section. A file of a newer minor version may carry fields
// after the ones this reader knows; they are skipped.
std::pair<TraceHeader, std::vector<RequestInfo>> decode_metadata(std::span<const uint8_t> bytes,
                                                                 std::string_view file,
                                                                 uint64_t file_offset,
                                                                 const FileHeader& version);

}  // namespace spin::trace::format
