#include "common/trace/reader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace spin::trace {

using format::HeadEntry;
using format::IndexEntry;

// ---------------------------------------------------------------------------------------------
// TraceReader

TraceReader::TraceReader(const std::filesystem::path& path) : path_(path), name_(path.string()) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw InputError(fmt::format("cannot open {}: {}", name_, std::strerror(errno)));
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      throw InputError(fmt::format("cannot stat {}: {}", name_, std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode)) throw InputError(fmt::format("{}: not a regular file", name_));
    file_bytes_ = static_cast<uint64_t>(st.st_size);
    std::vector<uint8_t> head(std::min<uint64_t>(file_bytes_, format::kHeaderBytes));
    read_at(0, head);
    const format::FileHeader version = format::decode_header(head, name_, file_bytes_);
    if (file_bytes_ < format::kMinFileBytes) {
      throw InputError(fmt::format(
          "{}: truncated or unfinished trace: {} bytes, but a trace has at least {} (a {}-byte "
          "header, an index and a {}-byte footer)",
          name_, file_bytes_, format::kMinFileBytes, format::kHeaderBytes, format::kFooterBytes));
    }
    std::vector<uint8_t> foot(format::kFooterBytes);
    read_at(file_bytes_ - format::kFooterBytes, foot);
    footer_ = format::decode_footer(foot, name_, file_bytes_);

    const auto read_section = [&](uint64_t offset, uint64_t bytes, uint64_t sum,
                                  std::string_view what) {
      std::vector<uint8_t> v(bytes);
      read_at(offset, v);
      if (format::checksum(v) != sum) {
        throw InputError(fmt::format(
            "{}: {} (bytes {}..{}) is corrupted: checksum mismatch (stored {:016x}, computed "
            "{:016x})",
            name_, what, offset, offset + bytes - 1, sum, format::checksum(v)));
      }
      return v;
    };
    const std::vector<uint8_t> metadata =
        read_section(footer_.metadata_offset, footer_.metadata_bytes, footer_.metadata_checksum,
                     "the metadata section");
    std::tie(header_, requests_) =
        format::decode_metadata(metadata, name_, footer_.metadata_offset, version);
    const std::vector<uint8_t> index = read_section(footer_.index_offset, footer_.index_bytes,
                                                    footer_.index_checksum, "the chunk index");
    entries_ = format::decode_index(index, name_, footer_.index_offset);
    validate_index(footer_);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

TraceReader::~TraceReader() { ::close(fd_); }

void TraceReader::read_at(uint64_t offset, std::span<uint8_t> out) const {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw InputError(fmt::format("{}: cannot read {} bytes at byte {}: {}", name_, out.size(),
                                   offset, std::strerror(errno)));
    }
    if (n == 0) {
      throw InputError(
          fmt::format("{}: unexpected end of file at byte {} while reading {} bytes "
                      "at byte {} (did the file change while open?)",
                      name_, offset + done, out.size(), offset));
    }
    done += static_cast<size_t>(n);
  }
}

