// TraceReader: opens a .spt trace and streams its selections (traces/README.md).
//
// Opening reads the header, the footer, the metadata and the chunk index (O(requests + chunks),
// no chunk is touched) and checks their checksums and their consistency: the index must cover
// every (request, layer) with selection chunks over steps [0, decode_steps) and, for variable
// partitions, one map chunk; the chunks must tile the bytes between the header and the metadata.
// A problem is an InputError naming the file, the byte offset and what was expected.
//
// LayerCursor walks the steps of one (request, layer) for a chosen subset of KV heads (stream
// sampling): it reads each chunk's head table and only the chosen heads' segments, verifies their
// checksums and decodes them, validating every id against the partitions that exist at its step.
// Corrupted data is an InputError naming the file, the chunk's byte offset, the request id, layer,
// head and step. Decoding is O(stored bytes + ids) with no allocation per step; memory is one
// decoded chunk per chosen head.
//
// A reader is immutable after construction; cursors from one reader may run on different threads
// (reads use pread). The reader must outlive its cursors. A LayerCursor is a StepStream
// (source.h); FileSource (file_source.h) presents a whole file as a TraceSource.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/trace/codec.h"
#include "common/trace/format.h"
#include "common/trace/source.h"
#include "common/trace/trace.h"

namespace spin::trace {

// Counts taken from the metadata and the index, without decoding any chunk.
struct TraceInfo {
  uint64_t file_bytes = 0;
  uint64_t requests = 0;
  uint64_t streams = 0;        // requests × layers × kv_heads
  uint64_t request_steps = 0;  // sum of decode_steps
  uint64_t stream_steps = 0;   // request_steps × layers × kv_heads
  uint64_t selections = 0;     // selected partitions over all stream steps
  uint64_t clusters = 0;       // variable partitions, final maps, over all streams
  uint64_t selection_chunks = 0;
  uint64_t map_chunks = 0;
  uint64_t chunk_bytes = 0;
  uint64_t metadata_bytes = 0;
  uint64_t index_bytes = 0;
  double bytes_per_selection() const {
    return selections == 0 ? 0.0
                           : static_cast<double>(file_bytes) / static_cast<double>(selections);
  }
};

class TraceReader;

class LayerCursor final : public StepStream {
 public:
  LayerCursor(LayerCursor&&) noexcept;
  LayerCursor& operator=(LayerCursor&&) noexcept;
  ~LayerCursor() override;

  // Advances to the next decode step; false after the last one. O(ids of the step) amortized.
  bool next() override;
  // The current decode step (valid after next() returned true).
  uint32_t step() const override { return step_; }
  // The KV heads this cursor decodes, in the order given to open_layer.
  std::span<const uint32_t> heads() const { return heads_; }
  // The partitions `head` selected at the current step, strictly ascending. O(1).
  std::span<const uint32_t> selection(uint32_t head) const override;
  // How many partitions exist for `head` at the current step (every selected id is below it).
  uint32_t partition_count(uint32_t head) const;
  // Variable partitions: the map in force at the current step, [partition_count + 1] token
  // offsets in storage order (DESIGN.md §4.1). Fixed partitions: empty.
  std::span<const uint32_t> partition_offsets(uint32_t head) const override;
  // Variable partitions: the stream's whole map (all growth). Fixed partitions: nullptr.
  const PartitionMap* partition_map(uint32_t head) const;

 private:
  friend class TraceReader;
  struct Zstd;
  LayerCursor(const TraceReader& reader, size_t request, uint32_t layer,
              std::span<const uint32_t> heads);
  size_t slot(uint32_t head, std::string_view call) const;
  void load_chunk(const format::IndexEntry& e);
  // Reads the head table of `e` and the byte range of the chosen heads' segments into buffer_;
  // returns the head table and sets segment_begin_ (offsets within buffer_).
  std::vector<format::HeadEntry> read_chunk(const format::IndexEntry& e, uint64_t max_raw_bytes,
                                            uint64_t max_count);
  // The chosen head's segment, verified and decompressed; followed by kDecodePadding bytes.
  std::span<const uint8_t> segment(const format::IndexEntry& e,
                                   std::span<const format::HeadEntry> table, uint32_t head);
  [[noreturn]] void fail(const format::IndexEntry& e, int64_t head, std::string_view what) const;

  const TraceReader* reader_;
  size_t request_;
  uint32_t layer_;
  bool variable_;
  std::vector<uint32_t> heads_;
  std::vector<int32_t> slot_of_head_;  // [kv_heads], -1 where not chosen
  std::span<const format::IndexEntry> chunks_;
  size_t next_chunk_ = 0;
  uint32_t chunk_steps_ = 0;
  uint32_t step_in_chunk_ = 0;
  uint32_t step_ = 0;
  bool positioned_ = false;
  std::vector<PartitionMap> maps_;              // [slot], variable only
  std::vector<std::vector<uint32_t>> limits_;   // [slot][step in chunk]
  std::vector<codec::StepSelections> decoded_;  // [slot]
  codec::SelectionDecoder decoder_;
  std::vector<uint8_t> buffer_;          // stored bytes read from the file, plus padding
  uint64_t buffer_file_offset_ = 0;      // file offset of buffer_[0]
  std::vector<uint64_t> segment_begin_;  // [kv_heads + 1] within buffer_ (chosen range only)
  std::vector<uint8_t> raw_;             // a decompressed segment, plus padding
  std::unique_ptr<Zstd> zstd_;
};

class TraceReader {
 public:
  explicit TraceReader(const std::filesystem::path& path);
  ~TraceReader();
  TraceReader(const TraceReader&) = delete;
  TraceReader& operator=(const TraceReader&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const TraceHeader& header() const { return header_; }
  std::span<const RequestInfo> requests() const { return requests_; }
  const AlgorithmInfo& algorithm_of(size_t request) const {
    return header_.algorithms[requests_[request].algorithm];
  }
  TraceInfo info() const;
  // Decodes every chunk of every stream, so that a corrupted chunk anywhere is reported now.
  // O(file size).
  void verify() const;

  // A cursor over the steps of (requests()[request], layer) for `heads` (distinct KV heads; empty
  // = all heads). Variable partitions: reads the layer's map chunk now. Throws InputError for an
  // out-of-range request, layer or head.
  LayerCursor open_layer(size_t request, uint32_t layer,
                         std::span<const uint32_t> heads = {}) const;

 private:
  friend class LayerCursor;
  void validate_index(const format::Footer& footer);
  // Reads exactly out.size() bytes at `offset`.
  void read_at(uint64_t offset, std::span<uint8_t> out) const;

  std::filesystem::path path_;
  std::string name_;  // path_ as a string, for messages
  int fd_ = -1;
  uint64_t file_bytes_ = 0;
  format::Footer footer_;
  TraceHeader header_;
  std::vector<RequestInfo> requests_;
  std::vector<format::IndexEntry> entries_;  // in index order
  std::vector<uint64_t> layer_begin_;        // [requests × layers + 1] into entries_
};

}  // namespace spin::trace
