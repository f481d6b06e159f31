// Workloads: the requests of a generated trace (docs/trace-generators.md, "Workloads").
//
// Lengths: LongBench-v2-like and LongGenBench-like workloads draw prompt and output lengths from
// a Kumaraswamy(a = 2, b) distribution stretched over the benchmark's [min, max], with b fitted so
// that the mean matches the benchmark's (spin-paper.md; 1K = 1000 tokens). Arrivals: a Poisson
// process at rate_rps, for `requests` requests or until duration_s. The `list` workload takes
// explicit triples. Caps (max_prompt_tokens, max_output_tokens) clip lengths to scale a study
// down. Request ids are 0, 1, ... in arrival order. Deterministic in the seed; O(requests).
#pragma once

#include <cstdint>
#include <vector>

#include "common/trace/trace.h"
#include "traces/gen/config.h"

namespace spin::gen {

// A bounded length distribution: Kumaraswamy(2, b) over [min, max] with the given mean.
struct LengthDistribution {
  double min = 0;
  double max = 0;
  double mean = 0;
  // The quantile at u in [0, 1), rounded to tokens. Calls shape_b().
  uint32_t sample(double u) const;
  // b of the Kumaraswamy distribution, fitted to the mean by bisection (60 lgamma calls).
  double shape_b() const;
};

// The workload's requests (algorithm index 0, decode_steps = output_tokens). Throws InputError
// naming the key when the workload yields no request.
std::vector<trace::RequestInfo> make_requests(const WorkloadSection& workload, uint64_t seed);

}  // namespace spin::gen