void TraceReader::validate_index(const format::Footer& footer) {
  const uint32_t layers = header_.model.layers;
  const uint64_t table_bytes = uint64_t{header_.model.kv_heads} * format::kHeadEntryBytes;
  layer_begin_.assign(requests_.size() * layers + 1, 0);
  uint64_t expected_step = 0;  // next step of the current (request, layer)
  size_t current = 0;          // current (request, layer) key
  bool has_map = false;
  const auto where = [&](size_t i) {
    return fmt::format("{}: chunk index entry {} (byte {})", name_, i,
                       footer.index_offset + 8 + i * format::kIndexEntryBytes);
  };
  // Checks that (request, layer) `key` was completely covered; called when the key is left.
  const auto close_key = [&](size_t key) {
    const RequestInfo& r = requests_[key / layers];
    const bool variable =
        header_.algorithms[r.algorithm].partition_kind == PartitionKind::kVariable;
    if (expected_step != r.decode_steps || variable != has_map) {
      throw InputError(fmt::format(
          "{}: the chunk index (bytes {}..{}) is incomplete: the selection chunks of request id "
          "{} layer {} cover steps [0, {}) of its {} decode steps{}",
          name_, footer.index_offset, footer.index_offset + footer.index_bytes - 1, r.id,
          key % layers, expected_step, r.decode_steps,
          variable && !has_map ? ", and its partition map chunk is missing" : ""));
    }
  };
  for (size_t i = 0; i < entries_.size(); ++i) {
    const IndexEntry& e = entries_[i];
    if (e.request >= requests_.size() || e.layer >= layers) {
      throw InputError(
          fmt::format("{}: request {} / layer {} out of range ({} requests, {} "
                      "layers)",
                      where(i), e.request, e.layer, requests_.size(), layers));
    }
    if (i > 0 && !format::index_order(entries_[i - 1], e)) {
      throw InputError(
          fmt::format("{}: entries are not in (request, layer, kind, first step) order", where(i)));
    }
    if (e.offset < format::kHeaderBytes || e.stored_bytes < table_bytes ||
        e.stored_bytes > footer.metadata_offset ||
        e.offset > footer.metadata_offset - e.stored_bytes) {
      throw InputError(fmt::format(
          "{}: chunk [{}, +{}) must lie between the file header and the metadata section (bytes "
          "{}..{}) and hold at least its {}-byte head table",
          where(i), e.offset, e.stored_bytes, format::kHeaderBytes, footer.metadata_offset,
          table_bytes));
    }
    const size_t key = size_t{e.request} * layers + e.layer;
    for (size_t k = current; k < key; ++k) {
      close_key(k);
      expected_step = 0;
      has_map = false;
      layer_begin_[k + 1] = i;
    }
    current = key;
    const RequestInfo& r = requests_[e.request];
    const bool variable =
        header_.algorithms[r.algorithm].partition_kind == PartitionKind::kVariable;
    if (e.kind == format::ChunkKind::kSelections) {
      if (e.first_step != expected_step || e.step_count == 0 ||
          e.step_count > r.decode_steps - e.first_step) {
        throw InputError(fmt::format(
            "{}: request id {} layer {}: selection chunk covers steps [{}, +{}), expected a "
            "non-empty range starting at step {} within the request's {} decode steps",
            where(i), r.id, e.layer, e.first_step, e.step_count, expected_step, r.decode_steps));
      }
      expected_step += e.step_count;
    } else {
      if (!variable || has_map || e.first_step != 0 || e.step_count != r.decode_steps) {
        throw InputError(fmt::format(
            "{}: request id {} layer {}: unexpected partition map chunk (algorithm '{}' has {} "
            "partitions; a variable-partition layer has exactly one map chunk, first_step 0, "
            "step_count = decode_steps)",
            where(i), r.id, e.layer, header_.algorithms[r.algorithm].name,
            variable ? "variable" : "fixed"));
      }
      has_map = true;
    }
  }
  for (size_t k = current; k + 1 < layer_begin_.size(); ++k) {
    close_key(k);
    expected_step = 0;
    has_map = false;
    layer_begin_[k + 1] = entries_.size();
  }
  // The chunks tile [header, metadata): every stored byte belongs to exactly one chunk.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  spans.reserve(entries_.size());
  for (const IndexEntry& e : entries_) spans.emplace_back(e.offset, e.stored_bytes);
  std::sort(spans.begin(), spans.end());
  uint64_t at = format::kHeaderBytes;
  for (const auto& [offset, bytes] : spans) {
    if (offset != at) {
      throw InputError(fmt::format(
          "{}: the chunk index does not tile the chunk area: a chunk starts at byte {}, expected "
          "byte {}",
          name_, offset, at));
    }
    at += bytes;
  }
  if (at != footer.metadata_offset) {
    throw InputError(
        fmt::format("{}: the chunks end at byte {} but the metadata section starts at byte {}",
                    name_, at, footer.metadata_offset));
  }
}

TraceInfo TraceReader::info() const {
  TraceInfo t;
  const uint64_t per_request = uint64_t{header_.model.layers} * header_.model.kv_heads;
  t.file_bytes = file_bytes_;
  t.requests = requests_.size();
  t.streams = t.requests * per_request;
  for (const RequestInfo& r : requests_) t.request_steps += r.decode_steps;
  t.stream_steps = t.request_steps * per_request;
  for (const IndexEntry& e : entries_) {
    if (e.kind == format::ChunkKind::kSelections) {
      t.selections += e.count;
      ++t.selection_chunks;
    } else {
      t.clusters += e.count;
      ++t.map_chunks;
    }
  }
  t.chunk_bytes = footer_.metadata_offset - format::kHeaderBytes;
  t.metadata_bytes = footer_.metadata_bytes;
  t.index_bytes = footer_.index_bytes;
  return t;
}

