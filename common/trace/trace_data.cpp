#include "common/trace/trace_data.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/trace/file_source.h"
#include "common/trace/memory_source.h"

namespace spin::trace {

std::span<const uint32_t> TraceData::selection(size_t request, uint32_t layer, uint32_t step,
                                               uint32_t head) const {
  const RequestData& r = requests[request];
  const size_t k = (size_t{layer} * r.info.decode_steps + step) * header.model.kv_heads + head;
  return std::span(r.ids).subspan(r.offsets[k], r.offsets[k + 1] - r.offsets[k]);
}

void write_trace(const TraceData& data, const std::filesystem::path& path,
                 const WriterOptions& options) {
  TraceWriter w(path, data.header, options);
  const uint32_t heads = data.header.model.kv_heads;
  for (const RequestData& r : data.requests) {
    const size_t expected = size_t{data.header.model.layers} * r.info.decode_steps * heads + 1;
    if (r.offsets.size() != expected || r.offsets.back() != r.ids.size()) {
      throw InputError(fmt::format(
          "request id {}: {} selection offsets for {} ids, expected layers × decode_steps × "
          "kv_heads + 1 = {} offsets ending at the id count",
          r.info.id, r.offsets.size(), r.ids.size(), expected));
    }
    if (!r.maps.empty() && r.maps.size() != size_t{data.header.model.layers} * heads) {
      throw InputError(
          fmt::format("request id {}: {} partition maps, expected none or layers × "
                      "kv_heads = {}",
                      r.info.id, r.maps.size(), size_t{data.header.model.layers} * heads));
    }
    w.begin_request(r.info);
    for (size_t k = 0; k < r.maps.size(); ++k) {
      const PartitionMap& m = r.maps[k];
      const uint32_t layer = static_cast<uint32_t>(k / heads),
                     head = static_cast<uint32_t>(k % heads);
      w.set_partition_map(layer, head, m.cluster_tokens(0, m.initial_clusters()));
    }
    for (uint32_t layer = 0; layer < data.header.model.layers; ++layer) {
      std::vector<size_t> next_growth(heads, 0);
      for (uint32_t step = 0; step < r.info.decode_steps; ++step) {
        for (uint32_t head = 0; head < heads && !r.maps.empty(); ++head) {
          const PartitionMap& m = r.maps[size_t{layer} * heads + head];
          const auto growth = m.growth();
          size_t& g = next_growth[head];
          if (g < growth.size() && growth[g].step == step) {
            const uint32_t first = g == 0 ? m.initial_clusters() : growth[g - 1].clusters;
            w.grow_partition_map(step, layer, head, m.cluster_tokens(first, growth[g].clusters));
            ++g;
          }
        }
        const size_t k = (size_t{layer} * r.info.decode_steps + step) * heads;
        w.add_step(layer, step, std::span(r.offsets).subspan(k, heads + 1), r.ids);
      }
    }
    w.end_request();
  }
  w.finish();
}

TraceData read_all(const std::filesystem::path& path) {
  const FileSource source(path);
  return materialize(source, 0, source.requests().size());
}

}  // namespace spin::trace
