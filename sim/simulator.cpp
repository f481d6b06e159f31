#include "sim/simulator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "common/error.h"
#include "common/policy/budget.h"
#include "common/policy/partition.h"
#include "common/serving/scheduler.h"
#include "common/text.h"
#include "sim/cost_model.h"
#include "sim/des/link.h"
#include "sim/parallel.h"
#include "sim/request_policy.h"
#include "traces/gen/rng.h"

namespace spin::sim {
namespace {

using serving::ModeKind;

// Kernels of one layer on the critical path: QKV GEMM, RoPE and KV write, attention, O GEMM,
// gate-up GEMM, activation, down GEMM. Sparse modes add scoring, top-k and the residency kernel
// (the gather kernel's launch is the fetch's latency).
constexpr unsigned kDenseKernelsPerLayer = 7;
constexpr unsigned kSparseExtraKernels = 3;
// After the layers: final norm, LM head, sampling.
constexpr unsigned kTailKernels = 3;
// vLLM's KV block: dense modes allocate HBM in blocks of this many tokens.
constexpr std::uint32_t kDenseBlockTokens = 16;
// ShadowKV keeps a rank-160 pre-RoPE K per layer on the GPU (spin-paper.md, "Originals").
constexpr std::uint32_t kShadowKvRank = 160;
// RetroInfer's GPU cluster cache is 5% of the context for a 1.8% budget: k = 5/1.8 - 1
// (locality-and-transfer.md, "Default cache sizes in practice").
constexpr double kRetroInferBufferRatio = 5.0 / 1.8 - 1.0;
// A buffer ratio whose cache holds every page of a request (caches are capped at its pages).
constexpr double kEveryPageBufferRatio = 1e9;
// Stream sampling's random stream: seed mixed with this, apart from any other use of the seed.
constexpr std::uint64_t kSamplingSalt = 0x53414d504c455321ull;  // "SAMPLES!"

enum class Fetch { kNone, kGather, kPerPageCopy, kFree };

// What a mode does (docs/simulator.md, "Modes").
struct Mechanics {
  bool host_kv = false;  // KV on host, an HBM page cache (else all KV in HBM)
  bool sparse = false;   // attention over the selected pages (needs the trace's selections)
  Fetch fetch = Fetch::kNone;
  bool cpu_roundtrip_per_layer = false;  // a host decision on every layer's critical path
  double fetch_fraction = 1.0;  // share of a page's bytes on host, fetched on a miss (ShadowKV: V)
  double gpu_bytes_per_token_layer = 0;       // extra per-token HBM state (ShadowKV's low-rank K)
  double extra_flops_per_selected_token = 0;  // per layer (ShadowKV rebuilds K from low rank)
  policy::CacheConfig cache;
  bool recompute = true;  // preemption recomputes (else swaps, or drops a host-KV cache)
};

Mechanics mechanics_of(const serving::Mode& mode, const config::Config& cfg) {
  Mechanics m;
  m.cache = cfg.cache;
  m.sparse = mode.sparse();
  const config::ModelConfig& model = cfg.model;
  switch (mode.kind) {
    case ModeKind::kDense:
    case ModeKind::kDenseOffload:
      m.recompute = mode.kind == ModeKind::kDense;
      break;
    case ModeKind::kSpin:
      m.host_kv = true;
      m.fetch = Fetch::kGather;
      break;
    case ModeKind::kOracle:
    case ModeKind::kIdeal:
      m.host_kv = true;
      m.fetch = mode.kind == ModeKind::kIdeal ? Fetch::kFree : Fetch::kGather;
      m.cache.policy = "belady";
      break;
    case ModeKind::kSparseOriginal:
      if (mode.algorithm == "shadowkv") {
        // V on host, fetched by ShadowKV's own gather kernel; the previous step's chunks reused.
        m.host_kv = true;
        m.fetch = Fetch::kGather;
        m.fetch_fraction = 0.5;
        m.gpu_bytes_per_token_layer = double{kShadowKvRank} * model.dtype_bytes();
        m.extra_flops_per_selected_token =
            2.0 * kShadowKvRank * model.kv_heads * static_cast<double>(model.head_dim);
        m.cache.policy = "prev-step";
        m.cache.buffer_ratio = 0;
      } else if (mode.algorithm == "retroinfer") {
        // A CPU-managed cluster cache: a host round trip per layer, one copy per missed page.
        m.host_kv = true;
        m.fetch = Fetch::kPerPageCopy;
        m.cpu_roundtrip_per_layer = true;
        m.cache.policy = "lru";
        m.cache.buffer_ratio = kRetroInferBufferRatio;
      } else if (mode.algorithm == "seer" || mode.algorithm == "quest" ||
                 mode.algorithm == "token") {
        // GPU-only originals, all KV in HBM. Their policy counts are those of a cache of every
        // page: only a page's first selection misses, and moves nothing (Fetch::kNone).
        m.cache.policy = "lru";
        m.cache.buffer_ratio = kEveryPageBufferRatio;
      } else {
        throw InvariantError(fmt::format(
            "sparse-original:{}: no original mechanisms; a new algorithm adds them here "
            "(docs/simulator.md, \"Adding an algorithm\")",
            mode.algorithm));
      }
      break;
  }
  if (cfg.serving.preemption == serving::Preemption::kRecompute) m.recompute = true;
  if (cfg.serving.preemption == serving::Preemption::kSwap) m.recompute = false;
  if (m.host_kv)
    m.recompute = false;  // the KV is on host already: a preempted request only
                          // loses its cache
  return m;
}

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return (a + b - 1) / b; }

// Bytes reserved per request against a capacity: a request's reservation only grows until it
// is freed.
class Reservations {
 public:
  explicit Reservations(std::uint64_t capacity) : capacity_(capacity) {}
  // Whether the request could hold `total` bytes now.
  bool fits(std::uint64_t id, std::uint64_t total) const {
    const auto it = held_.find(id);
    const std::uint64_t held = it == held_.end() ? 0 : it->second;
    return total <= held || used_ + (total - held) <= capacity_;
  }
  // Raises the request's reservation to `total`; false, changing nothing, if it does not fit.
  bool take(std::uint64_t id, std::uint64_t total) {
    if (!fits(id, total)) return false;
    std::uint64_t& held = held_[id];
    if (total > held) {
      used_ += total - held;
      held = total;
      peak_ = std::max(peak_, used_);
    }
    return true;
  }
  void free(std::uint64_t id) {
    const auto it = held_.find(id);
    if (it == held_.end()) return;
    used_ -= it->second;
    held_.erase(it);
  }
  std::uint64_t capacity() const { return capacity_; }
  std::uint64_t used() const { return used_; }
  std::uint64_t peak() const { return peak_; }

 private:
  std::uint64_t capacity_;
  std::uint64_t used_ = 0, peak_ = 0;
  std::map<std::uint64_t, std::uint64_t> held_;
};

// A request's need and a limit it exceeds, as text: rounded, or in bytes where the rounded forms
// would read the same.
std::pair<std::string, std::string> compared_bytes(std::uint64_t need, std::uint64_t limit) {
  std::string a = binary_bytes(static_cast<double>(need));
  std::string b = binary_bytes(static_cast<double>(limit));
  if (a == b) return {fmt::format("{} B", need), fmt::format("{} B", limit)};
  return {std::move(a), std::move(b)};
}

// All KV in HBM, allocated in blocks as the context grows (vLLM). A request preempted with its
// KV kept (swap) holds its blocks' bytes in host DRAM (hardware.host_memory_gib per GPU) until it
// is admitted again; when host memory cannot hold them, it is recomputed instead.
class DenseMemory final : public serving::MemoryRule {
 public:
  DenseMemory(std::uint64_t capacity_bytes, double bytes_per_token, std::uint64_t host_bytes)
      : kv_(capacity_bytes), swapped_(host_bytes), per_token_(bytes_per_token) {}

