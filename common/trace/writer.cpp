#include "common/trace/writer.h"

#include <fmt/format.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "common/trace/codec.h"
#include "common/trace/format.h"

namespace spin::trace {

struct TraceWriter::Head {
  codec::SelectionEncoder encoder;
  std::vector<uint8_t> segment;  // the open chunk's encoded steps
  uint64_t selections = 0;       // in the open chunk
  bool has_map = false;
  PartitionMap map;
};

struct TraceWriter::Layer {
  uint32_t next_step = 0;
  uint32_t chunk_first_step = 0;
  uint64_t chunk_selections = 0;
  std::vector<Head> heads;
};

struct TraceWriter::Index {
  std::vector<format::IndexEntry> entries;
};

struct TraceWriter::Compressor {
  ZSTD_CCtx* context = ZSTD_createCCtx();
  std::vector<uint8_t> buffer;
  ~Compressor() { ZSTD_freeCCtx(context); }
};

void check_writer_options(const WriterOptions& options) {
  if (options.chunk_selections == 0)
    throw InputError("selections per chunk (--chunk-selections): expected at least 1, got 0");
  if (options.zstd_level < 0 || options.zstd_level > ZSTD_maxCLevel()) {
    throw InputError(
        fmt::format("zstd compression level (--zstd-level): expected 0 (no compression) to {}, "
                    "got {}",
                    ZSTD_maxCLevel(), options.zstd_level));
  }
}

TraceWriter::TraceWriter(std::filesystem::path path, TraceHeader header, WriterOptions options)
    : header_(std::move(header)),
      options_(options),
      index_(std::make_unique<Index>()),
      compressor_(std::make_unique<Compressor>()) {
  header_.version_major = kFormatMajor;
  header_.version_minor = kFormatMinor;
  validate_header(header_);
  check_writer_options(options_);
  if (compressor_->context == nullptr) throw std::bad_alloc();
  // Found now, not after the whole trace is written.
  if (path.empty()) throw InputError("trace writer: no output file named");
  file_ = std::make_unique<PartialFile>(path, "the trace");
  write_bytes(format::encode_header({}));
}

TraceWriter::~TraceWriter() = default;

void TraceWriter::fail(std::string_view what) const {
  if (open_) throw InputError(fmt::format("request id {}: {}", request_.id, what));
  throw InputError(std::string(what));
}

void TraceWriter::fail(uint32_t layer, std::string_view what) const {
  fail(fmt::format("layer {}: {}", layer, what));
}

void TraceWriter::require_open(std::string_view call) const {
  if (file_ == nullptr) throw InputError(fmt::format("{}: the writer is already finished", call));
  if (!open_) throw InputError(fmt::format("{}: no request is open (call begin_request)", call));
}

void TraceWriter::check_stream(std::string_view call, uint32_t layer, uint32_t head) const {
  require_open(call);
  if (!variable_) {
    fail(fmt::format("{}: the request's algorithm '{}' has fixed partitions, which have no map",
                     call, header_.algorithms[request_.algorithm].name));
  }
  if (layer >= header_.model.layers) {
    fail(fmt::format("{}: layer {} out of range (the model has {} layers)", call, layer,
                     header_.model.layers));
  }
  if (head >= header_.model.kv_heads) {
    fail(layer, fmt::format("{}: head {} out of range (the model has {} KV heads)", call, head,
                            header_.model.kv_heads));
  }
}

void TraceWriter::begin_request(const RequestInfo& request) {
  if (file_ == nullptr) throw InputError("begin_request: the writer is already finished");
  if (open_) {
    fail(fmt::format("begin_request(id {}) while this request is open (call end_request first)",
                     request.id));
  }
  validate_request(header_, request);
  if (!ids_.insert(request.id).second) {
    throw InputError(fmt::format("request id {} appears twice (ids must be unique)", request.id));
  }
  request_ = request;
  variable_ = header_.algorithms[request.algorithm].partition_kind == PartitionKind::kVariable;
  layers_.assign(header_.model.layers, Layer{});
  for (Layer& l : layers_) l.heads.resize(header_.model.kv_heads);
  open_ = true;
}

void TraceWriter::set_partition_map(uint32_t layer, uint32_t head,
                                    std::span<const uint32_t> cluster_tokens) {
  check_stream("set_partition_map", layer, head);
  Head& h = layers_[layer].heads[head];
  const std::string at = fmt::format("layer {}, head {}", layer, head);
  if (h.has_map) fail(at + ": set_partition_map called twice for this stream");
  if (layers_[layer].next_step != 0) {
    fail(at + ": set_partition_map must come before the layer's first step");
  }
  try {
    h.map = PartitionMap(cluster_tokens, request_.prompt_tokens);
  } catch (const InputError& e) {
    fail(fmt::format("{}: initial partition map: {}", at, e.what()));
  }
  h.has_map = true;
}

void TraceWriter::grow_partition_map(uint32_t step, uint32_t layer, uint32_t head,
                                     std::span<const uint32_t> new_cluster_tokens) {
  check_stream("grow_partition_map", layer, head);
  Head& h = layers_[layer].heads[head];
  const std::string at = fmt::format("layer {}, head {}, step {}", layer, head, step);
  if (!h.has_map) fail(at + ": map growth before set_partition_map");
  if (step != layers_[layer].next_step) {
    fail(fmt::format(
        "{}: map growth must come after step {} and before step {} of the layer were added; the "
        "layer's next step is {}",
        at, static_cast<int64_t>(step) - 1, step, layers_[layer].next_step));
  }
  if (step >= request_.decode_steps) {
    fail(fmt::format("{}: map growth past the last step ({} decode steps)", at,
                     request_.decode_steps));
  }
  try {
    h.map.grow(step, new_cluster_tokens);
  } catch (const InputError& e) {
    fail(fmt::format("{}: {}", at, e.what()));
  }
}

void TraceWriter::add_step(uint32_t layer, uint32_t step, std::span<const uint32_t> head_offsets,
                           std::span<const uint32_t> ids) {
  require_open("add_step");
  const uint32_t heads = header_.model.kv_heads;
  if (layer >= header_.model.layers) {
    fail(fmt::format("add_step: layer {} out of range (the model has {} layers)", layer,
                     header_.model.layers));
  }
  Layer& l = layers_[layer];
  if (step != l.next_step) {
    fail(layer, fmt::format("step {} given, expected step {} (each layer's steps are added in "
                            "order, contiguous from 0)",
                            step, l.next_step));
  }
  if (step >= request_.decode_steps) {
    fail(layer,
         fmt::format("step {} is past the request's {} decode steps", step, request_.decode_steps));
  }
  if (head_offsets.size() != size_t{heads} + 1) {
    fail(layer, fmt::format("step {}: {} head offsets given, expected kv_heads + 1 = {}", step,
                            head_offsets.size(), heads + 1));
  }
  for (uint32_t h = 0; h < heads; ++h) {
    if (head_offsets[h] > head_offsets[h + 1] || head_offsets[h + 1] > ids.size()) {
      fail(layer, fmt::format("step {}: head offsets [{}, {}) of head {} do not fit the {} ids",
                              step, head_offsets[h], head_offsets[h + 1], h, ids.size()));
    }
  }
  const AlgorithmInfo& algo = header_.algorithms[request_.algorithm];
  for (uint32_t h = 0; h < heads; ++h) {
    const auto sel = ids.subspan(head_offsets[h], head_offsets[h + 1] - head_offsets[h]);
    if (variable_ && !l.heads[h].has_map) {
      fail(layer,
           fmt::format("head {}, step {}: no partition map was set for this stream", h, step));
    }
    const uint32_t limit =
        variable_ ? l.heads[h].map.clusters()
                  : fixed_partition_count(request_.prompt_tokens, step, algo.partition_tokens);
    if (const SelectionProblem p = check_selection(sel, limit)) {
      throw SelectionError(fmt::format("request id {}, layer {}, head {}, step {}: {}", request_.id,
                                       layer, h, step, describe(p, sel, limit)),
                           h, p.position);
    }
    if (sel.size() > codec::kMaxSelection) {
      fail(layer, fmt::format("head {}, step {}: {} partitions selected, at most {} supported", h,
                              step, sel.size(), codec::kMaxSelection));
    }
  }
  for (uint32_t h = 0; h < heads; ++h) {
    const auto sel = ids.subspan(head_offsets[h], head_offsets[h + 1] - head_offsets[h]);
    Head& hd = l.heads[h];
    hd.encoder.encode(sel, hd.segment);
    hd.selections += sel.size();
    l.chunk_selections += sel.size();
  }
  ++l.next_step;
  if (l.chunk_selections >= options_.chunk_selections) flush_layer(layer);
}

void TraceWriter::flush_layer(uint32_t layer) {
  Layer& l = layers_[layer];
  const uint32_t steps = l.next_step - l.chunk_first_step;
  if (steps == 0) return;
  std::vector<std::vector<uint8_t>> segments(l.heads.size());
  std::vector<uint64_t> counts(l.heads.size());
  for (size_t h = 0; h < l.heads.size(); ++h) {
    segments[h].swap(l.heads[h].segment);
    counts[h] = l.heads[h].selections;
    l.heads[h].selections = 0;
    l.heads[h].encoder.start_segment();
  }
  write_chunk(format::ChunkKind::kSelections, layer, l.chunk_first_step, steps, segments, counts);
  for (size_t h = 0; h < l.heads.size(); ++h) {
    segments[h].clear();
    l.heads[h].segment.swap(segments[h]);  // keep the capacity for the next chunk
  }
  l.chunk_first_step = l.next_step;
  l.chunk_selections = 0;
}

void TraceWriter::write_chunk(format::ChunkKind kind, uint32_t layer, uint32_t first_step,
                              uint32_t step_count, std::span<const std::vector<uint8_t>> segments,
                              std::span<const uint64_t> counts) {
  format::IndexEntry e;
  e.kind = kind;
  e.request = static_cast<uint32_t>(requests_.size());
  e.layer = layer;
  e.first_step = first_step;
  e.step_count = step_count;
  e.offset = offset_;
  std::vector<format::HeadEntry> heads(segments.size());
  std::vector<uint8_t> stored;
  for (size_t h = 0; h < segments.size(); ++h) {
    const std::vector<uint8_t>& raw = segments[h];
    if (raw.size() > std::numeric_limits<uint32_t>::max()) {
      fail(layer, fmt::format("head {}: a chunk segment of {} bytes exceeds 4 GiB; lower "
                              "WriterOptions.chunk_selections",
                              h, raw.size()));
    }
    const size_t start = stored.size();
    bool compressed = false;
    if (options_.zstd_level > 0 && !raw.empty()) {
      std::vector<uint8_t>& buf = compressor_->buffer;
      buf.resize(ZSTD_compressBound(raw.size()));
      const size_t n = ZSTD_compressCCtx(compressor_->context, buf.data(), buf.size(), raw.data(),
                                         raw.size(), options_.zstd_level);
      if (ZSTD_isError(n)) {
        throw InvariantError(fmt::format("zstd compression failed: {}", ZSTD_getErrorName(n)));
      }
      if (n < raw.size()) {
        stored.insert(stored.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
        compressed = true;
      }
    }
    if (!compressed) stored.insert(stored.end(), raw.begin(), raw.end());
    heads[h].stored_bytes = static_cast<uint32_t>(stored.size() - start);
    heads[h].raw_bytes = static_cast<uint32_t>(raw.size());
    heads[h].count = counts[h];
    heads[h].checksum = format::checksum(std::span(stored).subspan(start));
    e.raw_bytes += raw.size();
    e.count += counts[h];
  }
  std::vector<uint8_t> table;
  format::encode_head_table(heads, table);
  e.checksum = format::checksum(table);
  e.stored_bytes = table.size() + stored.size();
  write_bytes(table);
  write_bytes(stored);
  index_->entries.push_back(e);
}

void TraceWriter::end_request() {
  require_open("end_request");
  for (uint32_t layer = 0; layer < layers_.size(); ++layer) {
    if (layers_[layer].next_step != request_.decode_steps) {
      fail(layer, fmt::format("{} steps were added, the request has decode_steps = {}",
                              layers_[layer].next_step, request_.decode_steps));
    }
    for (uint32_t h = 0; h < layers_[layer].heads.size(); ++h) {
      if (variable_ && !layers_[layer].heads[h].has_map) {
        fail(layer, fmt::format("head {}: no partition map was set for this stream", h));
      }
    }
  }
  for (uint32_t layer = 0; layer < layers_.size(); ++layer) {
    flush_layer(layer);
    if (!variable_) continue;
    const std::vector<Head>& heads = layers_[layer].heads;
    std::vector<std::vector<uint8_t>> segments(heads.size());
    std::vector<uint64_t> counts(heads.size());
    for (size_t h = 0; h < heads.size(); ++h) {
      codec::encode_partition_map(heads[h].map, segments[h]);
      counts[h] = heads[h].map.clusters();
    }
    write_chunk(format::ChunkKind::kPartitionMap, layer, 0, request_.decode_steps, segments,
                counts);
  }
  requests_.push_back(request_);
  layers_.clear();
  open_ = false;
}

void TraceWriter::finish() {
  if (file_ == nullptr) throw InputError("finish: the writer is already finished");
  if (open_) fail("finish() called while this request is open (call end_request first)");
  format::Footer f;
  const std::vector<uint8_t> metadata = format::encode_metadata(header_, requests_);
  f.metadata_offset = offset_;
  f.metadata_bytes = metadata.size();
  f.metadata_checksum = format::checksum(metadata);
  write_bytes(metadata);
  std::sort(index_->entries.begin(), index_->entries.end(), format::index_order);
  const std::vector<uint8_t> index = format::encode_index(index_->entries);
  f.index_offset = offset_;
  f.index_bytes = index.size();
  f.index_checksum = format::checksum(index);
  write_bytes(index);
  write_bytes(format::encode_footer(f));
  file_->commit();
  file_.reset();
}

void TraceWriter::write_bytes(std::span<const uint8_t> bytes) {
  file_->stream().write(reinterpret_cast<const char*>(bytes.data()),
                        static_cast<std::streamsize>(bytes.size()));
  file_->check_written();
  offset_ += bytes.size();
}

}  // namespace spin::trace
