// What a simulation leaves in its output folder (DESIGN.md §7; docs/simulator.md, "Outputs"):
// summary.json, requests.csv, steps.csv (optional) and timeline.json next to the resolved config
// and provenance.json. Every writer is a pure function of the result, so the same inputs and
// seed give byte-identical files.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "sim/simulator.h"

namespace spin::sim {

// Mean and nearest-rank percentiles of a sample (all 0 when it is empty).
struct Distribution {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  std::size_t count = 0;
};
Distribution distribution(std::vector<double> values);

nlohmann::ordered_json summary_json(const SimResult& result);
std::string requests_csv(const SimResult& result);
std::string steps_csv(const SimResult& result);

// XXH64 of a file's bytes as 16 hex digits (the provenance's trace hash). InputError if unreadable.
std::string file_xxh64(const std::filesystem::path& path);

// What a run's trace source is made of, as 16 hex digits: the file's XXH64, or for a generator
// the XXH64 of its resolved settings.
std::string trace_source_hash(const config::TraceConfig& trace);

// Writes a run's folder (created if missing): resolved_config.yaml, provenance.json,
// summary.json, requests.csv, and steps.csv / timeline.json when the result holds them. Each file
// is written atomically.
void write_sim_outputs(const std::filesystem::path& dir, const config::Config& config,
                       const SimResult& result);

}  // namespace spin::sim