  std::uint64_t need(std::uint64_t tokens) const {
    return static_cast<std::uint64_t>(std::ceil(
        static_cast<double>(ceil_div(tokens, kDenseBlockTokens) * kDenseBlockTokens) * per_token_));
  }
  std::string unfit_reason(const serving::RequestState& r) const override {
    const std::uint64_t tokens = std::uint64_t{r.prompt_tokens} + r.tokens;
    if (need(tokens) <= kv_.capacity()) return {};
    const auto [needs, holds] = compared_bytes(need(tokens), kv_.capacity());
    return fmt::format("its KV at {} tokens takes {} of HBM, and the KV pool holds {}", tokens,
                       needs, holds);
  }
  bool admit(const serving::RequestState& r) override {
    if (!kv_.take(r.id, need(r.resumes() ? r.context_tokens() : r.prefill_target))) return false;
    swapped_.free(r.id);  // a resumed request's KV comes back to HBM
    return true;
  }
  bool grow(const serving::RequestState& r, std::uint32_t context_tokens) override {
    return kv_.take(r.id, need(context_tokens));
  }
  bool keep(const serving::RequestState& r) override {
    return swapped_.take(r.id, need(r.context_tokens()));
  }
  void release(const serving::RequestState& r) override { kv_.free(r.id); }
  std::uint64_t used() const { return kv_.used(); }
  std::uint64_t host_bytes() const { return swapped_.capacity(); }
  std::uint64_t host_peak_bytes() const { return swapped_.peak(); }

 private:
  Reservations kv_;       // bytes of HBM (over all GPUs) by request id
  Reservations swapped_;  // bytes of host DRAM (over all GPUs) by preempted request id
  double per_token_;
};

// KV on host; each request holds its cache (budgets.h), static region and summaries in HBM, and
// while it prefills, its prompt's KV. Host DRAM (hardware.host_memory_gib per GPU) holds every
// admitted request's KV: the host share of its final context (prompt + tokens, in whole pages),
// reserved at its first admission and held until it finishes, preempted or not (its KV stays on
// host; a preempted host-KV request resumes without recompute). So a running request never needs
// more host memory, and a request whose KV the host cannot hold waits (or, alone, is rejected).
class HostKvMemory final : public serving::MemoryRule {
 public:
  using Footprint = std::function<policy::RequestFootprint(std::uint64_t id, std::uint32_t ctx)>;
  HostKvMemory(const policy::BudgetParams& params, std::uint64_t pool_pages,
               std::uint64_t page_bytes, Footprint footprint, std::uint32_t page_tokens,
               std::uint64_t streams, std::uint64_t host_bytes, double host_bytes_per_token)
      : budgets_(params, pool_pages),
        page_bytes_(page_bytes),
        footprint_(std::move(footprint)),
        page_tokens_(page_tokens),
        streams_(streams),
        host_(host_bytes),
        host_per_token_(host_bytes_per_token) {}

  policy::RequestFootprint prefill_footprint(const serving::RequestState& r) const {
    policy::RequestFootprint f = footprint_(r.id, r.prefill_target);
    f.static_pages += prompt_pages(r);
    return f;
  }
  // The pages of the prompt's KV over all streams, held in HBM from prefill to offload.
  std::uint64_t prompt_pages(const serving::RequestState& r) const {
    return ceil_div(r.prefill_target, page_tokens_) * streams_;
  }
  // The host bytes the request's KV takes at its final context.
  std::uint64_t host_need(const serving::RequestState& r) const {
    const std::uint64_t tokens =
        ceil_div(std::uint64_t{r.prompt_tokens} + r.tokens, page_tokens_) * page_tokens_;
    return static_cast<std::uint64_t>(std::ceil(static_cast<double>(tokens) * host_per_token_));
  }
  // Alone on the GPU, the request fits while it prefills (its prompt's KV in HBM; a host-KV
  // request is never recomputed, so it prefills its prompt only) and at its final context (its
  // cache, static region and summaries, which grow with the context; its KV is on host).
  std::string unfit_reason(const serving::RequestState& r) const override {
    serving::RequestState start = r;
    start.prefill_target = r.prompt_tokens;
    const std::uint64_t hbm = budgets_.hbm_pages();
    const auto pages = [&](std::uint64_t n) {
      return fmt::format("{} pages ({})", n, binary_bytes(static_cast<double>(n * page_bytes_)));
    };
    if (const std::uint64_t need = budgets_.admission_pages(prefill_footprint(start)); need > hbm)
      return fmt::format(
          "its prefill (the prompt's {} tokens of KV in HBM) needs {} of the KV "
          "pool's {}",
          r.prompt_tokens, pages(need), pages(hbm));
    const std::uint32_t tokens = r.prompt_tokens + r.tokens;
    if (const std::uint64_t need = budgets_.admission_pages(footprint_(r.id, tokens)); need > hbm)
      return fmt::format(
          "at {} tokens its minimum cache, static region and summaries need {} of "
          "the KV pool's {}",
          tokens, pages(need), pages(hbm));
    if (host_need(r) > host_.capacity()) {
      const auto [needs, holds] = compared_bytes(host_need(r), host_.capacity());
      return fmt::format(
          "its KV at {} tokens takes {} of host memory, which holds {} "
          "(hardware.host_memory_gib)",
          tokens, needs, holds);
    }
    return {};
  }
  bool admit(const serving::RequestState& r) override {
    // A request preempted before holds its reservation already.
    const std::uint64_t need = host_need(r);
    if (!host_.fits(r.id, need)) return false;
    const policy::RequestFootprint f =
        r.resumes() ? footprint_(r.id, r.context_tokens()) : prefill_footprint(r);
    if (!budgets_.can_admit(f)) return false;
    budgets_.admit(r.id, f);
    budgets_.rebalance();
    host_.take(r.id, need);
    return true;
  }
  bool grow(const serving::RequestState& r, std::uint32_t context_tokens) override {
    const policy::RequestFootprint before = budgets_.footprint(r.id);
    const bool ok = budgets_.update(r.id, footprint_(r.id, context_tokens));
    if (ok) {
      budgets_.rebalance();
    } else if (releasing()) {
      budgets_.update(r.id, before);  // the request waits for the memory being released
    }
    return ok;
  }
  void release(const serving::RequestState& r) override {
    budgets_.release(r.id);
    budgets_.rebalance();
    if (r.phase == serving::Phase::kFinished) host_.free(r.id);
  }
  // The request's prefill ends and its prompt's KV starts on its way to host; that KV stays in
  // HBM until end_offload (the copy's end), as an entry of its own, so that neither the
  // request's next footprint nor its finishing frees it early. The pages only move between
  // entries, so they fit.
  void start_offload(const serving::RequestState& r) {
    const std::uint64_t pages = prompt_pages(r);
    budgets_.update(r.id, footprint_(r.id, r.prefill_target));
    budgets_.admit(
        offload_key(r.id),
        {.mandatory_pages = 0, .static_pages = pages, .summary_pages = 0, .dynamic_pages = 0});
    ++offloading_;
    offloading_pages_ += pages;
    offloading_peak_pages_ = std::max(offloading_peak_pages_, offloading_pages_);
    ++offloads_held_;
  }
  void end_offload(std::uint64_t id) {
    offloading_pages_ -= budgets_.footprint(offload_key(id)).static_pages;
    --offloading_;
    budgets_.release(offload_key(id));
    budgets_.rebalance();
  }
  bool releasing() const override { return offloading_ > 0; }
  // Prompts held past their prefill so far, and the most pages they held at once.
  std::uint64_t offloads_held() const { return offloads_held_; }
  std::uint64_t offloading_peak_pages() const { return offloading_peak_pages_; }
  std::uint64_t cache_pages(std::uint64_t id) const { return budgets_.cache_pages(id); }
  double buffer_ratio(std::uint64_t id) const { return budgets_.buffer_ratio(id); }
  std::uint64_t used_pages() const { return budgets_.used_pages(); }
  std::uint64_t host_bytes() const { return host_.capacity(); }
  std::uint64_t host_peak_bytes() const { return host_.peak(); }

