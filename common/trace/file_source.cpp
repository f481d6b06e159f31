#include "common/trace/file_source.h"

namespace spin::trace {
namespace {

class CursorStream final : public StepStream {
 public:
  explicit CursorStream(LayerCursor cursor) : cursor_(std::move(cursor)) {}
  bool next() override { return cursor_.next(); }
  uint32_t step() const override { return cursor_.step(); }
  std::span<const uint32_t> selection(uint32_t head) const override {
    return cursor_.selection(head);
  }
  std::span<const uint32_t> partition_offsets(uint32_t head) const override {
    return cursor_.partition_offsets(head);
  }

 private:
  LayerCursor cursor_;
};

}  // namespace

std::unique_ptr<StepStream> FileSource::open_layer(size_t request, uint32_t layer,
                                                   std::span<const uint32_t> heads) const {
  return std::make_unique<CursorStream>(reader_.open_layer(request, layer, heads));
}

}  // namespace spin::trace