void TraceReader::verify() const {
  for (size_t r = 0; r < requests_.size(); ++r) {
    for (uint32_t layer = 0; layer < header_.model.layers; ++layer) {
      LayerCursor c = open_layer(r, layer);
      while (c.next()) {
      }
    }
  }
}

LayerCursor TraceReader::open_layer(size_t request, uint32_t layer,
                                    std::span<const uint32_t> heads) const {
  if (request >= requests_.size()) {
    throw InputError(fmt::format("{}: request index {} out of range (the trace has {} requests)",
                                 name_, request, requests_.size()));
  }
  if (layer >= header_.model.layers) {
    throw InputError(fmt::format("{}: layer {} out of range (the model has {} layers)", name_,
                                 layer, header_.model.layers));
  }
  return LayerCursor(*this, request, layer, heads);
}

// ---------------------------------------------------------------------------------------------
// LayerCursor

struct LayerCursor::Zstd {
  ZSTD_DCtx* context = ZSTD_createDCtx();
  ~Zstd() { ZSTD_freeDCtx(context); }
};

LayerCursor::LayerCursor(LayerCursor&&) noexcept = default;
LayerCursor& LayerCursor::operator=(LayerCursor&&) noexcept = default;
LayerCursor::~LayerCursor() = default;

LayerCursor::LayerCursor(const TraceReader& reader, size_t request, uint32_t layer,
                         std::span<const uint32_t> heads)
    : reader_(&reader),
      request_(request),
      layer_(layer),
      variable_(reader.algorithm_of(request).partition_kind == PartitionKind::kVariable),
      zstd_(std::make_unique<Zstd>()) {
  const uint32_t kv_heads = reader.header_.model.kv_heads;
  if (zstd_->context == nullptr) throw std::bad_alloc();
  slot_of_head_.assign(kv_heads, -1);
  if (heads.empty()) {
    for (uint32_t h = 0; h < kv_heads; ++h) heads_.push_back(h);
  } else {
    heads_.assign(heads.begin(), heads.end());
  }
  for (size_t i = 0; i < heads_.size(); ++i) {
    const uint32_t h = heads_[i];
    if (h >= kv_heads || slot_of_head_[h] >= 0) {
      throw InputError(fmt::format(
          "{}: open_layer: head {} is {} (the model has {} KV heads; list each head once)",
          reader.name_, h, h >= kv_heads ? "out of range" : "listed twice", kv_heads));
    }
    slot_of_head_[h] = static_cast<int32_t>(i);
  }
  decoded_.resize(heads_.size());
  limits_.resize(heads_.size());
  segment_begin_.resize(kv_heads + 1);
  const size_t key = request * reader.header_.model.layers + layer;
  chunks_ = std::span(reader.entries_)
                .subspan(reader.layer_begin_[key],
                         reader.layer_begin_[key + 1] - reader.layer_begin_[key]);
  if (variable_) {
    // The map chunk sorts after the layer's selection chunks.
    const IndexEntry& e = chunks_.back();
    chunks_ = chunks_.first(chunks_.size() - 1);
    const RequestInfo& r = reader.requests_[request];
    const uint64_t context = uint64_t{r.prompt_tokens} + r.decode_steps;
    const std::vector<HeadEntry> table =
        read_chunk(e, 5 * (2 + context + 2 * uint64_t{r.decode_steps}), context);
    maps_.reserve(heads_.size());
    for (const uint32_t h : heads_) {
      const auto raw = segment(e, table, h);
      try {
        maps_.push_back(codec::decode_partition_map(raw, r.prompt_tokens, r.decode_steps));
      } catch (const InputError& err) {
        fail(e, h, err.what());
      }
      if (maps_.back().clusters() != table[h].count) {
        fail(e, h,
             fmt::format("the map has {} clusters, the head table says {}", maps_.back().clusters(),
                         table[h].count));
      }
    }
  }
}

