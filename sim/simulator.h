// The discrete-event serving simulator (`spin sim`; docs/simulator.md; DESIGN.md §3–§5, §7).
//
// A run replays a trace source through the continuous-batching scheduler
// (common/serving/scheduler.h) on a modelled GPU: each iteration's decoding requests step their
// policy core (sim/request_policy.h: the same driver as `spin replay`, so hit counts agree), the
// cost model (sim/cost_model.h) turns the batch's work into per-layer phases, and page fetches,
// offloads and swaps move over the two PCIe directions (sim/des/link.h), where concurrent
// transfers share bandwidth. The serving mode decides the memory rule, the attention bytes and
// the fetch path.
//
// Token accounting: a request generates min(output_tokens, decode_steps) tokens (a capture may
// record fewer steps than the request generated; such requests are counted as truncated). The
// iteration that finishes its prefill emits token 1 and runs trace step 0; the decode iteration
// that emits token g + 1 runs step g. Step 0's misses move no bytes: the prompt's KV is still in
// HBM when prefill ends.
//
// Deterministic: no wall clock in the model; policy steps of a batch run on `threads` workers
// but their results are combined in batch order, so outputs do not depend on the thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "common/policy/engine.h"
#include "common/trace/source.h"
#include "sim/des/event_queue.h"

namespace spin::sim {

struct SimOptions {
  unsigned threads = 1;
  bool keep_iterations = false;  // fill SimResult::iterations (steps.csv)
  bool timeline = true;          // fill SimResult::timeline_json
  // Per-layer spans and PCIe utilisation counters go into the timeline for the first this many
  // iterations (iteration spans and HBM counters for all of them).
  std::uint32_t timeline_layer_iterations = 8;
  // Called every few hundred iterations with (simulated seconds, finished requests, total).
  std::function<void(double, std::size_t, std::size_t)> progress;
};

struct RequestRecord {
  std::uint64_t trace_id = 0;
  TimeNs arrival_ns = 0;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t output_tokens = 0;  // generated (after truncation to the recorded steps)
  bool truncated = false;
  bool rejected = false;        // can never fit under the mode's memory rule
  std::string rejected_reason;  // the limit, what the request needs and what there is
  TimeNs admitted_ns = 0;
  TimeNs first_token_ns = 0;
  TimeNs finish_ns = 0;
  std::uint32_t preemptions = 0;
  policy::PolicyStats policy;  // over the request's steps

  double ttft_s() const { return static_cast<double>(first_token_ns - arrival_ns) * 1e-9; }
  // Mean time per output token after the first; 0 for one-token requests.
  double tpot_s() const {
    return output_tokens > 1
               ? static_cast<double>(finish_ns - first_token_ns) * 1e-9 / (output_tokens - 1)
               : 0.0;
  }
};

struct IterationRecord {
  TimeNs start_ns = 0;
  TimeNs end_ns = 0;
  std::uint32_t decodes = 0;
  std::uint32_t prefill_tokens = 0;
  std::uint32_t preempted = 0;
  std::uint64_t kv_used_bytes = 0;  // HBM held by KV (and summaries) when the iteration starts
  std::uint64_t fetched_bytes = 0;  // host to HBM on the critical path
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
};

struct SimResult {
  std::string mode;
  double sampling = 1;             // sim.stream_sampling: share of each request's layers simulated
  double sampled_layer_share = 1;  // what that rate samples: round(layers × rate) / layers
  std::uint64_t page_bytes = 0;
  std::uint64_t weight_bytes = 0;       // per GPU
  std::uint64_t kv_pool_bytes = 0;      // HBM for KV, summaries and caches, over all GPUs
  std::vector<RequestRecord> requests;  // in trace order
  std::vector<IterationRecord> iterations;
  std::string timeline_json;
  std::uint64_t iteration_count = 0;
  TimeNs end_ns = 0;                    // when the last request finished
  double batch_time_weighted_mean = 0;  // decoding requests, weighted by iteration time
  std::uint32_t batch_max = 0;
  // Iterations that only decoded (no prefill chunk): the offline decode throughput of the batch
  // sizes the run reached, free of prefill interference.
  std::uint64_t decode_only_iterations = 0;
  std::uint64_t decode_only_tokens = 0;
  TimeNs decode_only_ns = 0;
  std::uint64_t kv_used_peak_bytes = 0;
  // Host-KV modes: prompts whose KV stayed in HBM past their prefill, until its copy to host
  // ended (a device-to-host link slower than prefill), and the most HBM they held at once.
  std::uint64_t offload_held_prompts = 0;
  std::uint64_t offload_held_peak_bytes = 0;
  // Host DRAM for KV over all GPUs (hardware.host_memory_gib × tensor_parallel), and the most of
  // it reserved at once: by the admitted requests' KV in host-KV modes, by the swapped-out
  // requests' KV in modes that swap (dense-offload, serving.preemption=swap). 0 in other modes.
  std::uint64_t host_memory_bytes = 0;
  std::uint64_t host_kv_peak_bytes = 0;
  std::uint64_t metadata_peak_bytes = 0;  // page tables (cache.page_table) of the live requests
  std::uint64_t metadata_flat_bytes = 0;  // a flat table for the same requests, at that peak
  double h2d_bytes = 0;                   // host-to-HBM bytes of one GPU (fetches, swaps)
  double d2h_bytes = 0;                   // HBM-to-host bytes of one GPU (offloads, swaps)
  std::uint64_t preemptions = 0;
  std::vector<policy::PolicyStats> policy_layers;
  policy::PolicyStats policy_total;
  // Running ahead (sim.run_ahead), not in summary.json (the outputs do not depend on it): the
  // wrong cache predictions, each of which re-ran part of a request's block.
  std::uint64_t run_ahead_rewinds = 0;
};

// Throws InputError when the config and the trace disagree (algorithm, page size) or the model
// does not fit the GPU.
SimResult simulate(const config::Config& config, const trace::TraceSource& source,
                   const SimOptions& options);

}  // namespace spin::sim
