#include "sim/replay.h"

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/policy/budget.h"
#include "common/policy/partition.h"

namespace spin::sim {
namespace {

struct RequestPlan {
  policy::RequestSpec spec;
  policy::BudgetParams budget;
  bool variable = false;
};

RequestPlan plan_request(const trace::TraceSource& source, size_t request,
                         const policy::CacheConfig& cache) {
  const trace::TraceHeader& header = source.header();
  const trace::RequestInfo& info = source.requests()[request];
  const trace::AlgorithmInfo& alg = source.algorithm_of(request);
  RequestPlan plan;
  plan.variable = alg.partition_kind == trace::PartitionKind::kVariable;
  policy::RequestSpec& spec = plan.spec;
  spec.model = {header.model.layers, header.model.kv_heads, header.model.head_dim,
                header.model.dtype_bytes};
  spec.geometry = {plan.variable ? policy::PartitionKind::kVariable : policy::PartitionKind::kFixed,
                   alg.page_tokens, alg.partition_tokens};
  spec.static_region = {alg.sink_tokens, alg.local_window_tokens};
  spec.max_context_tokens = info.prompt_tokens + std::max(info.output_tokens, info.decode_steps);
  spec.scope = cache.pool_scope;
  spec.policy = cache.policy_params();
  policy::BudgetParams& budget = plan.budget;
  budget.kind = alg.budget_tokens > 0 ? policy::BudgetKind::kTokens : policy::BudgetKind::kRatio;
  budget.ratio = alg.budget_ratio;
  budget.tokens = alg.budget_tokens;
  budget.cluster_headroom_pages = cache.cluster_headroom_pages;
  return plan;
}

uint64_t cache_pages_at(const RequestPlan& plan, uint64_t streams, uint32_t context,
                        double buffer_ratio) {
  const policy::RequestFootprint f = policy::request_footprint(
      plan.budget, plan.spec.geometry, plan.spec.static_region, streams, context, 0);
  return policy::cache_pages(f.mandatory_pages, buffer_ratio);
}

// The clusters a stream's map gained since `known` (variable partitions), for append_clusters.
struct ClusterTracker {
  std::vector<uint32_t> known;  // [layers × heads] clusters already handed to the engine
  std::vector<uint32_t> lengths;

