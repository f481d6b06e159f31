#include "sim/request_policy.h"

#include <fmt/format.h>

#include <utility>

#include "common/error.h"
#include "common/policy/decision_log.h"
#include "common/policy/partition.h"

namespace spin::sim {

// The clusters a stream's map gained since `known` (variable partitions), for append_clusters.
struct RequestPolicy::Clusters {
  std::vector<std::uint32_t> known;  // [streams] clusters already handed over
  std::vector<std::uint32_t> lengths;

  template <class Append>
  void sync(std::size_t stream, std::span<const std::uint32_t> offsets, Append&& append) {
    if (offsets.empty()) return;
    const auto count = static_cast<std::uint32_t>(offsets.size() - 1);
    if (count <= known[stream]) return;
    lengths.clear();
    for (std::uint32_t c = known[stream]; c < count; ++c)
      lengths.push_back(offsets[c + 1] - offsets[c]);
    append(offsets[known[stream]], std::span<const std::uint32_t>(lengths));
    known[stream] = count;
  }
};

RequestSizing::RequestSizing(const trace::TraceSource& source, std::size_t request,
                             const policy::CacheConfig& cache) {
  const trace::TraceHeader& header = source.header();
  const trace::RequestInfo& info = source.requests()[request];
  const trace::AlgorithmInfo& alg = source.algorithm_of(request);
  variable = alg.partition_kind == trace::PartitionKind::kVariable;
  spec.model = {header.model.layers, header.model.kv_heads, header.model.head_dim,
                header.model.dtype_bytes};
  spec.geometry = {variable ? policy::PartitionKind::kVariable : policy::PartitionKind::kFixed,
                   alg.page_tokens, alg.partition_tokens};
  spec.static_region = {alg.sink_tokens, alg.local_window_tokens};
  spec.max_context_tokens = info.prompt_tokens + std::max(info.output_tokens, info.decode_steps);
  spec.scope = cache.pool_scope;
  spec.policy = cache.policy_params();
  if (alg.budget_tokens == 0 && !(alg.budget_ratio > 0)) {
    // M_r, and with it every cache, would be 0 pages: every selected page bypassed.
    throw InputError(fmt::format(
        "trace: algorithm '{}' (request {}) has no retrieval budget (budget_ratio and "
        "budget_tokens are 0), so its cache cannot be sized; give the trace's algorithm record "
        "a budget (traces/README.md, \"Data model\")",
        alg.name, info.id));
  }
  budget.kind = alg.budget_tokens > 0 ? policy::BudgetKind::kTokens : policy::BudgetKind::kRatio;
  budget.ratio = alg.budget_ratio;
  budget.tokens = alg.budget_tokens;
  budget.cluster_headroom_pages = cache.cluster_headroom_pages;
  streams = std::uint64_t{spec.model.layers} * spec.model.kv_heads;
  spec.cache_pages = cache_pages_at(info.prompt_tokens, cache.buffer_ratio);
}

policy::RequestFootprint RequestSizing::footprint(std::uint32_t context_tokens,
                                                  std::uint64_t summary_pages) const {
  return policy::request_footprint(budget, spec.geometry, spec.static_region, streams,
                                   context_tokens, summary_pages);
}

std::uint64_t RequestSizing::cache_pages_at(std::uint32_t context_tokens, double k) const {
  return policy::cache_pages(footprint(context_tokens), k);
}

// A lane: the engine of one layer (pools per (request, layer)) or of every layer, with a
// checkpoint of it at the block's start. Lane i runs engine layers [i · lane_layers_, (i + 1) ·
// lane_layers_); with a lane per layer its one pool is the request's pool i.
struct RequestPolicy::Lane {
  policy::Engine engine;
  std::uint64_t cache_pages = 0;            // set on the engine
  std::vector<policy::PolicyStats> before;  // engine.layer_stats() after its last step
  policy::Engine::Checkpoint start;         // at block_begin_, for blocks of more than one step
  std::uint64_t start_cache_pages = 0;

