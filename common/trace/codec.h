// Encoding of a chunk's per-head segments (traces/README.md, "Segments"): internal to the writer
// and the reader, and to tests that fuzz the decoders directly.
//
// A selection segment holds the consecutive steps of one stream. Each step starts with a varint
// header h. Keyframe (h & 1 == 0): n = h >> 1 ids follow, the first absolute, each later one as
// (gap - 1) from its predecessor. Delta (h & 1 == 1): the step keeps a subset of the previous
// step's m ids, given by a bitmap of ceil(m / 8) bytes (bit i, LSB first, keeps the previous
// step's i-th id), and adds a = h >> 1 ids coded like a keyframe's; the selection is the sorted
// union. The first step of a segment is a keyframe; the encoder picks the smaller form for every
// later step. Varints are unsigned LEB128 of at most 5 bytes.
//
// A map segment holds one stream's partition map: varint initial cluster count, the lengths;
// varint growth count; per growth: varint step, varint cluster count, the lengths.
//
// Decoders never read more than kDecodePadding bytes past the end of the segment they are given
// (the caller provides them), validate every id against the partition count of its step, and
// throw InputError naming the step and the byte within the segment. Decoding is O(bytes + ids),
// with no allocation once buffers have grown to the largest chunk seen.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/trace/trace.h"

namespace spin::trace::codec {

inline constexpr size_t kDecodePadding = 16;
// A step may select at most this many partitions (the step header is a 32-bit varint).
inline constexpr uint32_t kMaxSelection = (1u << 31) - 1;

inline void put_varint(std::vector<uint8_t>& out, uint32_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

inline size_t varint_bytes(uint32_t v) {
  return v < (1u << 7) ? 1 : v < (1u << 14) ? 2 : v < (1u << 21) ? 3 : v < (1u << 28) ? 4 : 5;
}

// Encodes the steps of one stream, one segment at a time.
class SelectionEncoder {
 public:
  // The next step starts a new segment (so it is a keyframe).
  void start_segment() { has_previous_ = false; }
  // Appends one step; `ids` must be strictly ascending with size <= kMaxSelection. O(n + m).
  void encode(std::span<const uint32_t> ids, std::vector<uint8_t>& out);

 private:
  std::vector<uint32_t> previous_;
  std::vector<uint32_t> added_;
  std::vector<uint8_t> bitmap_;
  bool has_previous_ = false;
};

// The decoded steps of one stream in one chunk, as CSR: step i is ids[begin[i], begin[i + 1]).
class StepSelections {
 public:
  size_t steps() const { return begin_.empty() ? 0 : begin_.size() - 1; }
  std::span<const uint32_t> step(size_t i) const {
    return {ids_.data() + begin_[i], begin_[i + 1] - begin_[i]};
  }
  uint64_t total() const { return begin_.empty() ? 0 : begin_.back(); }

 private:
  friend class SelectionDecoder;
  std::vector<uint32_t> begin_;
  std::vector<uint32_t> ids_;  // capacity kept across chunks
};

class SelectionDecoder {
 public:
  // Decodes a segment of limits.size() steps, the first being decode step `first_step`; step i
  // may use ids < limits[i] (limits never decrease). `raw` must be followed by kDecodePadding
  // readable bytes.
  void decode(std::span<const uint8_t> raw, uint32_t first_step, std::span<const uint32_t> limits,
              StepSelections& out);

 private:
  std::vector<uint32_t> kept_;   // scratch, with room for a sentinel
  std::vector<uint32_t> added_;  // scratch, with room for a sentinel
};

void encode_partition_map(const PartitionMap& map, std::vector<uint8_t>& out);
// Decodes and validates a map segment of a request with `prompt_tokens` and `decode_steps`
// (growth steps must be < decode_steps). `raw` must be followed by kDecodePadding readable bytes.
PartitionMap decode_partition_map(std::span<const uint8_t> raw, uint32_t prompt_tokens,
                                  uint32_t decode_steps);

}  // namespace spin::trace::codec
