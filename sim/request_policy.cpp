#include "sim/request_policy.h"

#include <fmt/format.h>

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
  return policy::cache_pages(footprint(context_tokens).mandatory_pages, k);
}

RequestPolicy::RequestPolicy(const trace::TraceSource& source, std::size_t request,
                             const policy::CacheConfig& cache, bool decision_log,
                             std::vector<std::uint32_t> layers)
    : source_(source),
      request_(request),
      sizing_(source, request, cache),
      trace_layers_(std::move(layers)),
      engine_({cache.segment_pages, decision_log, cache.page_table}) {
  const std::uint32_t all = sizing_.spec.model.layers;
  if (trace_layers_.empty()) {
    for (std::uint32_t l = 0; l < all; ++l) trace_layers_.push_back(l);
  }
  for (std::size_t i = 0; i < trace_layers_.size(); ++i) {
    if (trace_layers_[i] >= all || (i > 0 && trace_layers_[i] <= trace_layers_[i - 1]))
      throw InvariantError("request policy: sampled layers must be ascending trace layers");
  }
  const auto layers_run = static_cast<std::uint32_t>(trace_layers_.size());
  policy::RequestSpec spec = sizing_.spec;
  spec.model.layers = layers_run;
  // The sampled pools keep their share of the cache (split_pages divides it by streams).
  spec.cache_pages = sizing_.spec.cache_pages * layers_run / all;
  cache_pages_ = spec.cache_pages;
  id_ = engine_.add_request(spec);
  if (policy::policy_registry().info(cache.policy).needs_future) load_futures();
  for (std::uint32_t layer : trace_layers_)
    streams_by_layer_.push_back(source.open_layer(request, layer));
  clusters_ = std::make_unique<Clusters>(Clusters{
      std::vector<std::uint32_t>(std::size_t{layers_run} * sizing_.spec.model.kv_heads, 0), {}});
  before_.assign(layers_run, {});
  step_layers_.assign(layers_run, {});
}

RequestPolicy::~RequestPolicy() = default;

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
    for (std::uint32_t head = 0; head < model.kv_heads; ++head) {
      futures[head].finalize();
      engine_.set_future(id_, layer, head, std::move(futures[head]));
    }
  }
}

void RequestPolicy::step(std::uint32_t step, std::uint64_t cache_pages) {
  const trace::RequestInfo& info = source_.requests()[request_];
  if (step != steps_done_ || step >= info.decode_steps) {
    throw InvariantError(fmt::format("request policy: request {} asked for step {} after {} of {}",
                                     info.id, step, steps_done_, info.decode_steps));
  }
  const std::uint32_t context = info.prompt_tokens + step;
  // The request's cache, less the share of the layers not run.
  cache_pages = cache_pages * trace_layers_.size() / sizing_.spec.model.layers;
  if (cache_pages != cache_pages_) engine_.set_cache_pages(id_, cache_pages_ = cache_pages);
  engine_.begin_step(id_, step, context);
  const policy::ModelShape& model = sizing_.spec.model;
  for (std::uint32_t layer = 0; layer < trace_layers_.size(); ++layer) {
    trace::StepStream& stream = *streams_by_layer_[layer];
    if (!stream.next() || stream.step() != step) {
      throw InvariantError(fmt::format("trace source: request {} layer {} did not yield step {}",
                                       info.id, trace_layers_[layer], step));
    }
    for (std::uint32_t head = 0; head < model.kv_heads; ++head) {
      if (sizing_.variable) {
        clusters_->sync(std::size_t{layer} * model.kv_heads + head, stream.partition_offsets(head),
                        [&](std::uint32_t start, std::span<const std::uint32_t> lengths) {
                          engine_.append_clusters(id_, layer, head, start, lengths);
                        });
      }
      engine_.select(id_, layer, head, stream.selection(head));
    }
  }
  step_total_ = engine_.end_step(id_);
  const std::span<const policy::PolicyStats> now = engine_.layer_stats();
  for (std::size_t l = 0; l < now.size(); ++l) {
    step_layers_[l] = now[l];
    step_layers_[l] -= before_[l];
    before_[l] = now[l];
  }
  ++steps_done_;
}

void RequestPolicy::skip_to(std::uint32_t step) {
  const trace::RequestInfo& info = source_.requests()[request_];
  if (step < steps_done_ || step > info.decode_steps)
    throw InvariantError(fmt::format("request policy: request {} cannot skip from step {} to {}",
                                     info.id, steps_done_, step));
  for (auto& stream : streams_by_layer_) {
    for (std::uint32_t s = steps_done_; s < step; ++s) {
      if (!stream->next())
        throw InvariantError(
            fmt::format("trace source: request {} ended before step {}", info.id, step));
    }
  }
  steps_done_ = step;
}

std::span<const policy::PolicyStats> RequestPolicy::layers() const { return engine_.layer_stats(); }
const policy::PolicyStats& RequestPolicy::total() const { return engine_.total_stats(); }
policy::MetadataBytes RequestPolicy::peak_metadata() const { return engine_.metadata().peak; }

std::string RequestPolicy::take_decision_log() {
  std::string log = engine_.take_decision_log();
  if (log.starts_with(policy::kDecisionLogHeader))
    log.erase(0, std::string_view(policy::kDecisionLogHeader).size());
  return log;
}

}  // namespace spin::sim