  void save() {
    engine.save(start);
    start_cache_pages = cache_pages;
  }
  void restore() {
    engine.restore(start);
    cache_pages = start_cache_pages;
    const std::span<const policy::PolicyStats> stats = engine.layer_stats();
    before.assign(stats.begin(), stats.end());
  }
};

// One engine layer's stream and the steps read from it that a rewind may run again: per step and
// head, the clusters its map gained (start token, count, lengths; variable partitions) and the
// selection (count, ids). Only the layer's lane reads and writes them, so lanes may run on
// distinct threads.
struct RequestPolicy::Inputs {
  std::unique_ptr<trace::StepStream> stream;
  Clusters clusters;                  // of the layer's heads
  std::uint32_t first = 0;            // the step of record `dropped`
  std::size_t dropped = 0;            // records dropped but not yet moved out of data
  std::vector<std::size_t> begin{0};  // [records + 1] into data
  std::vector<std::uint32_t> data;

  std::uint32_t end() const {
    return first + static_cast<std::uint32_t>(begin.size() - 1 - dropped);
  }
  const std::uint32_t* record(std::uint32_t step) const {
    return data.data() + begin[dropped + step - first];
  }
  // Drops the records before `step`. The records after them move to the front of data only once
  // the dropped ones are at least half of it: after a rewind, the lanes step one step at a time
  // through the rest of a block read ahead, and moving it at every step cost 8% of a simulation
  // with many rewinds at run ahead 128 (docs/benchmarks.md, "Longer blocks").
  void drop_before(std::uint32_t step) {
    const std::size_t k = std::min<std::size_t>(step - first, begin.size() - 1 - dropped);
    if (k == 0) return;
    dropped += k;
    first += static_cast<std::uint32_t>(k);
    const std::size_t offset = begin[dropped];
    if (2 * offset < data.size()) return;
    data.erase(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(offset));
    begin.erase(begin.begin(), begin.begin() + static_cast<std::ptrdiff_t>(dropped));
    for (std::size_t& b : begin) b -= offset;
    dropped = 0;
  }
};

RequestPolicy::RequestPolicy(const trace::TraceSource& source, std::size_t request,
                             const policy::CacheConfig& cache, bool decision_log,
                             std::vector<std::uint32_t> layers, std::uint32_t run_ahead)
    : source_(source),
      request_(request),
      sizing_(source, request, cache),
      trace_layers_(std::move(layers)),
      decision_log_(decision_log) {
  const std::uint32_t all = sizing_.spec.model.layers;
  if (trace_layers_.empty()) {
    for (std::uint32_t l = 0; l < all; ++l) trace_layers_.push_back(l);
  }
  for (std::size_t i = 0; i < trace_layers_.size(); ++i) {
    if (trace_layers_[i] >= all || (i > 0 && trace_layers_[i] <= trace_layers_[i - 1]))
      throw InvariantError("request policy: sampled layers must be ascending trace layers");
  }
  const auto layers_run = static_cast<std::uint32_t>(trace_layers_.size());
  const std::uint32_t heads = sizing_.spec.model.kv_heads;
  // Pools per (request, layer) make each layer a lane of its own; other scopes run one lane.
  const bool per_layer = cache.pool_scope == policy::PoolScope::kRequestLayer;
  lane_layers_ = per_layer ? 1 : layers_run;
  run_ahead_max_ = per_layer && !decision_log ? std::max(run_ahead, 1u) : 1;
  // The sampled pools keep their share of the cache (split_pages divides it by streams).
  const std::uint64_t cache_pages = sampled_share(sizing_.spec.cache_pages);
  const std::vector<std::uint64_t> shares = split_pages(cache_pages);
  policy::RequestSpec spec = sizing_.spec;
  spec.model.layers = lane_layers_;
  for (const std::uint64_t share : shares) {
    Lane& lane = lanes_.emplace_back();
    lane.engine = policy::Engine({cache.segment_pages, false, cache.page_table});
    spec.cache_pages = lane.cache_pages = share;
    lane.engine.add_request(spec);  // request 0
    lane.before.assign(lane_layers_, {});
    peak_metadata_ += lane.engine.metadata().current;
  }
  if (policy::policy_registry().info(cache.policy).needs_future) load_futures();
  for (std::uint32_t layer : trace_layers_) {
    Inputs& in = inputs_.emplace_back();
    in.stream = source.open_layer(request, layer);
    in.clusters.known.assign(heads, 0);
  }
  step_layers_.assign(layers_run, {});
  layers_total_.assign(layers_run, {});
}

RequestPolicy::~RequestPolicy() = default;

std::uint64_t RequestPolicy::sampled_share(std::uint64_t cache_pages) const {
  return cache_pages * trace_layers_.size() / sizing_.spec.model.layers;
}

// The lanes' shares of the request's cache: its pools' shares (split_pages by streams), summed
// per lane.
std::vector<std::uint64_t> RequestPolicy::split_pages(std::uint64_t cache_pages) const {
  return policy::split_pages(
      cache_pages, std::vector<std::uint64_t>(trace_layers_.size() / lane_layers_, lane_layers_));
}

// Belady: the whole future of every stream, mapped exactly as Engine::select maps.
void RequestPolicy::load_futures() {
  const trace::RequestInfo& info = source_.requests()[request_];
  const policy::ModelShape& model = sizing_.spec.model;
  for (std::uint32_t layer = 0; layer < trace_layers_.size(); ++layer) {
    std::vector<policy::StreamFuture> futures(model.kv_heads);
    std::vector<policy::PartitionMap> maps(model.kv_heads,
                                           policy::PartitionMap(sizing_.spec.geometry));
    Clusters clusters{std::vector<std::uint32_t>(model.kv_heads, 0), {}};
    auto stream = source_.open_layer(request_, trace_layers_[layer]);
    while (stream->next()) {
      const std::uint32_t step = stream->step();
      const std::uint32_t context = info.prompt_tokens + step;
      for (std::uint32_t head = 0; head < model.kv_heads; ++head) {
        maps[head].set_stored_tokens(context);
        clusters.sync(head, stream->partition_offsets(head),
                      [&](std::uint32_t start, std::span<const std::uint32_t> lengths) {
                        maps[head].append_clusters(start, lengths);
                      });
        futures[head].push_selection(
            step, maps[head].view(),
            policy::static_region(sizing_.spec.static_region, sizing_.spec.geometry.page_tokens,
                                  context),
            stream->selection(head));
      }
    }
    policy::Engine& engine = lanes_[layer / lane_layers_].engine;
    for (std::uint32_t head = 0; head < model.kv_heads; ++head) {
      futures[head].finalize();
      engine.set_future(0, layer % lane_layers_, head, std::move(futures[head]));
    }
  }
}

void RequestPolicy::step(std::uint32_t step, std::uint64_t cache_pages, const Outlook& outlook) {
  const std::uint32_t lanes = begin_step(step, cache_pages, outlook);
  for (std::uint32_t lane = 0; lane < lanes; ++lane) run_lane(lane);
  end_step();
}

std::uint32_t RequestPolicy::begin_step(std::uint32_t step, std::uint64_t cache_pages,
                                        const Outlook& outlook) {
  const trace::RequestInfo& info = source_.requests()[request_];
  if (step != steps_done_ || step >= info.decode_steps) {
    throw InvariantError(fmt::format("request policy: request {} asked for step {} after {} of {}",
                                     info.id, step, steps_done_, info.decode_steps));
  }
  // The request's cache, less the share of the layers not run.
  cache_pages = sampled_share(cache_pages);
  rewinding_ = step < block_end_ && planned_[step - plan_begin_] != cache_pages;
  if (rewinding_) {
    ++rewinds_;
    lockstep_until_ = step + backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  } else if (step == block_end_ && block_end_ - block_begin_ > 1) {
    backoff_ = kFirstBackoff;  // the last block ran ahead, rightly
  }
  if (step < block_end_ && !rewinding_) return 0;

  // A new block from `step`; a rewind first runs [plan_begin_, step) again under its old plan.
  if (!rewinding_) plan_begin_ = step;
  block_begin_ = step;
  const std::uint32_t n = std::min({step < lockstep_until_ ? 1u : run_ahead_max_,
                                    std::max(outlook.block_steps, 1u), info.decode_steps - step});
  block_end_ = step + n;
  const std::size_t first = step - plan_begin_;
  planned_.resize(first + n);
  planned_[first] = cache_pages;
  for (std::uint32_t j = 1; j < n; ++j) {
    planned_[first + j] =
        sampled_share(j <= outlook.forecast.size()
                          ? outlook.forecast[j - 1]
                          : cache_pages_at(info.prompt_tokens + step + j, outlook.buffer_ratio));
  }
  lane_shares_.resize(planned_.size() * lanes_.size());
  for (std::size_t k = first; k < planned_.size(); ++k) {
    const std::vector<std::uint64_t> shares = split_pages(planned_[k]);
    std::copy(shares.begin(), shares.end(), lane_shares_.begin() + k * lanes_.size());
  }
  block_layers_.assign(std::size_t{n} * trace_layers_.size(), {});
  block_totals_.assign(std::size_t{n} * lanes_.size(), {});
  block_metadata_.assign(std::size_t{n} * lanes_.size(), {});
  return static_cast<std::uint32_t>(lanes_.size());
}

void RequestPolicy::run_lane(std::uint32_t index) {
  Lane& lane = lanes_[index];
  // Inputs before the lane's checkpoint are not needed again (dropped here, on the lane's thread:
  // at a new block's start that is all of them, so nothing is moved).
  const std::uint32_t first_layer = index * lane_layers_;
  for (std::uint32_t l = 0; l < lane_layers_; ++l)
    inputs_[first_layer + l].drop_before(plan_begin_);
  if (rewinding_) {
    lane.restore();
    for (std::uint32_t s = plan_begin_; s < block_begin_; ++s) step_lane(index, s, false);
  }
  if (block_end_ - block_begin_ > 1) lane.save();
  for (std::uint32_t s = block_begin_; s < block_end_; ++s) step_lane(index, s, true);
}

void RequestPolicy::end_step() {
  const std::uint32_t step = steps_done_;
  if (step == block_begin_) {  // a block ran: its start is the lanes' copy now
    const std::size_t dropped = block_begin_ - plan_begin_;
    planned_.erase(planned_.begin(), planned_.begin() + static_cast<std::ptrdiff_t>(dropped));
    lane_shares_.erase(lane_shares_.begin(),
                       lane_shares_.begin() + static_cast<std::ptrdiff_t>(dropped * lanes_.size()));
    plan_begin_ = block_begin_;
  }
  const std::size_t j = step - block_begin_;
  const std::size_t layers_run = trace_layers_.size();
  for (std::size_t l = 0; l < layers_run; ++l) {
    step_layers_[l] = block_layers_[j * layers_run + l];
    layers_total_[l] += step_layers_[l];
  }
  step_total_ = {};
  policy::MetadataBytes metadata;
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    step_total_ += block_totals_[j * lanes_.size() + i];
    metadata += block_metadata_[j * lanes_.size() + i];
  }
  total_ += step_total_;
  policy::raise_each(peak_metadata_, metadata);
  ++steps_done_;
}

