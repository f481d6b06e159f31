#include "sim/trace_source.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/error.h"
#include "common/trace/file_source.h"
#include "sim/trace_match.h"
#include "traces/gen/generator.h"

namespace spin::sim {

std::unique_ptr<trace::TraceSource> open_trace_source(const config::Config& config) {
  const config::TraceConfig& t = config.trace;
  if (t.generator) {
    return std::make_unique<gen::Generator>(*t.generator, config.model);
  }
  if (!t.path) {
    throw InputError(
        "trace: the config gives no trace source; expected trace.path (a trace file) or "
        "trace.generator (a synthetic generator, docs/trace-generators.md)");
  }
  if (std::error_code ec; !std::filesystem::exists(*t.path, ec)) {
    throw InputError(
        fmt::format("trace.path: no trace file {} (given by the config's trace.path "
                    "or --trace)",
                    t.path->string()));
  }
  auto file = std::make_unique<trace::FileSource>(*t.path);
  check_trace_matches_model(t.path->string(), file->header().model, config.model);
  return file;
}

std::string trace_source_name(const config::TraceConfig& trace) {
  if (trace.generator) {
    return fmt::format("generator {} (seed {})", trace.generator->algorithm, trace.generator->seed);
  }
  return trace.path ? trace.path->string() : std::string("(none)");
}

}  // namespace spin::sim
