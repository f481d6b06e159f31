// What a simulation leaves in its output folder (DESIGN.md §7; docs/simulator.md, "Outputs"):
// summary.json, requests.csv, steps.csv (optional) and timeline.json next to the resolved config
// and provenance.json. Every writer is a pure function of the result, so the same inputs and
// seed give byte-identical files.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

}  // namespace spin::sim
