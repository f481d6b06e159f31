#include "common/trace/file_source.h"

namespace spin::trace {

std::unique_ptr<StepStream> FileSource::open_layer(size_t request, uint32_t layer,
                                                   std::span<const uint32_t> heads) const {
  return std::make_unique<LayerCursor>(reader_.open_layer(request, layer, heads));
}

}  // namespace spin::trace
