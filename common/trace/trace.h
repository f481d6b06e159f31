// The attention-access trace: what a serving run asked of the KV cache (traces/README.md).
//
// A trace holds, for each request, its arrival time, prompt and output lengths and algorithm; for
// each decode step and each stream (request, layer, KV head) the selected partitions; and, for
// algorithms with variable-size partitions, each stream's partition map and its growth.
//
// Semantics (DESIGN.md §4.1). Decode step s (0-based) of a request sees a context of
// prompt_tokens + s tokens. A fixed-granularity partition i covers tokens [i·g, (i+1)·g),
// g = partition_tokens, so its id is < ceil((prompt_tokens + s) / g). A variable partition
// (cluster) is a contiguous run of tokens in storage order; the stream's map lists cluster
// lengths in storage order, grows only by appending clusters, and an id is < the number of
// clusters the map has at step s. A selection is strictly ascending.
//
// This header is the data model and its validation; writer.h, reader.h and trace_data.h read and
// write files.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/policy/partition_map.h"

namespace spin::trace {

inline constexpr uint16_t kFormatMajor = 1;
inline constexpr uint16_t kFormatMinor = 0;

struct ModelShape {
  std::string name;
  uint32_t layers = 0;
  uint32_t query_heads = 0;
  uint32_t kv_heads = 0;  // streams per (request, layer)
  uint32_t head_dim = 0;
  uint32_t dtype_bytes = 0;  // bytes of one K or V element
  bool operator==(const ModelShape&) const = default;
};

enum class PartitionKind : uint8_t { kFixed = 0, kVariable = 1 };

// One sparse-attention algorithm as configured for the traced run.
struct AlgorithmInfo {
  std::string name;  // unique within a trace, e.g. "shadowkv"
  PartitionKind partition_kind = PartitionKind::kFixed;
  uint32_t partition_tokens = 0;     // fixed: g (>= 1); variable: nominal cluster size, informative
  uint32_t page_tokens = 0;          // >= 1
  double budget_ratio = 0;           // retrieval budget as a fraction of the context, in [0, 1]
  uint32_t budget_tokens = 0;        // retrieval budget in tokens (0 = none); both may be set
  uint32_t sink_tokens = 0;          // static region: attention sinks ...
  uint32_t local_window_tokens = 0;  // ... and the local window
  uint32_t reindex_interval_tokens = 0;  // variable: re-clustering period (0 = never)
  bool operator==(const AlgorithmInfo&) const = default;
};

struct TraceHeader {
  uint16_t version_major = kFormatMajor;  // set by the writer; what the file says on reading
  uint16_t version_minor = kFormatMinor;
  ModelShape model;
  std::vector<AlgorithmInfo> algorithms;
  std::string source;  // free text: what generated or captured the trace
  uint64_t seed = 0;
  bool operator==(const TraceHeader&) const = default;
};

struct RequestInfo {
  uint64_t id = 0;  // unique within a trace
  uint64_t arrival_us = 0;
  uint32_t prompt_tokens = 0;
  uint32_t output_tokens = 0;
  uint32_t decode_steps = 0;  // steps recorded, <= output_tokens (a capture may stop early)
  uint32_t algorithm = 0;     // index into TraceHeader::algorithms
  bool operator==(const RequestInfo&) const = default;
};

// Throws InputError naming the first invalid field ("model.kv_heads: must be >= 1").
void validate_header(const TraceHeader& header);
// The latest arrival a request may have, in microseconds (31 years).
inline constexpr uint64_t kMaxArrivalUs = 1'000'000'000'000'000;
// Throws InputError naming the request and the field; `header` must be valid.
void validate_request(const TraceHeader& header, const RequestInfo& request);

// Partitions that exist at decode step `step` for a fixed granularity g: ceil((prompt + step) / g).
inline uint32_t fixed_partition_count(uint32_t prompt_tokens, uint32_t step, uint32_t g) {
  const uint64_t context = uint64_t{prompt_tokens} + step;
  return static_cast<uint32_t>((context + g - 1) / g);
}

// The partition map of a stream of algorithm `a` at a step whose context is `context` tokens, as
// the plain view the policy core's mapping functions read (common/policy/partition_map.h), so
// every tool maps partitions to pages by the one rule. `offsets`: the variable map in force
// (LayerCursor::partition_offsets); ignored for fixed partitions.
inline policy::PartitionMapView partition_view(const AlgorithmInfo& a, uint32_t context,
                                               std::span<const uint32_t> offsets) {
  const bool variable = a.partition_kind == PartitionKind::kVariable;
  return {variable ? policy::PartitionKind::kVariable : policy::PartitionKind::kFixed,
          static_cast<uint32_t>(std::countr_zero(a.page_tokens)),
          a.partition_tokens,
          variable ? static_cast<uint32_t>(offsets.size() - 1)
                   : static_cast<uint32_t>((uint64_t{context} + a.partition_tokens - 1) /
                                           a.partition_tokens),
          context,
          variable ? offsets.data() : nullptr};
}

// One stream's variable partition map over a whole request: clusters in storage order, as token
// offsets (a prefix sum), plus when clusters were appended. The map in force at step s is the
// prefix offsets_at(s) of the final map, because growth only appends.
class PartitionMap {
 public:
  struct Growth {
    uint32_t step;      // first decode step that sees the appended clusters
    uint32_t clusters;  // clusters in the map from that step on
    bool operator==(const Growth&) const = default;
  };

