// Small valid traces built in memory for the trace tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/trace/trace_data.h"

namespace spin::test {

// A reduced model (2 layers, 4 query / 2 KV heads) and three algorithms: "fixed8" (8-token
// partitions = pages), "token" (g = 1, 16-token pages) and "clusters" (variable, 8-token pages).
trace::TraceHeader small_header();

// Three requests, one per algorithm, `steps` decode steps each. Selections follow a locality
// model (most of the previous step kept, a few swapped, the last partition always in); the
// variable request's maps grow at steps 4 and 11 when steps allows. Deterministic in `seed`.
trace::TraceData small_trace(uint64_t seed, uint32_t steps = 16);

// Writer options that make several chunks per layer out of small_trace.
inline trace::WriterOptions small_chunks() { return {.chunk_selections = 40, .zstd_level = 3}; }

// The bytes of small_trace(seed) written with small_chunks().
std::string small_trace_bytes(uint64_t seed);

// The error a reader reports for the file `bytes` when opening it and decoding every chunk, or
// "" if it reads without error. Any exception other than InputError propagates.
std::string read_error(const std::string& bytes);

// Recomputes every checksum of the trace image `bytes` (segments → head tables → index entries →
// index and metadata → footer; and the file header's) from the layout the bytes describe, so that a
// mutation behind the checksums reaches the decoders. `kv_heads` is the model's. Returns false
// where the layout is too damaged to follow (the image is then left as it was).
bool reseal(std::string& bytes, uint32_t kv_heads);

// Whether `text` contains `part`; for CHECK messages that show both.
bool contains(const std::string& text, const std::string& part);

}  // namespace spin::test
