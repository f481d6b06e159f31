// One request's policy core over its trace steps (or a sample of its layers): the driver that `spin
// replay` and the simulator share, so the two make the same decisions (and report the same hit
// counts) by construction.
//
// It owns the request's policy engines (a request's pools never share slots with another
// request's), its layer streams from the trace source and, for variable partitions, the clusters
// handed to the engines so far. Call step(s, cache_pages, k) for s = 0, 1, ... in order; each
// gives that step's counts per layer. Belady requests read their whole future at construction
// (memory: 8 bytes per selected page of the request).
//
// Running ahead (docs/simulator.md, "Running ahead"). With pools per (request, layer), each layer
// has an engine of its own (a lane), whose pool depends on the rest of the request only through
// its share of the cache. A lane then runs a block of up to `run_ahead` steps in a row, while its
// pool and stream state are in the CPU caches, under the caches the caller predicts (Outlook:
// the simulator's forecast, else the cache at each step's context with the current k), and keeps a
// checkpoint of its engine from the block's start (Engine::save: all but the page tables'
// segments, which a restore rebuilds) and the block's inputs. When a step's actual cache differs
// from the prediction, every lane goes back to that checkpoint and runs again up to that step, so
// the counts are exactly those of lockstep stepping. Memory: the engines' state plus their
// checkpoints (without segments), plus the block's selections. Other pool scopes run one engine
// in lockstep.
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
  // `layers`. `run_ahead`: the most steps a layer may run ahead of the caller (1: lockstep; the
  // decision log always runs in lockstep).
  RequestPolicy(const trace::TraceSource& source, std::size_t request,
                const policy::CacheConfig& cache, bool decision_log,
                std::vector<std::uint32_t> layers, std::uint32_t run_ahead);
  ~RequestPolicy();
  RequestPolicy(const RequestPolicy&) = delete;
  RequestPolicy& operator=(const RequestPolicy&) = delete;

  const RequestSizing& sizing() const { return sizing_; }
  std::uint64_t cache_pages_at(std::uint32_t context_tokens, double k) const {
    return sizing_.cache_pages_at(context_tokens, k);
  }

  // What the caller foresees of the request's next steps, for running ahead. A wrong prediction
  // costs time, never a different result.
  struct Outlook {
    // The cache at step + 1 + j is forecast[j]; beyond the forecast, cache_pages_at(that step's
    // context, buffer_ratio).
    double buffer_ratio = 0;
    std::span<const std::uint64_t> forecast = {};
    // A block that starts at this step runs at most this many steps (so that the caller can
    // have the blocks of its requests start together).
    std::uint32_t block_steps = UINT32_MAX;
  };
  // Runs trace step `step` (the next one) with the request's cache at `cache_pages` (for all its
  // layers; a sample runs with its share). The same as begin_step, run_lane for each lane,
  // end_step.
  void step(std::uint32_t step, std::uint64_t cache_pages, const Outlook& outlook);
  // The step in three parts, so that a caller can run the lanes of many requests on its threads:
  // begin_step returns how many lanes must run (0 when the step already ran ahead); run_lane(i)
  // for each i below it, in any order, distinct lanes on any threads at once (not with the
  // decision log); then end_step.
  std::uint32_t begin_step(std::uint32_t step, std::uint64_t cache_pages, const Outlook& outlook);
  void run_lane(std::uint32_t lane);
  void end_step();
  // Skips the trace up to `step` (> steps_done()) without running the policy: a request that
  // resumes after a preemption with a cold cache. The trace's streams are read and discarded.
  // Only before the first step.
  void skip_to(std::uint32_t step);
  // The last step's counts per layer, and their sum.
  std::span<const policy::PolicyStats> step_layers() const { return step_layers_; }
  const policy::PolicyStats& step_total() const { return step_total_; }

  std::uint32_t steps_done() const { return steps_done_; }
  std::span<const std::uint32_t> trace_layers() const { return trace_layers_; }
  // Over the steps done.
  std::span<const policy::PolicyStats> layers() const { return layers_total_; }
  const policy::PolicyStats& total() const { return total_; }
  const policy::MetadataBytes& peak_metadata() const { return peak_metadata_; }
  // Wrong cache predictions so far: each re-ran part of a block.
  std::uint64_t rewinds() const { return rewinds_; }
  // The decision log so far without its header line (empty unless asked for).
  std::string take_decision_log();
  // Checks the engines' invariants (policy::Engine::check_invariants) after every pool step from
  // now on; a broken one is an InvariantError naming the request, step and layer.
  void check_invariants_each_step() { check_invariants_ = true; }

 private:
  struct Clusters;
  struct Lane;
  struct Inputs;
  void load_futures();
  // One step of one lane; `record`: store its counts and metadata in the block's slots.
  void step_lane(std::uint32_t lane, std::uint32_t step, bool record);
  // The inputs of engine layer `layer` at `step`, read from its stream if it is the next step.
  const std::uint32_t* inputs_at(std::uint32_t layer, std::uint32_t step);
  std::uint64_t sampled_share(std::uint64_t cache_pages) const;
  std::vector<std::uint64_t> split_pages(std::uint64_t cache_pages) const;

  const trace::TraceSource& source_;
  std::size_t request_;
  RequestSizing sizing_;
  std::vector<std::uint32_t> trace_layers_;  // engine layer i runs trace layer trace_layers_[i]
  bool decision_log_;
  bool check_invariants_ = false;
  std::string log_;
  std::vector<Lane> lanes_;
  std::vector<Inputs> inputs_;  // by engine layer: the steps read from its stream, not yet run
                                // by every lane for good
  std::uint32_t lane_layers_ = 1;
  std::uint32_t run_ahead_max_ = 1;
  // After a wrong prediction, blocks of one step (no copies) up to lockstep_until_; the next
  // wrong prediction in a row doubles the wait.
  std::uint32_t lockstep_until_ = 0;
  static constexpr std::uint32_t kFirstBackoff = 32;
  static constexpr std::uint32_t kMaxBackoff = 1u << 16;
  std::uint32_t backoff_ = kFirstBackoff;
  // The block: steps [block_begin_, block_end_) have run in every lane. The lanes' copies are
  // from plan_begin_ (= block_begin_ but while a rewind runs [plan_begin_, block_begin_) again).
  std::uint32_t plan_begin_ = 0;
  std::uint32_t block_begin_ = 0;
  std::uint32_t block_end_ = 0;
  bool rewinding_ = false;
  std::vector<std::uint64_t> planned_;                 // [step - plan_begin_] the request's cache
  std::vector<std::uint64_t> lane_shares_;             // [step - plan_begin_][lane] its share
  std::vector<policy::PolicyStats> block_layers_;      // [step - block_begin_][layer]
  std::vector<policy::PolicyStats> block_totals_;      // [step - block_begin_][lane]
  std::vector<policy::MetadataBytes> block_metadata_;  // [step - block_begin_][lane]
  std::vector<policy::PolicyStats> step_layers_;       // the last step, per layer
  policy::PolicyStats step_total_;
  std::vector<policy::PolicyStats> layers_total_;
  policy::PolicyStats total_;
  policy::MetadataBytes peak_metadata_;
  std::uint32_t steps_done_ = 0;
  std::uint64_t rewinds_ = 0;
};

}  // namespace spin::sim