  PartitionMap() = default;
  // The map at step 0 over a prompt of `prompt_tokens`. Throws InputError if a length is 0 or
  // the lengths sum to more than the prompt. O(n).
  PartitionMap(std::span<const uint32_t> cluster_tokens, uint32_t prompt_tokens);
  // Appends clusters that exist from decode step `step` on. Throws InputError unless `step` is
  // after the previous growth, at least one cluster is given, every length is >= 1 and all
  // clusters together cover at most the context at that step (prompt + step tokens).
  void grow(uint32_t step, std::span<const uint32_t> cluster_tokens);

  uint32_t prompt_tokens() const { return prompt_tokens_; }
  uint32_t initial_clusters() const { return initial_clusters_; }
  uint32_t clusters() const { return static_cast<uint32_t>(offsets_.size() - 1); }
  std::span<const Growth> growth() const { return growth_; }
  // Clusters in force at decode step `step`. O(growth events).
  uint32_t clusters_at(uint32_t step) const;
  // [clusters + 1] token offsets in storage order; cluster i is [offsets[i], offsets[i+1]).
  std::span<const uint32_t> offsets() const { return offsets_; }
  // Lengths of clusters [first, last), e.g. one growth event's clusters.
  std::vector<uint32_t> cluster_tokens(uint32_t first, uint32_t last) const;
  bool operator==(const PartitionMap&) const = default;

 private:
  void append(std::span<const uint32_t> cluster_tokens, uint64_t context_tokens);
  uint32_t prompt_tokens_ = 0;
  uint32_t initial_clusters_ = 0;
  std::vector<uint32_t> offsets_{0};
  std::vector<Growth> growth_;
};

// What is wrong with a selection, if anything: the first offending position.
struct SelectionProblem {
  enum class Kind { kNone, kNotAscending, kOutOfRange };
  Kind kind = Kind::kNone;
  size_t position = 0;
  explicit operator bool() const { return kind != Kind::kNone; }
};

// Checks that `ids` is strictly ascending and every id < partition_count. O(n).
SelectionProblem check_selection(std::span<const uint32_t> ids, uint32_t partition_count);
// "partition id 9 at position 3 is not greater than the previous id 12 (ids must be strictly
// ascending)"; `problem` must come from check_selection(ids, partition_count).
std::string describe(const SelectionProblem& problem, std::span<const uint32_t> ids,
                     uint32_t partition_count);

}  // namespace spin::trace
