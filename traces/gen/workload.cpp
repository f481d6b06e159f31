#include "traces/gen/workload.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "traces/gen/rng.h"

namespace spin::gen {
namespace {

constexpr double kA = 2.0;  // Kumaraswamy shape a

// Mean of Kumaraswamy(a, b) on [0, 1]: b · B(1 + 1/a, b).
double kumaraswamy_mean(double b) {
  return std::exp(std::log(b) + std::lgamma(1 + 1 / kA) + std::lgamma(b) -
                  std::lgamma(1 + 1 / kA + b));
}

struct Lengths {
  LengthDistribution prompt;
  LengthDistribution output;
};

// spin-paper.md, "Evaluation setup".
constexpr Lengths kLongBenchV2{{32000, 120000, 55000}, {500, 15000, 5000}};
constexpr Lengths kLongGenBench{{16000, 19000, 18000}, {7000, 32000, 12000}};

}  // namespace

double LengthDistribution::shape_b() const {
  const double target = (mean - min) / (max - min);
  double lo = std::log(1e-3), hi = std::log(1e4);  // the mean falls as b grows
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (kumaraswamy_mean(std::exp(mid)) > target ? lo : hi) = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

uint32_t LengthDistribution::sample(double u) const {
  const double b = shape_b();
  const double x = std::pow(1 - std::pow(1 - u, 1 / b), 1 / kA);
  return static_cast<uint32_t>(std::lround(min + x * (max - min)));
}

std::vector<trace::RequestInfo> make_requests(const WorkloadSection& w, uint64_t seed) {
  std::vector<trace::RequestInfo> out;
  // Each request within the trace format's limits (trace::validate_request), checked here as
  // well as by a trace writer, since the simulator reads the generator directly.
  const auto add = [&](double arrival_us, uint64_t prompt, uint64_t output) {
    if (w.max_prompt_tokens != 0) prompt = std::min<uint64_t>(prompt, w.max_prompt_tokens);
    if (w.max_output_tokens != 0) output = std::min<uint64_t>(output, w.max_output_tokens);
    if (!(arrival_us <= static_cast<double>(trace::kMaxArrivalUs))) {
      throw InputError(fmt::format(
          "generator.workload: request {} arrives at {:.6g} s, past the {} s (31 years) a trace "
          "holds; {}",
          out.size(), arrival_us / 1e6, trace::kMaxArrivalUs / 1'000'000,
          w.name == "list" ? "lower its arrival_us in list" : "raise rate_rps"));
    }
    if (prompt >= UINT32_MAX || output >= UINT32_MAX || prompt + output >= UINT32_MAX) {
      throw InputError(fmt::format(
          "generator.workload: request {} has {} prompt + {} output tokens; a request holds "
          "fewer than 2^32 - 1 tokens",
          out.size(), prompt, output));
    }
    trace::RequestInfo r;
    r.id = out.size();
    r.arrival_us = static_cast<uint64_t>(arrival_us);
    r.prompt_tokens = static_cast<uint32_t>(prompt);
    r.output_tokens = static_cast<uint32_t>(output);
    r.decode_steps = r.output_tokens;
    out.push_back(r);
  };
  if (w.name == "list") {
    for (size_t i = 0; i + 2 < w.list.size(); i += 3) {
      add(static_cast<double>(w.list[i]), w.list[i + 1], w.list[i + 2]);
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const auto& a, const auto& b) { return a.arrival_us < b.arrival_us; });
    for (size_t i = 0; i < out.size(); ++i) out[i].id = i;
    return out;
  }
  const Lengths* lengths = w.name == "longbench-v2"   ? &kLongBenchV2
                           : w.name == "longgenbench" ? &kLongGenBench
                                                      : nullptr;
  // Far more arrivals than allowed fail before they are drawn one by one (the loop's check
  // below is the exact one).
  if (w.duration_s > 0 && w.duration_s * w.rate_rps > 2.0 * kMaxRequests) {
    throw InputError(fmt::format(
        "generator.workload: about {:.3g} requests ({} s at {} per s), more than {}; lower "
        "duration_s or rate_rps",
        w.duration_s * w.rate_rps, w.duration_s, w.rate_rps, kMaxRequests));
  }
  Rng arrivals(mix(seed, 0x61727269));  // "arri"
  double t_s = 0;
  for (size_t i = 0;; ++i) {
    t_s += -std::log(1 - arrivals.unit()) / w.rate_rps;
    if (w.duration_s > 0 ? t_s >= w.duration_s : i >= w.requests) break;
    if (i >= kMaxRequests) {
      throw InputError(
          fmt::format("generator.workload: more than {} requests; lower duration_s "
                      "or rate_rps",
                      kMaxRequests));
    }
    const double arrival_us = std::round(t_s * 1e6);
    if (lengths == nullptr) {
      add(arrival_us, w.prompt_tokens, w.output_tokens);
    } else {
      const uint64_t h = mix(seed, 0x6c656e67, i);  // "leng"
      add(arrival_us, lengths->prompt.sample(unit_interval(h)),
          lengths->output.sample(unit_interval(mix(h))));
    }
  }
  if (out.empty()) {
    throw InputError(
        fmt::format("generator.workload.duration_s: no request arrives within {} s at rate_rps {}",
                    w.duration_s, w.rate_rps));
  }
  return out;
}

}  // namespace spin::gen
