#include "sim/replay.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "common/atomic_file.h"
#include "common/config/config.h"
#include "sim/request_policy.h"

namespace spin::sim {
namespace {

struct RequestOutcome {
  std::vector<policy::PolicyStats> layers;
  policy::PolicyStats total;
  policy::MetadataBytes peak_metadata;
  uint64_t steps = 0;
  std::string decision_log;  // without the header line
};

RequestOutcome replay_request(const trace::TraceSource& source, size_t request,
                              const ReplayOptions& options) {
  // Running ahead as the simulator does by default (the counts do not depend on it).
  RequestPolicy policy(source, request, options.cache, options.decision_log.has_value(), {},
                       config::SimConfig{}.run_ahead);
  if (options.check_invariants) policy.check_invariants_each_step();
  const trace::RequestInfo& info = source.requests()[request];
  for (uint32_t step = 0; step < info.decode_steps; ++step) {
    const double k = options.cache.buffer_ratio;
    policy.step(step, policy.cache_pages_at(info.prompt_tokens + step, k), {k});
  }
  RequestOutcome out;
  out.steps = info.decode_steps;
  out.layers.assign(policy.layers().begin(), policy.layers().end());
  out.total = policy.total();
  out.peak_metadata = policy.peak_metadata();
  if (options.decision_log) out.decision_log = policy.take_decision_log();
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
  for (const trace::AlgorithmInfo& a : header.algorithms) {
    result.page_bytes.push_back(
        policy::page_bytes({header.model.layers, header.model.kv_heads, header.model.head_dim,
                            header.model.dtype_bytes},
                           a.page_tokens));
  }
  std::ranges::sort(result.page_bytes);
  result.page_bytes.erase(std::ranges::unique(result.page_bytes).begin(), result.page_bytes.end());

  // The log goes to FILE.partial, renamed to FILE once complete: a failed replay leaves nothing
  // at FILE.
  std::optional<PartialFile> log;
  if (options.decision_log) {
    log.emplace(*options.decision_log, "the decision log");
    log->stream() << policy::kDecisionLogHeader;
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
    if (log) log->stream() << o.decision_log;
    if (options.progress) options.progress(r + 1, n);
  }
  workers.clear();
  if (error) std::rethrow_exception(error);
  if (log) log->commit();
  return result;
}

}  // namespace spin::sim
