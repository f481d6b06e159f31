// The run's trace source, from its config (DESIGN.md §3): the trace file `trace.path`, checked
// against the run's model, or the generator `trace.generator` over the run's model, which yields
// the same records as the file `spin trace gen` writes for the same settings and seed.
//
// This is the one place that turns a config into a trace::TraceSource; `spin replay` (and the
// simulator) call it. It lives in sim/ because common/ may not depend on traces/.
#pragma once

#include <memory>
#include <string>

#include "common/config/config.h"
#include "common/trace/source.h"

namespace spin::sim {

// Opens the config's trace source. Throws InputError naming `trace` when the config gives neither
// a path nor a generator, naming the file for an unreadable trace or one recorded for another
// model shape. A file is opened and its index read (O(requests)); a generator draws its requests
// (O(layers + requests)); selections are produced when streams are opened.
std::unique_ptr<trace::TraceSource> open_trace_source(const config::Config& config);

// What the source is, for messages and outputs: the file's path, or
// "generator ALGORITHM (seed N)".
std::string trace_source_name(const config::TraceConfig& trace);

}  // namespace spin::sim