  template <class Append>
  void sync(size_t stream, std::span<const uint32_t> offsets, Append&& append) {
    if (offsets.empty()) return;
    const uint32_t count = static_cast<uint32_t>(offsets.size() - 1);
    if (count <= known[stream]) return;
    lengths.clear();
    for (uint32_t c = known[stream]; c < count; ++c) lengths.push_back(offsets[c + 1] - offsets[c]);
    append(offsets[known[stream]], std::span<const uint32_t>(lengths));
    known[stream] = count;
  }
};

// Belady: the whole future of every stream of the request, mapped exactly as Engine::select maps.
void load_futures(const trace::TraceSource& source, size_t request, const RequestPlan& plan,
                  policy::Engine& engine, policy::RequestId id) {
  const trace::RequestInfo& info = source.requests()[request];
  const policy::ModelShape& model = plan.spec.model;
  for (uint32_t layer = 0; layer < model.layers; ++layer) {
    std::vector<policy::StreamFuture> futures(model.kv_heads);
    std::vector<policy::PartitionMap> maps(model.kv_heads,
                                           policy::PartitionMap(plan.spec.geometry));
    ClusterTracker clusters{std::vector<uint32_t>(model.kv_heads, 0), {}};
    auto stream = source.open_layer(request, layer);
    while (stream->next()) {
      const uint32_t step = stream->step();
      const uint32_t context = info.prompt_tokens + step;
      for (uint32_t head = 0; head < model.kv_heads; ++head) {
        maps[head].set_stored_tokens(context);
        clusters.sync(head, stream->partition_offsets(head),
                      [&](uint32_t start, std::span<const uint32_t> lengths) {
                        maps[head].append_clusters(start, lengths);
                      });
        futures[head].push_selection(
            step, maps[head].view(),
            policy::static_region(plan.spec.static_region, plan.spec.geometry.page_tokens, context),
            stream->selection(head));
      }
    }
    for (uint32_t head = 0; head < model.kv_heads; ++head) {
      futures[head].finalize();
      engine.set_future(id, layer, head, std::move(futures[head]));
    }
  }
}

struct RequestOutcome {
  std::vector<policy::PolicyStats> layers;
  policy::PolicyStats total;
  policy::MetadataBytes peak_metadata;
  uint64_t steps = 0;
  std::string decision_log;  // without the header line
};

RequestOutcome replay_request(const trace::TraceSource& source, size_t request,
                              const ReplayOptions& options) {
  const RequestPlan plan = plan_request(source, request, options.cache);
  const trace::RequestInfo& info = source.requests()[request];
  const policy::ModelShape& model = plan.spec.model;
  const uint64_t streams = uint64_t{model.layers} * model.kv_heads;
  const double k = options.cache.buffer_ratio;

  policy::Engine engine(
      {options.cache.segment_pages, options.decision_log.has_value(), options.cache.page_table});
  policy::RequestSpec spec = plan.spec;
  spec.cache_pages = cache_pages_at(plan, streams, info.prompt_tokens, k);
  const policy::RequestId id = engine.add_request(spec);
  if (policy::policy_registry().info(options.cache.policy).needs_future) {
    load_futures(source, request, plan, engine, id);
  }

  std::vector<std::unique_ptr<trace::StepStream>> layers;
  for (uint32_t layer = 0; layer < model.layers; ++layer)
    layers.push_back(source.open_layer(request, layer));
  ClusterTracker clusters{std::vector<uint32_t>(streams, 0), {}};
  uint64_t cache_pages = spec.cache_pages;
  RequestOutcome out;
  for (uint32_t step = 0; step < info.decode_steps; ++step) {
    const uint32_t context = info.prompt_tokens + step;
    const uint64_t wanted = cache_pages_at(plan, streams, context, k);
    if (wanted != cache_pages) engine.set_cache_pages(id, cache_pages = wanted);
    engine.begin_step(id, step, context);
    for (uint32_t layer = 0; layer < model.layers; ++layer) {
      trace::StepStream& stream = *layers[layer];
      if (!stream.next() || stream.step() != step) {
        throw InvariantError(fmt::format("trace source: request {} layer {} did not yield step {}",
                                         info.id, layer, step));
      }
      for (uint32_t head = 0; head < model.kv_heads; ++head) {
        if (plan.variable) {
          clusters.sync(size_t{layer} * model.kv_heads + head, stream.partition_offsets(head),
                        [&](uint32_t start, std::span<const uint32_t> lengths) {
                          engine.append_clusters(id, layer, head, start, lengths);
                        });
        }
        engine.select(id, layer, head, stream.selection(head));
      }
    }
    engine.end_step(id);
  }
  out.steps = info.decode_steps;
  out.layers.assign(engine.layer_stats().begin(), engine.layer_stats().end());
  out.total = engine.total_stats();
  out.peak_metadata = engine.metadata().peak;
  if (options.decision_log) {
    out.decision_log = engine.take_decision_log();
    if (out.decision_log.starts_with(policy::kDecisionLogHeader)) {
      out.decision_log.erase(0, std::string_view(policy::kDecisionLogHeader).size());
    }
  }
  engine.remove_request(id);
  return out;
}

}  // namespace

ReplayResult replay(const trace::TraceSource& source, const ReplayOptions& options) {
  const trace::TraceHeader& header = source.header();
  const size_t n = source.requests().size();
  ReplayResult result;
  result.policy = options.cache.policy;
  result.requests = n;
  result.layers.assign(header.model.layers, {});
  options.cache.policy_params();  // an unknown policy fails before any work
  if (!source.header().algorithms.empty()) {
    result.page_bytes = policy::page_bytes({header.model.layers, header.model.kv_heads,
                                            header.model.head_dim, header.model.dtype_bytes},
                                           header.algorithms.front().page_tokens);
  }

  std::ofstream log;
  if (options.decision_log) {
    log.open(*options.decision_log, std::ios::binary | std::ios::trunc);
    if (!log)
      throw InputError(
          fmt::format("cannot write the decision log {}", options.decision_log->string()));
    log << policy::kDecisionLogHeader;
  }

  // Workers take requests in order; the calling thread merges finished ones in request order.
  std::vector<std::optional<RequestOutcome>> outcomes(n);
  std::exception_ptr error;
  std::mutex mutex;
  std::condition_variable ready;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t r; (r = next.fetch_add(1)) < n;) {
      try {
        RequestOutcome o = replay_request(source, r, options);
        std::lock_guard lock(mutex);
        outcomes[r] = std::move(o);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!error) error = std::current_exception();
        next = n;
      }
      ready.notify_all();
    }
  };
  const unsigned threads =
      std::max(1u, std::min<unsigned>(options.threads, static_cast<unsigned>(n)));
  std::vector<std::jthread> workers;
  for (unsigned t = 0; t < threads; ++t) workers.emplace_back(work);

  for (size_t r = 0; r < n; ++r) {
    RequestOutcome o;
    {
      std::unique_lock lock(mutex);
      ready.wait(lock, [&] { return outcomes[r].has_value() || error; });
      if (error) break;
      o = std::move(*outcomes[r]);
      outcomes[r].reset();
    }
    for (size_t l = 0; l < o.layers.size(); ++l) result.layers[l] += o.layers[l];
    result.total += o.total;
    result.request_steps += o.steps;
    if (o.peak_metadata.page_table() > result.peak_metadata.page_table())
      result.peak_metadata = o.peak_metadata;
    if (log.is_open()) log << o.decision_log;
    if (options.progress) options.progress(r + 1, n);
  }
  workers.clear();
  if (error) std::rethrow_exception(error);
  if (log.is_open() && !log.flush()) {
    throw InputError(
        fmt::format("cannot write the decision log {}", options.decision_log->string()));
  }
  return result;
}

}  // namespace spin::sim