 private:
  // Budget entries of prompts on their way to host, apart from their requests' ids (trace indices).
  static std::uint64_t offload_key(std::uint64_t id) { return id | (std::uint64_t{1} << 63); }

  policy::BudgetManager budgets_;
  std::uint64_t page_bytes_;  // of one stream's page in HBM
  Footprint footprint_;
  std::uint64_t page_tokens_;
  std::uint64_t streams_;
  Reservations host_;  // bytes of host DRAM (over all GPUs) by request id
  double host_per_token_;
  // Prompts held for a copy now, their pages, the most pages held at once, and prompts held so far.
  std::uint64_t offloading_ = 0, offloading_pages_ = 0, offloading_peak_pages_ = 0,
                offloads_held_ = 0;
};

// Running ahead (docs/simulator.md): the caches the running requests will have at their next
// steps, foreseen by copies of the scheduler and the budgets run ahead of the simulation.
// Admissions, growth, preemptions and releases follow from the iteration count; only arrivals
// read the clock, and the copies guess each future iteration's duration as the last decode-only
// one's (prefill iterations are longer, so arrivals come no earlier than guessed). A forecast
// that proves wrong (an arrival admitted earlier than guessed) is made again from the
// simulation's state. A wrong forecast costs time, never a different result: each request
// checks its predictions.
class CacheForecast {
 public:
  explicit CacheForecast(std::size_t requests) : ahead_(requests) {}

  // A new forecast from the simulation's state once it has planned iteration `iteration`.
  void reset(const serving::Scheduler& scheduler, const HostKvMemory& memory,
             const serving::IterationPlan& plan, std::uint64_t iteration) {
    memory_.emplace(memory);
    scheduler_ = std::make_unique<serving::Scheduler>(scheduler, *memory_);
    plan_ = plan;
    iteration_ = iteration;
    for (Ahead& a : ahead_) a = {};
  }
  // Plans the copies' iterations up to `iteration` + `ahead` (or until every request has
  // finished); iteration `iteration` started at `now`, and each later one takes `iteration_ns`.
  void extend(std::uint64_t iteration, TimeNs now, TimeNs iteration_ns, std::uint32_t ahead) {
    if (!scheduler_) return;
    TimeNs end = now + (iteration_ - iteration + 1) * iteration_ns;  // of the copies' iteration
    while (iteration_ < iteration + ahead && !scheduler_->done()) {
      scheduler_->complete(plan_, end);
      plan_ = scheduler_->plan(end);
      while (plan_.empty() && !scheduler_->done()) {
        const TimeNs next = scheduler_->next_arrival();
        if (next == std::numeric_limits<TimeNs>::max()) return;  // the simulation will throw
        end = std::max(end, next);
        plan_ = scheduler_->plan(end);
      }
      end += iteration_ns;
      ++iteration_;
      for (const serving::PrefillChunk& c : plan_.prefills)
        if (c.last) record(c.id);
      for (std::uint64_t id : plan_.decodes) record(id);
    }
  }
  // Whether the forecast had request `id` at `step` with `cache_pages`; forgets its earlier steps.
  bool check(std::uint64_t id, std::uint32_t step, std::uint64_t cache_pages) {
    Ahead& a = ahead_[id];
    if (step < a.first || step >= a.first + a.caches.size() - a.head) return false;
    a.head += step - a.first;
    a.first = step;
    if (a.head > 64 && 2 * a.head > a.caches.size()) {
      a.caches.erase(a.caches.begin(), a.caches.begin() + static_cast<std::ptrdiff_t>(a.head));
      a.head = 0;
    }
    return a.caches[a.head] == cache_pages;
  }
  // The forecast caches of request `id` at the steps after `step`, as far as they go.
  std::span<const std::uint64_t> after(std::uint64_t id, std::uint32_t step) const {
    const Ahead& a = ahead_[id];
    const std::size_t at = a.head + (step + 1 - std::min(step + 1, a.first));
    if (step + 1 < a.first || at >= a.caches.size()) return {};
    return std::span<const std::uint64_t>(a.caches).subspan(at);
  }

 private:
  // One request's forecast: caches[head + j] at step first + j.
  struct Ahead {
    std::uint32_t first = 0;
    std::size_t head = 0;
    std::vector<std::uint64_t> caches;
  };
  void record(std::uint64_t id) {
    Ahead& a = ahead_[id];
    const std::uint32_t step = scheduler_->request(id).generated;
    if (a.head == a.caches.size() || step != a.first + (a.caches.size() - a.head))
      a = {step, 0, {}};
    a.caches.push_back(memory_->cache_pages(id));
  }

  std::optional<HostKvMemory> memory_;
  std::unique_ptr<serving::Scheduler> scheduler_;
  serving::IterationPlan plan_;
  std::uint64_t iteration_ = 0;
  std::vector<Ahead> ahead_;  // by request id
};

// Chrome trace events (Perfetto opens them): spans on lanes, and counters.
class Timeline {
 public:
  void span(std::string_view lane, std::string_view name, TimeNs begin, TimeNs end,
            std::string_view args = {}) {
    add(fmt::format(R"({{"name":"{}","ph":"X","pid":0,"tid":{},"ts":{},"dur":{}{}}})", name,
                    lane_id(lane), us(begin), us(end - begin),
                    args.empty() ? "" : fmt::format(R"(,"args":{{{}}})", args)));
  }
  void counter(std::string_view name, TimeNs at, std::string_view key, double value) {
    add(fmt::format(R"({{"name":"{}","ph":"C","pid":0,"ts":{},"args":{{"{}":{:.6g}}}}})", name,
                    us(at), key, value));
  }
  std::string finish() {
    std::string lanes;
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
      lanes += fmt::format(
          R"({{"name":"thread_name","ph":"M","pid":0,"tid":{},"args":{{"name":"{}"}}}},)", i,
          lanes_[i]);
    }
    return fmt::format("{{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n{}{}\n]}}\n", lanes, body_);
  }

 private:
  static std::string us(TimeNs ns) { return fmt::format("{}.{:03}", ns / 1000, ns % 1000); }
  std::size_t lane_id(std::string_view lane) {
    const auto it = std::find(lanes_.begin(), lanes_.end(), lane);
    if (it != lanes_.end()) return static_cast<std::size_t>(it - lanes_.begin());
    lanes_.emplace_back(lane);
    return lanes_.size() - 1;
  }
  void add(const std::string& event) {
    if (!body_.empty()) body_ += ",\n";
    body_ += event;
  }
  std::vector<std::string> lanes_;
  std::string body_;
};