const std::uint32_t* RequestPolicy::inputs_at(std::uint32_t layer, std::uint32_t step) {
  Inputs& in = inputs_[layer];
  if (step < in.first || step > in.end())
    throw InvariantError(
        fmt::format("request policy: layer {} has no inputs for step {}", layer, step));
  if (step == in.end()) {
    const trace::RequestInfo& info = source_.requests()[request_];
    trace::StepStream& stream = *in.stream;
    if (!stream.next() || stream.step() != step) {
      throw InvariantError(fmt::format("trace source: request {} layer {} did not yield step {}",
                                       info.id, trace_layers_[layer], step));
    }
    const std::uint32_t heads = sizing_.spec.model.kv_heads;
    for (std::uint32_t head = 0; head < heads; ++head) {
      const std::size_t at = in.data.size();
      in.data.insert(in.data.end(), {0, 0});
      if (sizing_.variable) {
        in.clusters.sync(head, stream.partition_offsets(head),
                         [&](std::uint32_t start, std::span<const std::uint32_t> lengths) {
                           in.data[at] = start;
                           in.data[at + 1] = static_cast<std::uint32_t>(lengths.size());
                           in.data.insert(in.data.end(), lengths.begin(), lengths.end());
                         });
      }
      const std::span<const std::uint32_t> selection = stream.selection(head);
      in.data.push_back(static_cast<std::uint32_t>(selection.size()));
      in.data.insert(in.data.end(), selection.begin(), selection.end());
    }
    in.begin.push_back(in.data.size());
  }
  return in.record(step);
}

