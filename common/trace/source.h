// TraceSource: where selections come from, a trace file or a generator (DESIGN.md §3).
//
// Both produce the same records: a header, the requests, and for each (request, layer) a stream
// of decode steps with every chosen KV head's selection. Consumers (replay, the simulator, trace
// statistics) see only this interface, so large studies can pull selections straight from a
// generator without writing a file. Same source and seed → same records, in any order of
// open_layer calls (a generator derives each (request, layer)'s randomness from the seed and the
// ids alone).
//
// Contract: open_layer may be called for any request and layer, any number of times, from
// several threads at once (each returned stream is used by one thread); a stream yields steps
// 0, 1, ..., decode_steps - 1 of its request. Selections are strictly ascending partition ids that
// exist at that step (trace.h). Costs: one virtual call per step and layer, none per selection.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/trace/trace.h"

namespace spin::trace {

class StepStream {
 public:
  virtual ~StepStream() = default;
  // Advances to the next decode step; false after the last one.
  virtual bool next() = 0;
  // The current decode step (valid after next() returned true).
  virtual uint32_t step() const = 0;
  // The partitions KV head `head` selected at the current step, strictly ascending. `head` must
  // be one of the heads the stream was opened for.
  virtual std::span<const uint32_t> selection(uint32_t head) const = 0;
  // Variable partitions: the map in force at the current step, [partitions + 1] token offsets in
  // storage order (DESIGN.md §4.1). Fixed partitions: empty.
  virtual std::span<const uint32_t> partition_offsets(uint32_t head) const = 0;
};

class TraceSource {
 public:
  virtual ~TraceSource() = default;
  virtual const TraceHeader& header() const = 0;
  virtual std::span<const RequestInfo> requests() const = 0;
  // The steps of (requests()[request], layer) for `heads` (distinct KV heads; empty = all).
  // Throws InputError for an out-of-range request, layer or head.
  virtual std::unique_ptr<StepStream> open_layer(size_t request, uint32_t layer,
                                                 std::span<const uint32_t> heads = {}) const = 0;

  const AlgorithmInfo& algorithm_of(size_t request) const {
    return header().algorithms[requests()[request].algorithm];
  }
};

}  // namespace spin::trace