// Counts of a sample scaled to what they stand for (rounded).
policy::PolicyStats scaled(const policy::PolicyStats& s, double f) {
  const auto r = [f](std::uint64_t v) {
    return static_cast<std::uint64_t>(std::llround(static_cast<double>(v) * f));
  };
  policy::PolicyStats o;
  o.steps = r(s.steps);
  o.accesses = r(s.accesses);
  o.hits = r(s.hits);
  o.misses = o.accesses - std::min(o.accesses, o.hits);
  o.bypassed = r(s.bypassed);
  o.static_accesses = r(s.static_accesses);
  o.victims = r(s.victims);
  o.fetched_bytes = r(s.fetched_bytes);
  return o;
}

// The model's durations in whole ns. Beyond 10^18 ns (32 years) the inputs are nonsense (a
// hardware or model number far off), and the int64 clock would overflow: an error.
TimeNs ns(double t) {
  if (!(t < 1e18)) {
    throw InputError(fmt::format(
        "the model gave one operation {:.3g} ns (over 32 years): check the hardware profile's "
        "bandwidths, FLOP/s and latencies and the model's sizes",
        t));
  }
  return static_cast<TimeNs>(std::llround(std::max(0.0, t)));
}

class Simulation {
 public:
  Simulation(const config::Config& cfg, const trace::TraceSource& source, const SimOptions& opt)
      : cfg_(cfg),
        source_(source),
        opt_(opt),
        mode_(cfg.serving.parsed_mode()),
        mech_(mechanics_of(mode_, cfg)),
        cost_(cfg.model, cfg.hardware, cfg.serving.tensor_parallel),
        share_(1.0 / cfg.serving.tensor_parallel),
        h2d_(events_, cfg.hardware.pcie_h2d_gbps),
        d2h_(events_, cfg.hardware.pcie_d2h_gbps),
        pool_(opt.threads) {
    validate();
    setup_memory();
    setup_requests();
    if (opt_.timeline) {
      h2d_.set_utilisation_hook([this](TimeNs t, double u) { link_counter("PCIe H2D", t, u); });
      d2h_.set_utilisation_hook([this](TimeNs t, double u) { link_counter("PCIe D2H", t, u); });
    }
  }

  SimResult run() {
    events_.schedule(0, [this] { start_iteration(); });
    while (events_.step()) {
    }
    if (!scheduler_->done())
      throw InvariantError("simulator: the event queue ran dry with requests unfinished");
    return finish();
  }

 private:
  struct Work {  // one policy step of one request in this iteration
    std::uint64_t id;
    std::uint32_t step;
    bool warm;  // the prompt's KV is still in HBM: misses move no bytes
  };

  void validate() {
    result_.mode = mode_.name();
    result_.sampling = cfg_.sim.stream_sampling;
    result_.sampled_layer_share =
        result_.sampling < 1 ? static_cast<double>(sampled_layer_count()) / cfg_.model.layers : 1;
    if (!mode_.sparse()) return;
    if (result_.sampling < 1 && mech_.cache.pool_scope == policy::PoolScope::kRequest) {
      throw InputError(
          "sim.stream_sampling < 1 samples layers, whose pools must stay whole: it needs "
          "cache.pool_scope request-layer or stream, not request");
    }
    const auto& algs = source_.header().algorithms;
    for (std::size_t r = 0; r < source_.requests().size(); ++r) {
      const trace::AlgorithmInfo& a = source_.algorithm_of(r);
      if (a.name != mode_.algorithm) {
        std::vector<std::string> names;
        for (const auto& x : algs) names.push_back(x.name);
        throw InputError(fmt::format(
            "serving.mode is {} but trace request {} was recorded with algorithm '{}' (the "
            "trace's algorithms: {}); choose a mode with one of them",
            mode_.name(), source_.requests()[r].id, a.name, fmt::join(names, ", ")));
      }
    }
  }

  void setup_memory() {
    result_.weight_bytes = cost_.weight_bytes_per_gpu();
    const double usable =
        cfg_.serving.gpu_memory_utilization * static_cast<double>(cfg_.hardware.hbm_bytes());
    if (usable <= static_cast<double>(result_.weight_bytes)) {
      throw InputError(fmt::format(
          "the model's weights ({:.1f} GiB per GPU) do not fit in hardware.hbm_gib × "
          "serving.gpu_memory_utilization ({:.1f} GiB)",
          static_cast<double>(result_.weight_bytes) / (1ull << 30), usable / (1ull << 30)));
    }
    // Pages hold every KV head of a stream's layer; the pool is the sum over the GPUs.
    result_.kv_pool_bytes =
        (static_cast<std::uint64_t>(usable) - result_.weight_bytes) * cfg_.serving.tensor_parallel;
    const config::ModelConfig& model = cfg_.model;
    if (mode_.sparse()) {
      const trace::AlgorithmInfo& a = source_.algorithm_of(0);
      page_tokens_ = a.page_tokens;
      result_.page_bytes = model.page_bytes(page_tokens_);
      summary_per_token_layer_ = summary_bytes_per_token(mode_.algorithm, model) * model.kv_heads +
                                 mech_.gpu_bytes_per_token_layer;
    }
    streams_ = std::uint64_t{model.layers} * model.kv_heads;
    if (mech_.host_kv) {
      policy::BudgetParams params;
      params.k_min = std::min(cfg_.serving.min_buffer_ratio, mech_.cache.buffer_ratio);
      params.k_max = mech_.cache.buffer_ratio;
      params.watermark = cfg_.serving.free_watermark;
      host_memory_ = std::make_unique<HostKvMemory>(
          params, result_.kv_pool_bytes / result_.page_bytes, result_.page_bytes,
          [this](std::uint64_t id, std::uint32_t ctx) {
            return sizing(id).footprint(ctx, summary_pages(ctx));
          },
          page_tokens_, streams_, cfg_.hardware.host_memory_bytes() * cfg_.serving.tensor_parallel,
          static_cast<double>(cost_.kv_bytes_per_token_layer()) * model.layers *
              mech_.fetch_fraction);
      result_.host_memory_bytes = host_memory_->host_bytes();
      memory_ = host_memory_.get();
      if (cfg_.sim.run_ahead > 1)
        forecast_ = std::make_unique<CacheForecast>(source_.requests().size());
    } else {
      const double per_token =
          static_cast<double>(cost_.kv_bytes_per_token_layer()) * model.layers +
          summary_per_token_layer_ * model.layers;
      dense_memory_ = std::make_unique<DenseMemory>(
          result_.kv_pool_bytes, per_token,
          cfg_.hardware.host_memory_bytes() * cfg_.serving.tensor_parallel);
      if (!mech_.recompute) result_.host_memory_bytes = dense_memory_->host_bytes();
      memory_ = dense_memory_.get();
    }
  }

  // The KV of `tokens` tokens over all layers (one copy: all GPUs together).
  double kv_bytes(std::uint64_t tokens) const {
    return static_cast<double>(tokens) * static_cast<double>(cost_.kv_bytes_per_token_layer()) *
           cfg_.model.layers;
  }

  std::uint64_t summary_pages(std::uint32_t ctx) const {
    const double bytes = summary_per_token_layer_ * cfg_.model.layers * ctx;
    return static_cast<std::uint64_t>(std::ceil(bytes / static_cast<double>(result_.page_bytes)));
  }

  const RequestSizing& sizing(std::uint64_t id) {
    auto& s = sizings_[id];
    if (!s) s = std::make_unique<RequestSizing>(source_, id, mech_.cache);
    return *s;
  }