void LayerCursor::fail(const IndexEntry& e, int64_t head, std::string_view what) const {
  const std::string head_part = head >= 0 ? fmt::format(", head {}", head) : "";
  throw InputError(fmt::format(
      "{}: {} chunk at byte {} (request id {}, layer {}{}, steps [{}, {})): {}", reader_->name_,
      e.kind == format::ChunkKind::kSelections ? "selection" : "partition map", e.offset,
      reader_->requests_[request_].id, layer_, head_part, e.first_step, e.first_step + e.step_count,
      what));
}

std::vector<HeadEntry> LayerCursor::read_chunk(const IndexEntry& e, uint64_t max_raw_bytes,
                                               uint64_t max_count) {
  const uint32_t kv_heads = reader_->header_.model.kv_heads;
  const size_t table_bytes = size_t{kv_heads} * format::kHeadEntryBytes;
  buffer_.resize(table_bytes);
  reader_->read_at(e.offset, buffer_);
  if (const uint64_t sum = format::checksum(buffer_); sum != e.checksum) {
    fail(e, -1,
         fmt::format("the head table (bytes {}..{}) is corrupted: checksum mismatch "
                     "(index says {:016x}, computed {:016x})",
                     e.offset, e.offset + table_bytes - 1, e.checksum, sum));
  }
  std::vector<HeadEntry> table = format::decode_head_table(buffer_, reader_->name_, e.offset);
  uint64_t stored = 0, raw = 0, count = 0;
  for (uint32_t h = 0; h < kv_heads; ++h) {
    const HeadEntry& t = table[h];
    if (t.stored_bytes > t.raw_bytes || t.raw_bytes > max_raw_bytes || t.count > max_count) {
      fail(e, h,
           fmt::format("head table entry claims {} stored bytes, {} raw bytes and {} items; "
                       "expected stored <= raw <= {} and items <= {}",
                       t.stored_bytes, t.raw_bytes, t.count, max_raw_bytes, max_count));
    }
    segment_begin_[h] = stored;
    stored += t.stored_bytes;
    raw += t.raw_bytes;
    count += t.count;
  }
  segment_begin_[kv_heads] = stored;
  if (stored != e.stored_bytes - table_bytes || raw != e.raw_bytes || count != e.count) {
    fail(e, -1,
         fmt::format("the head table sums to {} stored bytes, {} raw bytes and {} items; "
                     "the index says {}, {} and {}",
                     stored, raw, count, e.stored_bytes - table_bytes, e.raw_bytes, e.count));
  }
  // Read only the byte range of the chosen heads' segments.
  uint32_t lo = kv_heads, hi = 0;
  for (const uint32_t h : heads_) {
    lo = std::min(lo, h);
    hi = std::max(hi, h + 1);
  }
  const uint64_t first = segment_begin_[lo];
  buffer_.resize(segment_begin_[hi] - first + codec::kDecodePadding);
  buffer_file_offset_ = e.offset + table_bytes + first;
  reader_->read_at(buffer_file_offset_, std::span(buffer_).first(segment_begin_[hi] - first));
  for (uint32_t h = 0; h <= kv_heads; ++h) segment_begin_[h] -= std::min(segment_begin_[h], first);
  return table;
}

std::span<const uint8_t> LayerCursor::segment(const IndexEntry& e, std::span<const HeadEntry> table,
                                              uint32_t head) {
  const HeadEntry& t = table[head];
  const auto stored =
      std::span<const uint8_t>(buffer_).subspan(segment_begin_[head], t.stored_bytes);
  if (const uint64_t sum = format::checksum(stored); sum != t.checksum) {
    const uint64_t at = buffer_file_offset_ + segment_begin_[head];
    fail(e, head,
         fmt::format("the segment (bytes {}..{}) is corrupted: checksum mismatch (head "
                     "table says {:016x}, computed {:016x})",
                     at, at + t.stored_bytes - 1, t.checksum, sum));
  }
  if (t.stored_bytes == t.raw_bytes) return stored;  // stored raw; buffer_ has padding after it
  raw_.resize(size_t{t.raw_bytes} + codec::kDecodePadding);
  const size_t n =
      ZSTD_decompressDCtx(zstd_->context, raw_.data(), t.raw_bytes, stored.data(), stored.size());
  if (ZSTD_isError(n) || n != t.raw_bytes) {
    fail(e, head,
         fmt::format("the zstd frame does not decompress to the {} bytes the head "
                     "table says: {}",
                     t.raw_bytes,
                     ZSTD_isError(n) ? ZSTD_getErrorName(n) : fmt::format("got {} bytes", n)));
  }
  std::fill(raw_.begin() + t.raw_bytes, raw_.end(), 0);
  return std::span<const uint8_t>(raw_).first(t.raw_bytes);
}

