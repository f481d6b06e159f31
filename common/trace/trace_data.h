// TraceData: a whole trace in memory, for tests and small tools. Files are written through
// TraceWriter and read through TraceReader, so there is one encoding path.
//
// Memory is 4 bytes per selected partition plus 4 per stream step; for large traces stream with
// TraceWriter / LayerCursor instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "common/trace/trace.h"
#include "common/trace/writer.h"

namespace spin::trace {

struct RequestData {
  RequestInfo info;
  std::vector<PartitionMap> maps;  // [layers × kv_heads], layer-major; empty for fixed partitions
  // Selections as CSR over (layer, step, head), layer-major: stream step
  // k = (layer · decode_steps + step) · kv_heads + head selected ids[offsets[k], offsets[k + 1]).
  std::vector<uint32_t> offsets{0};
  std::vector<uint32_t> ids;

  // Appends the next stream step's selection (in (layer, step, head) order).
  void append(std::span<const uint32_t> selection) {
    ids.insert(ids.end(), selection.begin(), selection.end());
    offsets.push_back(static_cast<uint32_t>(ids.size()));
  }
  bool operator==(const RequestData&) const = default;
};

struct TraceData {
  TraceHeader header;
  std::vector<RequestData> requests;

  std::span<const uint32_t> selection(size_t request, uint32_t layer, uint32_t step,
                                      uint32_t head) const;
  bool operator==(const TraceData&) const = default;
};

// Writes `data` to `path` (TraceWriter validates everything; errors are its InputErrors).
void write_trace(const TraceData& data, const std::filesystem::path& path,
                 const WriterOptions& options = {});
// Reads and decodes the whole trace at `path`.
TraceData read_all(const std::filesystem::path& path);

}  // namespace spin::trace