  void setup_requests() {
    const auto infos = source_.requests();
    std::vector<serving::RequestState> states;
    result_.requests.resize(infos.size());
    sizings_.resize(infos.size());
    policies_.resize(infos.size());
    prompt_copies_.assign(infos.size(), {});
    plan_sampling(infos);
    for (std::size_t i = 0; i < infos.size(); ++i) {
      const trace::RequestInfo& info = infos[i];
      RequestRecord& rec = result_.requests[i];
      rec.trace_id = info.id;
      rec.arrival_ns = info.arrival_us * 1000;
      rec.prompt_tokens = info.prompt_tokens;
      rec.output_tokens =
          std::max<std::uint32_t>(1, std::min(info.output_tokens, info.decode_steps));
      rec.truncated = info.decode_steps < info.output_tokens;
      serving::RequestState s;
      s.id = i;
      s.arrival_ns = rec.arrival_ns;
      s.prompt_tokens = info.prompt_tokens;
      s.tokens = rec.output_tokens;
      states.push_back(s);
    }
    serving::SchedulerLimits limits{cfg_.serving.max_batch_requests, cfg_.serving.max_batch_tokens,
                                    mech_.recompute};
    scheduler_ = std::make_unique<serving::Scheduler>(std::move(states), limits, *memory_);
    result_.policy_layers.assign(cfg_.model.layers, {});
  }

  std::uint64_t kv_used_bytes() const {
    return host_memory_ ? host_memory_->used_pages() * result_.page_bytes : dense_memory_->used();
  }