void LayerCursor::load_chunk(const IndexEntry& e) {
  const RequestInfo& r = reader_->requests_[request_];
  const AlgorithmInfo& algo = reader_->algorithm_of(request_);
  // Limits of every chosen head over the chunk's steps; their maximum bounds the segment sizes.
  uint32_t max_limit = 0;
  for (size_t s = 0; s < heads_.size(); ++s) {
    std::vector<uint32_t>& limits = limits_[s];
    limits.resize(e.step_count);
    for (uint32_t i = 0; i < e.step_count; ++i) {
      const uint32_t step = e.first_step + i;
      limits[i] = variable_ ? maps_[s].clusters_at(step)
                            : fixed_partition_count(r.prompt_tokens, step, algo.partition_tokens);
    }
    max_limit = std::max(max_limit, limits.back());
  }
  if (variable_) {
    // Unchosen heads may have other maps; any map is bounded by the context.
    max_limit = std::max(max_limit, r.prompt_tokens + e.first_step + e.step_count);
  }
  const uint64_t steps = e.step_count;
  const std::vector<HeadEntry> table = read_chunk(
      e, steps * (5 + (uint64_t{max_limit} + 7) / 8 + 5 * uint64_t{max_limit}), steps * max_limit);
  for (size_t s = 0; s < heads_.size(); ++s) {
    const uint32_t h = heads_[s];
    const auto raw = segment(e, table, h);
    try {
      decoder_.decode(raw, e.first_step, limits_[s], decoded_[s]);
    } catch (const InputError& err) {
      fail(e, h, err.what());
    }
    if (decoded_[s].total() != table[h].count) {
      fail(e, h,
           fmt::format("decoded {} selections, the head table says {}", decoded_[s].total(),
                       table[h].count));
    }
  }
  chunk_steps_ = e.step_count;
  step_in_chunk_ = 0;
  step_ = e.first_step;
}

bool LayerCursor::next() {
  if (positioned_ && step_in_chunk_ + 1 < chunk_steps_) {
    ++step_in_chunk_;
    ++step_;
    return true;
  }
  if (next_chunk_ == chunks_.size()) {
    positioned_ = false;
    return false;
  }
  load_chunk(chunks_[next_chunk_++]);
  positioned_ = true;
  return true;
}

size_t LayerCursor::slot(uint32_t head, std::string_view call) const {
  if (!positioned_) {
    throw InvariantError(fmt::format("LayerCursor::{}: no current step (call next() first)", call));
  }
  if (head >= slot_of_head_.size() || slot_of_head_[head] < 0) {
    throw InvariantError(fmt::format("LayerCursor::{}: head {} was not opened", call, head));
  }
  return static_cast<size_t>(slot_of_head_[head]);
}

std::span<const uint32_t> LayerCursor::selection(uint32_t head) const {
  return decoded_[slot(head, "selection")].step(step_in_chunk_);
}

uint32_t LayerCursor::partition_count(uint32_t head) const {
  return limits_[slot(head, "partition_count")][step_in_chunk_];
}

std::span<const uint32_t> LayerCursor::partition_offsets(uint32_t head) const {
  const size_t s = slot(head, "partition_offsets");
  if (!variable_) return {};
  return maps_[s].offsets().first(size_t{limits_[s][step_in_chunk_]} + 1);
}

const PartitionMap* LayerCursor::partition_map(uint32_t head) const {
  if (!variable_) return nullptr;
  if (head >= slot_of_head_.size() || slot_of_head_[head] < 0) {
    throw InvariantError(fmt::format("LayerCursor::partition_map: head {} was not opened", head));
  }
  return &maps_[static_cast<size_t>(slot_of_head_[head])];
}

}  // namespace spin::trace
