// The `serving` section of a run's config: which system is served and how the scheduler batches
// (docs/simulator.md; DESIGN.md §3, §5).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "common/config/schema.h"
#include "common/serving/mode.h"
#include "common/text.h"

namespace spin::serving {

// What happens to a request that is preempted when memory runs out.
enum class Preemption {
  kAuto,  // the mode's own: dense recomputes, dense-offload swaps, host-KV modes drop the cache
  kRecompute,  // drop the request's KV; it prefills its prompt and generated tokens again
  kSwap,       // copy the request's HBM KV to host and back when it resumes
};

inline constexpr std::array<config::EnumName<Preemption>, 3> kPreemptionNames{{
    {Preemption::kAuto, "auto"},
    {Preemption::kRecompute, "recompute"},
    {Preemption::kSwap, "swap"},
}};
inline std::span<const config::EnumName<Preemption>> enum_names(Preemption) {
  return kPreemptionNames;
}

struct ServingConfig {
  std::string mode = "spin:shadowkv";
  std::uint32_t max_batch_requests = 256;
  std::uint32_t max_batch_tokens = 8192;
  std::uint32_t tensor_parallel = 1;
  double gpu_memory_utilization = 0.9;
  Preemption preemption = Preemption::kAuto;
  double min_buffer_ratio = 1.0;
  double free_watermark = 0.05;

  Mode parsed_mode() const { return parse_mode(mode); }

  template <class V>
  void visit(V& v) {
    v.field("mode", mode,
            "the served system: dense, dense-offload, sparse-original:<algo>, spin:<algo>, "
            "oracle:<algo>, ideal:<algo> (spin --list modes); <algo> must be in the trace");
    v.check(
        "mode",
        [&] {
          return mode_expected(mode) + " (spin --list modes)" + did_you_mean(mode, mode_names());
        },
        [&] { return is_mode(mode); });
    v.field("max_batch_requests", max_batch_requests,
            "most requests in one iteration (decoding plus prefilling)", config::at_least(1));
    v.field("max_batch_tokens", max_batch_tokens,
            "most tokens in one iteration: one per decoding request plus the prefill chunk "
            "(chunked prefill)",
            config::at_least(1));
    v.field("tensor_parallel", tensor_parallel,
            "GPUs that shard each layer's heads (1, 2, 4 or 8); each has its own PCIe link",
            config::at_least(1).at_most(8));
    v.check("tensor_parallel", "1, 2, 4 or 8",
            [&] { return (tensor_parallel & (tensor_parallel - 1)) == 0; });
    v.field("gpu_memory_utilization", gpu_memory_utilization,
            "share of HBM for weights and KV (the rest: activations, workspace), as vLLM's "
            "option of that name",
            config::above(0).at_most(1));
    v.field("preemption", preemption,
            "when memory runs out: auto (the mode's own), recompute or swap (to host memory "
            "while hardware.host_memory_gib holds the KV, else recompute)");
    v.field("min_buffer_ratio", min_buffer_ratio,
            "k_min: host-KV modes admit a request at (1 + k_min)·M_r pages and shrink buffers "
            "no further; cache.buffer_ratio is the ceiling k_max, and a larger k_min is taken as "
            "k_max (fixed buffers: the paper's buffer sweep sets 1024)",
            config::at_least(0).at_most(1024));
    v.field("free_watermark", free_watermark,
            "host-KV modes grow buffers toward k_max while this share of the KV pool stays free",
            config::at_least(0).at_most(1));
  }
};

}  // namespace spin::serving