  // Stream sampling: k = max(1, round(layers × rate)) layers per request, stratified over the
  // requests. The requests are ranked by their policy work (decode steps × mean context, largest
  // first, so that a last, partial cycle holds the smallest; ties in a seeded order) and cut into
  // cycles of c = ceil(layers / k) consecutive ranks; each cycle draws a seeded permutation of
  // the layers, and its i-th request takes the k layers at positions i · k, …, i · k + k − 1
  // (cyclically). So every cycle samples every layer (a few twice where k does not divide the
  // layers), by requests of about the same size, and a partial cycle (fewer requests than c)
  // samples distinct layers, while each (request, layer) is still sampled with probability
  // k / layers. Neither the layers whose locality differs most (the
  // generator's poorly-local ones carry about a quarter of the misses) nor the longest requests
  // are then over- or under-represented by chance, whatever order the trace lists them in.
  std::uint32_t sampled_layer_count() const {
    const std::uint32_t layers = cfg_.model.layers;
    return static_cast<std::uint32_t>(
        std::clamp<long long>(std::llround(layers * result_.sampling), 1, layers));
  }
  void plan_sampling(std::span<const trace::RequestInfo> infos) {
    if (result_.sampling >= 1) return;
    gen::Rng rng(gen::mix(cfg_.seed, kSamplingSalt));
    const auto permutation = [&](std::size_t n) {  // Fisher-Yates
      std::vector<std::uint32_t> p(n);
      for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint32_t>(i);
      for (std::size_t i = n; i > 1; --i) {
        const std::uint32_t j = gen::uniform_below(static_cast<std::uint32_t>(rng.next()),
                                                   static_cast<std::uint32_t>(i));
        std::swap(p[i - 1], p[j]);
      }
      return p;
    };
    std::vector<std::uint32_t> by_work = permutation(infos.size());  // the ties' order
    const auto work = [&](std::uint32_t id) {
      const trace::RequestInfo& r = infos[id];
      return static_cast<double>(r.decode_steps) *
             (static_cast<double>(r.prompt_tokens) + 0.5 * static_cast<double>(r.decode_steps));
    };
    std::stable_sort(by_work.begin(), by_work.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return work(a) > work(b); });
    const std::uint32_t layers = cfg_.model.layers;
    const std::uint32_t k = sampled_layer_count();
    const std::uint32_t cycle = (layers + k - 1) / k;
    sampled_layers_.assign(infos.size() * k, 0);
    std::vector<std::uint32_t> order;
    for (std::size_t rank = 0; rank < by_work.size(); ++rank) {
      const std::uint32_t i = static_cast<std::uint32_t>(rank % cycle);
      if (i == 0) order = permutation(layers);
      std::uint32_t* chosen = sampled_layers_.data() + std::size_t{by_work[rank]} * k;
      for (std::uint32_t j = 0; j < k; ++j) chosen[j] = order[(i * k + j) % layers];
      std::sort(chosen, chosen + k);
    }
  }
  std::vector<std::uint32_t> sampled_layers(std::uint64_t id) const {
    if (result_.sampling >= 1) return {};
    const std::uint32_t k = sampled_layer_count();
    const auto first = sampled_layers_.begin() + static_cast<std::ptrdiff_t>(id * k);
    return std::vector<std::uint32_t>(first, first + k);
  }

  void drop_policy(std::uint64_t id) {
    if (policies_[id]) result_.run_ahead_rewinds += policies_[id]->rewinds();
    policies_[id].reset();
  }

  RequestPolicy& policy(std::uint64_t id) {
    auto& p = policies_[id];
    if (!p) {
      p = std::make_unique<RequestPolicy>(source_, id, mech_.cache, false, sampled_layers(id),
                                          cfg_.sim.run_ahead);
      const std::uint32_t resume_step = scheduler_->request(id).generated;
      if (resume_step > 0) p->skip_to(resume_step);
    }
    return *p;
  }

  bool layer_detail() const { return opt_.timeline && iteration_ < opt_.timeline_layer_iterations; }
  void link_counter(std::string_view name, TimeNs t, double u) {
    if (layer_detail()) timeline_.counter(name, t, "utilisation", u);
  }

  void start_iteration() {
    const TimeNs now = events_.now();
    plan_ = scheduler_->plan(now);
    for (std::uint64_t id : plan_.rejected) {
      RequestRecord& rec = result_.requests[id];
      rec.rejected = true;
      rec.rejected_reason = memory_->unfit_reason(scheduler_->request(id));
      if (rec.rejected_reason.empty())
        rec.rejected_reason = "it does not fit while nothing else runs";
    }
    // Swaps run before the iteration, on the critical path, as vLLM's are: the KV of requests
    // preempted with their KV kept goes to host (the HBM it leaves is what the plan gave to
    // others), and that of requests resumed comes back.
    // A swap moves what the request holds: its blocks, with the summaries of a sparse original.
    const auto swapped = [this](std::uint64_t id) {
      return static_cast<double>(dense_memory_->need(scheduler_->request(id).context_tokens()));
    };
    double swap_out = 0, swap_in = 0;
    for (std::uint64_t id : plan_.preempted) {
      preempted(id);
      if (!mech_.host_kv && scheduler_->request(id).resumes()) swap_out += swapped(id);
    }
    for (std::uint64_t id : plan_.resumed) {
      if (!mech_.host_kv) swap_in += swapped(id);
    }
    if (plan_.empty()) {
      if (scheduler_->done()) return;
      // Nothing runs: wait for the next arrival, or for a prompt's KV to leave HBM.
      const TimeNs next = scheduler_->next_arrival();
      const bool arrives = next != std::numeric_limits<TimeNs>::max();
      if (!arrives && !memory_->releasing())
        throw InvariantError("simulator: requests wait but nothing runs and none arrive");
      idle_ = true;
      if (arrives)
        events_.schedule(std::max(next, now), [this, wake = ++wakes_] { wake_up(wake); });
      return;
    }
    iteration_start_ = now;
    kv_used_at_start_ = kv_used_bytes();
    result_.kv_used_peak_bytes = std::max(result_.kv_used_peak_bytes, kv_used_at_start_);
    run_policies();
    // The layers start once both swaps have ended.
    pending_ = 1 + (swap_out > 0) + (swap_in > 0);
    const auto layers = [this] {
      if (--pending_ > 0) return;
      start_layer(0);
    };
    const auto swap = [&](Link& link, double bytes, double gbps, std::string_view lane,
                          std::string_view name) {
      if (bytes <= 0) return;
      link.start(bytes * share_, gbps, ns(cfg_.hardware.pcie_latency_us * 1e3),
                 [this, now, layers, lane, name] {
                   if (opt_.timeline) timeline_.span(lane, name, now, events_.now());
                   layers();
                 });
    };
    swap(d2h_, swap_out, cfg_.hardware.pcie_d2h_gbps, "copy D2H", "swap out");
    swap(h2d_, swap_in, cfg_.hardware.pcie_h2d_gbps, "copy H2D", "swap in");
    layers();
  }

  // An idle simulation starts its next iteration at the latest wake-up it was given.
  void wake_up(std::uint64_t wake) {
    if (!idle_ || wake != wakes_) return;
    idle_ = false;
    start_iteration();
  }

  void preempted(std::uint64_t id) {
    ++result_.preemptions;
    ++result_.requests[id].preemptions;
    ++preempted_this_iteration_;
    drop_policy(id);  // a resumed request starts with a cold cache
  }

  // Steps the policy core of every request that attends this iteration, on the worker threads.
  void run_policies() {
    work_.clear();
    for (const serving::PrefillChunk& c : plan_.prefills) {
      if (c.last) work_.push_back({c.id, scheduler_->request(c.id).generated, true});
    }
    for (std::uint64_t id : plan_.decodes)
      work_.push_back({id, scheduler_->request(id).generated, false});
    const std::size_t layers = cfg_.model.layers;
    layer_selected_.assign(layers, 0.0);
    layer_miss_bytes_.assign(layers, 0);
    layer_dense_bytes_.assign(layers, 0);
    iteration_hits_ = iteration_misses_ = 0;
    double dense_bytes = 0;
    static_pages_ = 0;
    summary_bytes_ = 0;
    selected_tokens_ = 0;
    for (const Work& w : work_) {
      if (w.warm) continue;  // the prompt's last position attends inside prefill attention
      const std::uint32_t ctx = scheduler_->request(w.id).prompt_tokens + w.step;
      dense_bytes +=
          static_cast<double>(ctx) * static_cast<double>(cost_.kv_bytes_per_token_layer());
      summary_bytes_ += summary_per_token_layer_ * ctx * share_;
      if (mode_.sparse())
        static_pages_ +=
            std::uint64_t{cfg_.model.kv_heads} *
            policy::static_page_count(sizing(w.id).spec.static_region, page_tokens_, ctx);
    }
    std::fill(layer_dense_bytes_.begin(), layer_dense_bytes_.end(), dense_bytes);
    if (!mode_.sparse()) return;

    // Policy objects are created here (they open the trace), then stepped in parallel.
    std::vector<RequestPolicy*> policies;
    std::vector<std::uint64_t> caches;
    std::vector<double> ratios;  // predict the next steps' caches (running ahead)
    for (const Work& w : work_) {
      policies.push_back(&policy(w.id));
      const std::uint32_t ctx = scheduler_->request(w.id).prompt_tokens + w.step;
      ratios.push_back(host_memory_ ? host_memory_->buffer_ratio(w.id) : mech_.cache.buffer_ratio);
      caches.push_back(host_memory_ ? host_memory_->cache_pages(w.id)
                                    : policies.back()->cache_pages_at(ctx, ratios.back()));
    }
    if (forecast_) {  // a forecast that missed one of this iteration's caches is made again
      bool right = true;
      for (std::size_t i = 0; i < work_.size(); ++i)
        right = forecast_->check(work_[i].id, work_[i].step, caches[i]) && right;
      if (!right) forecast_->reset(*scheduler_, *host_memory_, plan_, iteration_);
      forecast_->extend(iteration_, iteration_start_, last_decode_ns_, cfg_.sim.run_ahead);
    }
    // Every lane that must run, of every request, on the worker threads (a request running ahead
    // has lanes to run only every few iterations, so requests alone would leave threads idle).
    // The threads take them longest first (a lane's work grows with its context and its block's
    // steps), so that a long lane does not start last and leave the others idle.
    struct Lane {
      std::uint64_t work;
      RequestPolicy* policy;
      std::uint32_t lane;
    };
    std::vector<Lane> lanes;
    const std::uint32_t run_ahead = cfg_.sim.run_ahead;
    for (std::size_t i = 0; i < work_.size(); ++i) {
      const std::uint32_t steps = source_.requests()[work_[i].id].decode_steps;
      if (work_[i].step >= steps) continue;
      RequestPolicy::Outlook outlook{ratios[i]};
      if (forecast_) outlook.forecast = forecast_->after(work_[i].id, work_[i].step);
      // Blocks end together, every sim.run_ahead iterations: the lanes of all requests then run
      // at once (a sample's one or two lanes per request would otherwise run one by one), and
      // measured on the issue-scale run this is faster for exact runs too (docs/benchmarks.md).
      outlook.block_steps = run_ahead - static_cast<std::uint32_t>(iteration_ % run_ahead);
      const std::uint32_t n = policies[i]->begin_step(work_[i].step, caches[i], outlook);
      const std::uint64_t work =
          std::uint64_t{scheduler_->request(work_[i].id).prompt_tokens + work_[i].step} *
          std::min(outlook.block_steps, steps - work_[i].step);
      for (std::uint32_t lane = 0; lane < n; ++lane) lanes.push_back({work, policies[i], lane});
    }
    std::stable_sort(lanes.begin(), lanes.end(),
                     [](const Lane& a, const Lane& b) { return a.work > b.work; });
    pool_.run(lanes.size(), [&](std::size_t k) { lanes[k].policy->run_lane(lanes[k].lane); });
    for (std::size_t i = 0; i < work_.size(); ++i) {
      if (work_[i].step < source_.requests()[work_[i].id].decode_steps) policies[i]->end_step();
    }
    for (std::size_t i = 0; i < work_.size(); ++i) {
      const Work& w = work_[i];
      if (w.step >= source_.requests()[w.id].decode_steps) continue;
      RequestRecord& rec = result_.requests[w.id];
      const auto step_layers = policies[i]->step_layers();
      const auto trace_layers = policies[i]->trace_layers();
      const double sampled_layers = static_cast<double>(trace_layers.size());
      const bool exact = trace_layers.size() == layers;
      // A sample stands for every layer: each layer gets the sampled layers' mean (summed over
      // the run in sampled_layer_mean_, and given to every layer at its end).
      policy::PolicyStats sampled;
      for (std::size_t j = 0; j < trace_layers.size(); ++j) {
        sampled += step_layers[j];
        if (exact) result_.policy_layers[trace_layers[j]] += step_layers[j];
      }
      if (!exact) sampled_layer_mean_ += scaled(sampled, 1.0 / sampled_layers);
      for (std::size_t l = 0; l < layers && !w.warm; ++l) {
        const double accesses = exact ? static_cast<double>(step_layers[l].accesses)
                                      : static_cast<double>(sampled.accesses) / sampled_layers;
        const double misses = exact ? static_cast<double>(step_layers[l].misses)
                                    : static_cast<double>(sampled.misses) / sampled_layers;
        layer_selected_[l] += accesses;
        layer_miss_bytes_[l] += misses * static_cast<double>(result_.page_bytes);
      }
      const policy::PolicyStats t =
          exact ? policies[i]->step_total() : scaled(sampled, layers / sampled_layers);
      rec.policy += t;
      result_.policy_total += t;
      iteration_hits_ += t.hits;
      iteration_misses_ += t.misses;
      if (!w.warm) selected_tokens_ += static_cast<double>(t.accesses) * page_tokens_;
    }
    metadata_sample();
  }

  void metadata_sample() {
    std::uint64_t two_level = 0, flat = 0;
    for (const auto& p : policies_) {
      if (!p) continue;
      const policy::MetadataBytes m = p->peak_metadata();
      two_level += m.page_table();
      flat += m.flat_page_table;
    }
    if (result_.sampling < 1) {  // the sampled layers' tables stand for every layer's
      const double scale = static_cast<double>(cfg_.model.layers) / sampled_layer_count();
      two_level = static_cast<std::uint64_t>(std::llround(static_cast<double>(two_level) * scale));
      flat = static_cast<std::uint64_t>(std::llround(static_cast<double>(flat) * scale));
    }
    if (two_level > result_.metadata_peak_bytes) {
      result_.metadata_peak_bytes = two_level;
      result_.metadata_flat_bytes = flat;
    }
  }

  std::uint64_t batch_tokens() const { return plan_.tokens(); }

  void start_layer(std::uint32_t layer) {
    const TimeNs now = events_.now();
    double a = cost_.layer_gemm_ns(batch_tokens()) + cost_.launch_ns(kDenseKernelsPerLayer - 1);
    if (mode_.sparse() && !plan_.decodes.empty()) {
      a += cost_.hbm_ns(summary_bytes_) + cost_.launch_ns(kSparseExtraKernels);
      if (mech_.cpu_roundtrip_per_layer) a += cost_.cpu_roundtrip_ns();
    }
    const TimeNs a_end = now + ns(a);
    if (layer_detail())
      timeline_.span("compute", fmt::format("L{} gemm+select", layer), now, a_end);
    events_.schedule(a_end, [this, layer] { after_select(layer); });
  }

  void after_select(std::uint32_t layer) {
    const TimeNs now = events_.now();
    if (mech_.host_kv) offload_chunks();
    pending_ = 2;
    // Page fetches for the decoding requests, on the H2D link.
    const double bytes = layer_miss_bytes_[layer] * mech_.fetch_fraction * share_;
    if (bytes > 0 && (mech_.fetch == Fetch::kGather || mech_.fetch == Fetch::kPerPageCopy)) {
      const double rate = mech_.fetch == Fetch::kGather
                              ? cost_.gather_gbps(result_.page_bytes)
                              : cost_.per_page_copy_gbps(result_.page_bytes);
      const TimeNs latency = ns(
          mech_.fetch == Fetch::kGather ? cost_.launch_ns(1) : cfg_.hardware.pcie_latency_us * 1e3);
      iteration_fetched_ += static_cast<std::uint64_t>(bytes);
      h2d_.start(bytes, rate, latency, [this, layer, now] {
        if (layer_detail())
          timeline_.span("copy H2D", fmt::format("L{} fetch", layer), now, events_.now());
        join(layer);
      });
    } else {
      events_.schedule(now, [this, layer] { join(layer); });
    }
    // Prefill attention of the chunks runs meanwhile on the compute stream.
    double p = 0;
    for (const serving::PrefillChunk& c : plan_.prefills)
      p += cost_.prefill_attention_ns(c.tokens, c.start);
    const TimeNs p_end = now + ns(p);
    if (p > 0 && layer_detail())
      timeline_.span("compute", fmt::format("L{} prefill attn", layer), now, p_end);
    events_.schedule(p_end, [this, layer] { join(layer); });
  }

  void join(std::uint32_t layer) {
    if (--pending_ > 0) return;
    const TimeNs now = events_.now();
    double b = cost_.launch_ns(1);
    if (!plan_.decodes.empty()) {
      const double attn_bytes =
          mode_.sparse() ? (static_cast<double>(layer_selected_[layer] + static_pages_)) *
                               static_cast<double>(result_.page_bytes)
                         : layer_dense_bytes_[layer];
      b += cost_.hbm_ns(attn_bytes * share_) + cost_.allreduce_ns(batch_tokens());
      if (mech_.extra_flops_per_selected_token > 0)
        b += selected_tokens_ / cfg_.model.layers * mech_.extra_flops_per_selected_token * share_ /
             (cfg_.hardware.bf16_dense_tflops * 1e3 * cfg_.hardware.gemm_efficiency);
    }
    const TimeNs b_end = now + ns(b);
    if (layer_detail())
      timeline_.span("compute", fmt::format("L{} attention+mlp", layer), now, b_end);
    events_.schedule(b_end, [this, layer] {
      if (layer + 1 < cfg_.model.layers) {
        start_layer(layer + 1);
      } else {
        tail();
      }
    });
  }

  void tail() {
    std::uint64_t emitting = plan_.decodes.size();
    for (const serving::PrefillChunk& c : plan_.prefills) emitting += c.last ? 1 : 0;
    const double t = (emitting ? cost_.lm_head_ns(emitting) : 0) + cost_.launch_ns(kTailKernels);
    events_.schedule(events_.now() + ns(t), [this] { end_iteration(); });
  }

  void end_iteration() {
    const TimeNs now = events_.now();
    if (mech_.host_kv) {
      // A prompt whose copies to host have not all ended keeps its KV in HBM until they have.
      for (const serving::PrefillChunk& c : plan_.prefills) {
        PromptCopy& copy = prompt_copies_[c.id];
        copy.on_host = std::max(copy.on_host, c.start + c.tokens);
        if (c.last && copy.in_flight) host_memory_->start_offload(scheduler_->request(c.id));
      }
      // Every page a decoding request just filled goes to host; it is in the request's local
      // window, in HBM anyway, so its copy gates nothing.
      double bytes = 0;
      for (std::uint64_t id : plan_.decodes) {
        if (scheduler_->request(id).context_tokens() % page_tokens_ == 0)
          bytes += static_cast<double>(result_.page_bytes) * static_cast<double>(streams_);
      }
      if (bytes > 0) to_host(bytes, [] {});
    }
    const std::vector<std::uint64_t> finished = scheduler_->complete(plan_, now);
    for (std::uint64_t id : finished) drop_policy(id);

    const std::uint32_t decodes = static_cast<std::uint32_t>(plan_.decodes.size());
    std::uint32_t prefill_tokens = 0;
    for (const auto& c : plan_.prefills) prefill_tokens += c.tokens;
    batch_weighted_ += static_cast<double>(decodes) * static_cast<double>(now - iteration_start_);
    busy_ns_ += now - iteration_start_;
    result_.batch_max = std::max(result_.batch_max, decodes);
    if (decodes > 0 && prefill_tokens == 0) {
      ++result_.decode_only_iterations;
      result_.decode_only_tokens += decodes;
      result_.decode_only_ns += now - iteration_start_;
      last_decode_ns_ = now - iteration_start_;
    }
    if (opt_.timeline) {
      timeline_.span("iteration", decodes ? "decode" : "prefill", iteration_start_, now,
                     fmt::format(R"("decodes":{},"prefill_tokens":{},"fetched_bytes":{})", decodes,
                                 prefill_tokens, iteration_fetched_));
      timeline_.counter("HBM KV used", iteration_start_, "GiB",
                        static_cast<double>(kv_used_at_start_) / (1ull << 30));
      timeline_.counter("batch", iteration_start_, "decoding requests", decodes);
    }
    if (opt_.keep_iterations) {
      result_.iterations.push_back({iteration_start_, now, decodes, prefill_tokens,
                                    preempted_this_iteration_, kv_used_at_start_,
                                    iteration_fetched_, iteration_hits_, iteration_misses_});
    }
    ++iteration_;
    iteration_fetched_ = 0;
    preempted_this_iteration_ = 0;
    if (opt_.progress && iteration_ % 256 == 0) {
      std::size_t done = 0;
      for (const auto& r : scheduler_->requests())
        done += r.phase == serving::Phase::kFinished || r.phase == serving::Phase::kRejected;
      opt_.progress(static_cast<double>(now) * 1e-9, done, scheduler_->requests().size());
    }
    start_iteration();
  }

  // Copies `bytes` (all GPUs) of KV to host on the device-to-host link; `done` runs at its end.
  void to_host(double bytes, EventQueue::Action done) {
    d2h_.start(bytes * mech_.fetch_fraction * share_, cfg_.hardware.pcie_d2h_gbps,
               ns(cfg_.hardware.pcie_latency_us * 1e3), std::move(done));
  }

  // Host-KV modes, as a layer's GEMMs end: the KV the prefill chunks just wrote at that layer
  // goes to host (of the original ShadowKV, V only), overlapping the rest of the iteration, as
  // ShadowKV offloads layer by layer. A prompt's KV stays in HBM until its last copy ends: where
  // the link keeps up, at its last chunk's iteration's end.
  void offload_chunks() {
    for (const serving::PrefillChunk& c : plan_.prefills) {
      PromptCopy& copy = prompt_copies_[c.id];
      const std::uint32_t end = c.start + c.tokens;
      if (end <= copy.on_host) continue;  // a prefill again after a preemption: on host already
      const double bytes = kv_bytes(end - std::max(c.start, copy.on_host)) / cfg_.model.layers;
      if (copy.in_flight) {
        copy.waiting += bytes;
      } else {
        copy_prompt(c.id, bytes);
      }
    }
  }

  // One copy of a request's prompt KV on the link at a time: what its prefill writes meanwhile
  // waits and follows as one copy, so that a link slower than prefill carries a copy per
  // prefilling request rather than one per layer and chunk (the link shares its bandwidth
  // fairly among its copies, so the bytes arrive when they would have anyway).
  void copy_prompt(std::uint64_t id, double bytes) {
    prompt_copies_[id].in_flight = true;
    to_host(bytes, [this, id, start = events_.now(), detail = layer_detail()] {
      if (detail) timeline_.span("copy D2H", fmt::format("R{} offload", id), start, events_.now());
      PromptCopy& copy = prompt_copies_[id];
      if (copy.waiting > 0) {
        copy_prompt(id, std::exchange(copy.waiting, 0.0));
        return;
      }
      copy.in_flight = false;
      const serving::RequestState& r = scheduler_->request(id);
      if (r.prefilled < r.prefill_target) return;  // its prefill goes on: not held yet
      host_memory_->end_offload(id);
      if (idle_) events_.schedule(events_.now(), [this, wake = ++wakes_] { wake_up(wake); });
    });
  }

  SimResult finish() {
    for (const serving::RequestState& s : scheduler_->requests()) {
      RequestRecord& rec = result_.requests[s.id];
      rec.admitted_ns = s.first_admitted_ns;
      rec.first_token_ns = s.first_token_ns;
      rec.finish_ns = s.finish_ns;
      if (!rec.rejected) result_.end_ns = std::max(result_.end_ns, s.finish_ns);
    }
    for (std::uint64_t id = 0; id < policies_.size(); ++id) drop_policy(id);  // truncated ones
    for (policy::PolicyStats& l : result_.policy_layers) l += sampled_layer_mean_;
    result_.iteration_count = iteration_;
    result_.batch_time_weighted_mean =
        busy_ns_ ? batch_weighted_ / static_cast<double>(busy_ns_) : 0.0;
    result_.h2d_bytes = h2d_.bytes_moved();
    result_.d2h_bytes = d2h_.bytes_moved();
    if (host_memory_) {
      result_.host_kv_peak_bytes = host_memory_->host_peak_bytes();
      result_.offload_held_prompts = host_memory_->offloads_held();
      result_.offload_held_peak_bytes = host_memory_->offloading_peak_pages() * result_.page_bytes;
    }
    if (dense_memory_ && !mech_.recompute)
      result_.host_kv_peak_bytes = dense_memory_->host_peak_bytes();
    if (opt_.timeline) result_.timeline_json = timeline_.finish();
    return std::move(result_);
  }

  const config::Config& cfg_;
  const trace::TraceSource& source_;
  SimOptions opt_;
  serving::Mode mode_;
  Mechanics mech_;
  CostModel cost_;
  double share_;  // of every per-layer byte and FLOP that one GPU handles (1 / tensor_parallel)
  EventQueue events_;
  Link h2d_, d2h_;
  ParallelFor pool_;
  SimResult result_;
  Timeline timeline_;

  std::uint32_t page_tokens_ = 16;
  std::uint64_t streams_ = 0;
  double summary_per_token_layer_ = 0;
  std::unique_ptr<DenseMemory> dense_memory_;
  std::unique_ptr<HostKvMemory> host_memory_;
  serving::MemoryRule* memory_ = nullptr;
  std::unique_ptr<serving::Scheduler> scheduler_;
  std::vector<std::unique_ptr<RequestSizing>> sizings_;
  std::vector<std::unique_ptr<RequestPolicy>> policies_;
  struct PromptCopy {
    bool in_flight = false;  // a copy of the prompt's KV to host
    double waiting = 0;      // bytes written since, to follow it
    // Prefill positions [0, on_host) whose KV has gone or is going to host: a request preempted
    // while prefilling prefills again from its first token, and copies only what lies past it.
    std::uint32_t on_host = 0;
  };
  std::vector<PromptCopy> prompt_copies_;      // by request
  std::vector<std::uint32_t> sampled_layers_;  // stream sampling: k per request (plan_sampling)
  policy::PolicyStats sampled_layer_mean_;     // sampled runs: what each layer is credited with

  // The iteration in flight.
  serving::IterationPlan plan_;
  std::vector<Work> work_;
  std::vector<double> layer_selected_;  // selected pages (all GPUs)
  std::vector<double> layer_miss_bytes_;
  std::vector<double> layer_dense_bytes_;
  std::uint64_t static_pages_ = 0;
  double summary_bytes_ = 0;
  double selected_tokens_ = 0;
  int pending_ = 0;
  TimeNs iteration_start_ = 0;
  TimeNs last_decode_ns_ = 0;                // the last decode-only iteration's duration
  std::unique_ptr<CacheForecast> forecast_;  // host-KV modes running ahead
  std::uint64_t kv_used_at_start_ = 0;
  std::uint64_t iteration_fetched_ = 0;
  std::uint64_t iteration_hits_ = 0, iteration_misses_ = 0;
  std::uint32_t preempted_this_iteration_ = 0;
  std::uint64_t iteration_ = 0;
  bool idle_ = false;        // nothing runs: waiting for an arrival or for HBM to be released
  std::uint64_t wakes_ = 0;  // wake-ups given while idle (only the latest counts)
  double batch_weighted_ = 0;
  TimeNs busy_ns_ = 0;
};

}  // namespace

SimResult simulate(const config::Config& config, const trace::TraceSource& source,
                   const SimOptions& options) {
  if (source.requests().empty()) throw InputError("the trace has no requests to simulate");
  return Simulation(config, source, options).run();
}

}  // namespace spin::sim
