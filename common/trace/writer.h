// TraceWriter: streams a trace into a .spt file (traces/README.md).
//
// Call order: TraceWriter(path, header) → per request { begin_request → [set_partition_map for
// every (layer, head) of a variable-partition request] → add_step / grow_partition_map ... →
// end_request } → finish(). Within a request, each layer's steps are added in order 0, 1, ...,
// decode_steps - 1; layers may interleave in any way (step-major or layer-major). Every call
// validates its input and throws InputError naming the request id, layer, head and step (and,
// for a bad selection, a SelectionError that also carries the head and position).
//
// The file is written to PATH.partial and renamed to PATH by finish(), so nothing half-written is
// ever at PATH; a writer destroyed before finish() removes the partial file (PartialFile, so a
// link's target is written, and a device or pipe in place). Memory: per layer of
// the open request, one chunk of encoded steps per head (chunks close at
// WriterOptions::chunk_selections), plus the request's partition maps. Cost: O(ids) per step plus
// zstd compression of each closed chunk.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <span>
#include <unordered_set>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/trace/trace.h"

namespace spin::trace {

namespace format {
enum class ChunkKind : uint32_t;  // format.h
}

struct WriterOptions {
  // A layer's open chunk closes once its heads hold this many selections together (a chunk has at
  // least one step). Larger chunks compress slightly better; smaller ones let readers seek finer.
  uint64_t chunk_selections = 64 * 1024;
  int zstd_level = 3;  // 0 stores segments uncompressed
};

// Throws InputError naming the command-line option (--chunk-selections, --zstd-level) whose value
// the writer cannot use. The writer checks them too; commands check first, before any input is
// read, so that the error is not taken for one of the input.
void check_writer_options(const WriterOptions& options);

// A selection rejected by add_step: the message says why; head and position locate the id, so an
// importer can name the input line it came from.
class SelectionError : public InputError {
 public:
  SelectionError(const std::string& message, uint32_t head, size_t position)
      : InputError(message), head(head), position(position) {}
  uint32_t head;
  size_t position;
};

class TraceWriter {
 public:
  // Validates the header and creates PATH.partial. Throws InputError if either fails.
  TraceWriter(std::filesystem::path path, TraceHeader header, WriterOptions options = {});
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  const TraceHeader& header() const { return header_; }

  // Opens a request; its id must be new and its fields valid (validate_request).
  void begin_request(const RequestInfo& request);
  // The initial map of stream (layer, head), cluster lengths in storage order. Variable-partition
  // requests only; once per stream, before the layer's first step.
  void set_partition_map(uint32_t layer, uint32_t head, std::span<const uint32_t> cluster_tokens);
  // Clusters appended by a re-index that takes effect at `step`: called after step - 1 and before
  // `step` of that layer were added (see PartitionMap::grow for the rules).
  void grow_partition_map(uint32_t step, uint32_t layer, uint32_t head,
                          std::span<const uint32_t> new_cluster_tokens);
  // The selections of every KV head of `layer` at `step`, as CSR: head h selected
  // ids[head_offsets[h], head_offsets[h + 1]) (head_offsets has kv_heads + 1 entries). Each
  // selection must be strictly ascending and within the partitions existing at `step`.
  void add_step(uint32_t layer, uint32_t step, std::span<const uint32_t> head_offsets,
                std::span<const uint32_t> ids);
  // Closes the request: every layer must have exactly decode_steps steps and, for variable
  // partitions, every stream a map.
  void end_request();
  // Writes metadata, index and footer and renames the file into place; no request may be open.
  void finish();

 private:
  struct Layer;
  struct Head;
  [[noreturn]] void fail(std::string_view what) const;
  [[noreturn]] void fail(uint32_t layer, std::string_view what) const;
  void require_open(std::string_view call) const;
  void check_stream(std::string_view call, uint32_t layer, uint32_t head) const;
  void flush_layer(uint32_t layer);
  void write_chunk(format::ChunkKind kind, uint32_t layer, uint32_t first_step, uint32_t step_count,
                   std::span<const std::vector<uint8_t>> segments,
                   std::span<const uint64_t> counts);
  void write_bytes(std::span<const uint8_t> bytes);

  TraceHeader header_;
  WriterOptions options_;
  std::unique_ptr<PartialFile> file_;  // null once finished
  uint64_t offset_ = 0;
  std::vector<RequestInfo> requests_;
  std::unordered_set<uint64_t> ids_;
  struct Index;
  std::unique_ptr<Index> index_;

  // The open request.
  bool open_ = false;
  RequestInfo request_;
  bool variable_ = false;
  std::vector<Layer> layers_;
  struct Compressor;
  std::unique_ptr<Compressor> compressor_;
};

}  // namespace spin::trace
