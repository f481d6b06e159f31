// MemorySource: a TraceData held in memory as a TraceSource (source.h), and materialize(), which
// reads requests of any source into a TraceData. Benchmarks use the pair to time the policy core
// without the cost of generating or decoding selections; tests use it to build sources by hand.
// Memory: 4 bytes per selected partition plus 4 per stream step (trace_data.h).
#pragma once

#include <memory>
#include <span>

#include "common/trace/source.h"
#include "common/trace/trace_data.h"

namespace spin::trace {

class MemorySource final : public TraceSource {
 public:
  explicit MemorySource(TraceData data);

  const TraceData& data() const { return data_; }
  const TraceHeader& header() const override { return data_.header; }
  std::span<const RequestInfo> requests() const override { return infos_; }
  std::unique_ptr<StepStream> open_layer(size_t request, uint32_t layer,
                                         std::span<const uint32_t> heads = {}) const override;

 private:
  TraceData data_;
  std::vector<RequestInfo> infos_;
};

// Every step of requests [first, first + count) of `source` (all layers and heads).
TraceData materialize(const TraceSource& source, size_t first, size_t count);

}  // namespace spin::trace