void RequestPolicy::step_lane(std::uint32_t index, std::uint32_t step, bool record) {
  const trace::RequestInfo& info = source_.requests()[request_];
  Lane& lane = lanes_[index];
  policy::Engine& engine = lane.engine;
  const std::uint64_t share = lane_shares_[(step - plan_begin_) * lanes_.size() + index];
  if (share != lane.cache_pages) engine.set_cache_pages(0, lane.cache_pages = share);
  engine.begin_step(0, step, info.prompt_tokens + step);
  const std::uint32_t heads = sizing_.spec.model.kv_heads;
  const std::uint32_t first_layer = index * lane_layers_;
  for (std::uint32_t l = 0; l < lane_layers_; ++l) {
    const std::uint32_t* p = inputs_at(first_layer + l, step);
    for (std::uint32_t head = 0; head < heads; ++head) {
      const std::uint32_t start = p[0];
      const std::uint32_t clusters = p[1];
      if (clusters > 0) engine.append_clusters(0, l, head, start, {p + 2, clusters});
      p += 2 + clusters;
      const std::uint32_t n = *p++;
      engine.select(0, l, head, {p, n});
      p += n;
    }
  }
  const policy::PolicyStats total = engine.end_step(0);
  if (check_invariants_) {
    try {
      engine.check_invariants();
    } catch (const InvariantError& e) {
      const std::uint32_t last_layer = trace_layers_[first_layer + lane_layers_ - 1];
      throw InvariantError(fmt::format(
          "request {} step {} {}: {}", info.id, step,
          lane_layers_ == 1 ? fmt::format("layer {}", last_layer)
                            : fmt::format("layers {}-{}", trace_layers_[first_layer], last_layer),
          e.what()));
    }
  }
  const std::span<const policy::PolicyStats> now = engine.layer_stats();
  const std::size_t j = step - block_begin_;
  for (std::uint32_t l = 0; l < lane_layers_; ++l) {
    if (record) {
      policy::PolicyStats& delta = block_layers_[j * trace_layers_.size() + first_layer + l];
      delta = now[l];
      delta -= lane.before[l];
    }
    lane.before[l] = now[l];
  }
  if (record) {
    block_totals_[j * lanes_.size() + index] = total;
    block_metadata_[j * lanes_.size() + index] = engine.metadata().current;
  }
  if (decision_log_) {
    for (std::uint32_t pool = 0; pool < engine.pool_count(0); ++pool) {
      policy::PoolDecisions d = engine.decisions(0, pool);
      d.request = source_.requests()[request_].id;  // the engine's own id is always 0
      d.pool += index;  // a lane per layer holds one pool; a single lane holds them all
      policy::append_decision_log(log_, d);
    }
  }
}

void RequestPolicy::skip_to(std::uint32_t step) {
  const trace::RequestInfo& info = source_.requests()[request_];
  if (steps_done_ > 0 || step > info.decode_steps)
    throw InvariantError(fmt::format("request policy: request {} cannot skip from step {} to {}",
                                     info.id, steps_done_, step));
  for (Inputs& in : inputs_) {
    for (std::uint32_t s = 0; s < step; ++s) {
      if (!in.stream->next())
        throw InvariantError(
            fmt::format("trace source: request {} ended before step {}", info.id, step));
    }
    in.first = step;
  }
  steps_done_ = plan_begin_ = block_begin_ = block_end_ = step;
}

std::string RequestPolicy::take_decision_log() { return std::exchange(log_, {}); }

}  // namespace spin::sim
