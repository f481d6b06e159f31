#include "common/trace/memory_source.h"

#include <fmt/format.h>

#include "common/error.h"

namespace spin::trace {
namespace {

class DataStream final : public StepStream {
 public:
  DataStream(const TraceData& data, size_t request, uint32_t layer)
      : data_(data), request_(data.requests[request]), layer_(layer) {}
  bool next() override {
    if (next_ >= request_.info.decode_steps) return false;
    step_ = next_++;
    return true;
  }
  uint32_t step() const override { return step_; }
  std::span<const uint32_t> selection(uint32_t head) const override {
    const size_t k =
        (size_t{layer_} * request_.info.decode_steps + step_) * data_.header.model.kv_heads + head;
    return std::span<const uint32_t>(request_.ids)
        .subspan(request_.offsets[k], request_.offsets[k + 1] - request_.offsets[k]);
  }
  std::span<const uint32_t> partition_offsets(uint32_t head) const override {
    if (request_.maps.empty()) return {};
    const PartitionMap& map = request_.maps[size_t{layer_} * data_.header.model.kv_heads + head];
    return map.offsets().first(map.clusters_at(step_) + 1);
  }

 private:
  const TraceData& data_;
  const RequestData& request_;
  uint32_t layer_;
  uint32_t step_ = 0;
  uint32_t next_ = 0;
};

}  // namespace

MemorySource::MemorySource(TraceData data) : data_(std::move(data)) {
  for (const RequestData& r : data_.requests) infos_.push_back(r.info);
}

std::unique_ptr<StepStream> MemorySource::open_layer(size_t request, uint32_t layer,
                                                     std::span<const uint32_t> heads) const {
  if (request >= infos_.size() || layer >= data_.header.model.layers) {
    throw InputError(
        fmt::format("memory trace: no request {} layer {} (it has {} requests of {} layers)",
                    request, layer, infos_.size(), data_.header.model.layers));
  }
  for (uint32_t h : heads) {
    if (h >= data_.header.model.kv_heads) {
      throw InputError(fmt::format("memory trace: no KV head {} (the model has {})", h,
                                   data_.header.model.kv_heads));
    }
  }
  return std::make_unique<DataStream>(data_, request, layer);
}

TraceData materialize(const TraceSource& source, size_t first, size_t count) {
  TraceData data;
  data.header = source.header();
  const uint32_t layers = data.header.model.layers;
  const uint32_t heads = data.header.model.kv_heads;
  for (size_t r = first; r < first + count; ++r) {
    RequestData& out = data.requests.emplace_back();
    out.info = source.requests()[r];
    const bool variable = source.algorithm_of(r).partition_kind == PartitionKind::kVariable;
    if (variable) out.maps.resize(size_t{layers} * heads);
    for (uint32_t layer = 0; layer < layers; ++layer) {
      auto stream = source.open_layer(r, layer);
      while (stream->next()) {
        for (uint32_t head = 0; head < heads; ++head) {
          out.append(stream->selection(head));
          if (!variable) continue;
          // Rebuild the map from the offsets in force at each step: the first step gives the
          // initial clusters, later growth appends.
          PartitionMap& map = out.maps[size_t{layer} * heads + head];
          const auto offsets = stream->partition_offsets(head);
          const uint32_t clusters = static_cast<uint32_t>(offsets.size() - 1);
          std::vector<uint32_t> lengths;
          const uint32_t have = stream->step() == 0 ? 0 : map.clusters();
          for (uint32_t c = have; c < clusters; ++c) lengths.push_back(offsets[c + 1] - offsets[c]);
          if (stream->step() == 0) {
            map = PartitionMap(lengths, out.info.prompt_tokens);
          } else if (!lengths.empty()) {
            map.grow(stream->step(), lengths);
          }
        }
      }
    }
  }
  return data;
}

}  // namespace spin::trace
