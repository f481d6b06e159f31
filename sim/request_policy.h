// One request's policy core over its trace steps (or a sample of its layers): the driver that `spin
// replay` and the simulator share, so the two make the same decisions (and report the same hit
// counts) by construction.
//
// It owns an Engine with the request alone in it (a request's pools never share slots with
// another request's), the request's layer streams from the trace source and, for variable
// partitions, the clusters handed to the engine so far. Call step(s, cache_pages) for
// s = 0, 1, ... in order; each returns that step's counts per layer. Belady requests read their
// whole future at construction (memory: 8 bytes per selected page of the request).
//
// Not thread-safe; distinct RequestPolicy objects may run on distinct threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/policy/budget.h"
#include "common/policy/cache_config.h"
#include "common/policy/engine.h"
#include "common/trace/source.h"

namespace spin::sim {

// What the policy core needs to size a request: its spec (model, geometry, static region, pool
// scope, policy) and its retrieval budget, from the trace and the cache config. Cheap: no trace
// data is read.
struct RequestSizing {
  policy::RequestSpec spec;
  policy::BudgetParams budget;
  bool variable = false;
  std::uint64_t streams = 0;  // layers × KV heads

  RequestSizing(const trace::TraceSource& source, std::size_t request,
                const policy::CacheConfig& cache);
  // The request's footprint at a context (M_r, static region), with `summary_pages` of
  // GPU-resident summaries.
  policy::RequestFootprint footprint(std::uint32_t context_tokens,
                                     std::uint64_t summary_pages = 0) const;
  // floor((1 + k)·M_r) at a context.
  std::uint64_t cache_pages_at(std::uint32_t context_tokens, double k) const;
};

class RequestPolicy {
 public:
  // `layers`: the trace layers to run, ascending (stream sampling: the others are never read);
  // empty runs them all. Engine layers, step_layers() and layers() are indexed by position in
  // `layers`.
  RequestPolicy(const trace::TraceSource& source, std::size_t request,
                const policy::CacheConfig& cache, bool decision_log,
                std::vector<std::uint32_t> layers = {});
  ~RequestPolicy();
  RequestPolicy(const RequestPolicy&) = delete;
  RequestPolicy& operator=(const RequestPolicy&) = delete;

  const RequestSizing& sizing() const { return sizing_; }
  std::uint64_t cache_pages_at(std::uint32_t context_tokens, double k) const {
    return sizing_.cache_pages_at(context_tokens, k);
  }

  // Runs trace step `step` (the next one) with the request's cache at `cache_pages` (for all its
  // layers; a sample runs with its share).
  void step(std::uint32_t step, std::uint64_t cache_pages);
  // Skips the trace up to `step` (> steps_done()) without running the policy: a request that
  // resumes after a preemption with a cold cache. The trace's streams are read and discarded.
  void skip_to(std::uint32_t step);
  // The last step's counts per layer, and their sum.
  std::span<const policy::PolicyStats> step_layers() const { return step_layers_; }
  const policy::PolicyStats& step_total() const { return step_total_; }

  std::uint32_t steps_done() const { return steps_done_; }
  std::span<const std::uint32_t> trace_layers() const { return trace_layers_; }
  std::span<const policy::PolicyStats> layers() const;
  const policy::PolicyStats& total() const;
  policy::MetadataBytes peak_metadata() const;
  // The decision log so far without its header line (empty unless asked for).
  std::string take_decision_log();

 private:
  struct Clusters;
  void load_futures();

  const trace::TraceSource& source_;
  std::size_t request_;
  RequestSizing sizing_;
  std::vector<std::uint32_t> trace_layers_;  // engine layer i runs trace layer trace_layers_[i]
  policy::Engine engine_;
  policy::RequestId id_ = 0;
  std::uint64_t cache_pages_ = 0;
  std::vector<std::unique_ptr<trace::StepStream>> streams_by_layer_;
  std::unique_ptr<Clusters> clusters_;
  std::vector<policy::PolicyStats> before_;       // layer totals before the last step
  std::vector<policy::PolicyStats> step_layers_;  // the last step, per layer
  policy::PolicyStats step_total_;
  std::uint32_t steps_done_ = 0;
};

}  // namespace spin::sim
