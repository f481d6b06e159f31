// FileSource: a .spt trace file as a TraceSource (source.h), so every consumer reads files and
// generators the same way. A thin adapter over TraceReader/LayerCursor (reader.h): same checks,
// same costs.
#pragma once

#include <filesystem>

#include "common/trace/reader.h"
#include "common/trace/source.h"

namespace spin::trace {

class FileSource final : public TraceSource {
 public:
  explicit FileSource(const std::filesystem::path& path) : reader_(path) {}

  const TraceReader& reader() const { return reader_; }
  const TraceHeader& header() const override { return reader_.header(); }
  std::span<const RequestInfo> requests() const override { return reader_.requests(); }
  std::unique_ptr<StepStream> open_layer(size_t request, uint32_t layer,
                                         std::span<const uint32_t> heads = {}) const override;

 private:
  TraceReader reader_;
};

}  // namespace spin::trace
