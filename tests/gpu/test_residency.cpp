// The residency kernel against the CPU policy engine: the same requests, capacities and
// selections go to policy::Engine and to GpuResidency (all pools of a step in one launch), and
// the two decision logs must be equal byte for byte after every step. Selections are random
// (with a hot set, so that pages hit, age and get evicted) and generated (traces/gen), over all
// pool scopes and the GPU-capable policies, and stress cases for the kernel's cooperative
// (block-parallel) step: all-tie buckets, selections over the pool (bypass), empty selections,
// one-page segments, pools of more slots and keys than the block has threads. One scenario also
// feeds the kernel's fetch list straight into the gather kernel and checks the copied bytes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/policy/budget.h"
#include "common/policy/engine.h"
#include "common/policy/partition.h"
#include "exec/cuda_check.h"
#include "exec/gather.h"
#include "exec/gpu_residency.h"
#include "exec/memory.h"
#include "traces/gen/generator.h"

namespace {

namespace policy = spin::policy;
using spin::exec::GpuPoolSpec;
using spin::exec::GpuResidency;
using spin::exec::kSkipEntry;
using spin::exec::StreamSelection;

struct Scenario {
  std::string name;
  policy::PartitionGeometry geometry;
  policy::StaticRegionParams static_region;
  std::uint32_t layers = 2;
  std::uint32_t heads = 2;
  std::uint32_t requests = 3;
  std::uint32_t prompt_tokens = 2000;
  std::uint32_t steps = 60;
  policy::PoolScope scope = policy::PoolScope::kRequestLayer;
  policy::PolicyParams policy{policy::PolicyKind::kBucketedLru, 64, 0};
  std::uint32_t segment_pages = 64;
  bool gather = false;  // also run the gather kernel on the fetch list and check the bytes
  std::uint32_t cache_per_stream = 40;  // cache pages per stream, before the variations
  bool expect_victims = true;
  spin::exec::Staging staging = spin::exec::Staging::kSelection;  // every mode must agree
  std::uint32_t max_select = 48;  // random selections: up to this many ids per stream and step
  std::uint32_t hot = 40;         // random selections: hot-set size per stream
  std::uint32_t empty_every = 0;  // random selections: every k-th step selects nothing (0: never)
  // Launch on a non-blocking stream held by a 20 ms host function before each kernel, and plan
  // the next step at once: only the last step is downloaded and compared (plan() must wait for
  // the queued launch before it uploads over its inputs).
  bool queued_launches = false;
};

// A cudaStreamNonBlocking stream, destroyed with the scenario.
struct NonBlockingStream {
  cudaStream_t stream = nullptr;
  NonBlockingStream() {
    SPIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~NonBlockingStream() { cudaStreamDestroy(stream); }
  NonBlockingStream(const NonBlockingStream&) = delete;
  NonBlockingStream& operator=(const NonBlockingStream&) = delete;
};

// Where selections come from: ids per (request, step, layer, head), and variable cluster growth.
class SelectionSource {
 public:
  virtual ~SelectionSource() = default;
  virtual void next_step(std::uint32_t request, std::uint32_t step) = 0;
  virtual std::span<const std::uint32_t> ids(std::uint32_t request, std::uint32_t layer,
                                             std::uint32_t head) = 0;
  // Variable partitions: the map's offsets at this step (empty for fixed).
  virtual std::span<const std::uint32_t> offsets(std::uint32_t, std::uint32_t, std::uint32_t) {
    return {};
  }
};

// Random ascending ids with duplicates; 75% from a per-stream hot set that drifts.
class RandomSelections : public SelectionSource {
 public:
  RandomSelections(const Scenario& s, std::uint64_t seed) : s_(s), rng_(seed) {
    hot_.resize(std::size_t{s.requests} * s.layers * s.heads);
    ids_.resize(hot_.size());
  }
  void next_step(std::uint32_t request, std::uint32_t step) override {
    const std::uint32_t context = s_.prompt_tokens + step;
    const std::uint32_t partitions =
        (context + s_.geometry.partition_tokens - 1) / s_.geometry.partition_tokens;
    for (std::uint32_t k = 0; k < s_.layers * s_.heads; ++k) {
      const std::size_t i = std::size_t{request} * s_.layers * s_.heads + k;
      std::vector<std::uint32_t>& hot = hot_[i];
      if (hot.empty()) {
        for (std::uint32_t j = 0; j < s_.hot; ++j) {
          hot.push_back(static_cast<std::uint32_t>(rng_() % partitions));
        }
      }
      for (std::uint32_t& h : hot) {
        if (rng_() % 10 == 0) h = static_cast<std::uint32_t>(rng_() % partitions);
      }
      std::vector<std::uint32_t>& ids = ids_[i];
      ids.clear();
      const bool empty = s_.empty_every > 0 && step % s_.empty_every == s_.empty_every - 1;
      const std::uint32_t n = empty ? 0 : static_cast<std::uint32_t>(rng_() % s_.max_select);
      for (std::uint32_t j = 0; j < n; ++j) {
        ids.push_back(rng_() % 4 != 0 ? hot[rng_() % hot.size()]
                                      : static_cast<std::uint32_t>(rng_() % partitions));
      }
      std::sort(ids.begin(), ids.end());
    }
  }
  std::span<const std::uint32_t> ids(std::uint32_t request, std::uint32_t layer,
                                     std::uint32_t head) override {
    return ids_[(std::size_t{request} * s_.layers + layer) * s_.heads + head];
  }

 private:
  const Scenario& s_;
  std::mt19937_64 rng_;
  std::vector<std::vector<std::uint32_t>> hot_;
  std::vector<std::vector<std::uint32_t>> ids_;
};

// The trace generator's selections (the locality model of docs/trace-generators.md).
class GeneratedSelections : public SelectionSource {
 public:
  GeneratedSelections(const spin::gen::Generator& g, const Scenario& s) : s_(s) {
    for (std::uint32_t r = 0; r < s.requests; ++r) {
      for (std::uint32_t l = 0; l < s.layers; ++l) streams_.push_back(g.open_layer(r, l));
    }
  }
  void next_step(std::uint32_t request, std::uint32_t step) override {
    for (std::uint32_t l = 0; l < s_.layers; ++l) {
      auto& st = *streams_[std::size_t{request} * s_.layers + l];
      REQUIRE(st.next());
      REQUIRE(st.step() == step);
    }
  }
  std::span<const std::uint32_t> ids(std::uint32_t request, std::uint32_t layer,
                                     std::uint32_t head) override {
    return streams_[std::size_t{request} * s_.layers + layer]->selection(head);
  }
  std::span<const std::uint32_t> offsets(std::uint32_t request, std::uint32_t layer,
                                         std::uint32_t head) override {
    return streams_[std::size_t{request} * s_.layers + layer]->partition_offsets(head);
  }

 private:
  const Scenario& s_;
  std::vector<std::unique_ptr<spin::trace::StepStream>> streams_;
};

std::uint64_t cache_pages_at(const Scenario& s, std::uint32_t request, std::uint32_t step) {
  // Grows and shrinks over time, differently per request (capacity changes are part of the rule).
  const std::uint64_t base = std::uint64_t{s.cache_per_stream + 13 * request} * s.layers * s.heads;
  return base + (step / 9 % 3) * 17 * s.layers + (step % 23 == 0 ? 0 : 5);
}

// Runs a scenario in lockstep; returns the number of pool steps compared.
std::uint64_t run_lockstep(const Scenario& s, SelectionSource& source) {
  INFO("scenario " << s.name << " staging " << static_cast<int>(s.staging));
  policy::Engine engine({s.segment_pages, true});
  std::string engine_log = engine.take_decision_log();  // the header
  const std::uint32_t streams = s.layers * s.heads;
  const std::uint32_t pool_streams = s.scope == policy::PoolScope::kStream         ? 1
                                     : s.scope == policy::PoolScope::kRequestLayer ? s.heads
                                                                                   : streams;
  const std::uint32_t pools = streams / pool_streams;
  const std::uint32_t max_context = s.prompt_tokens + s.steps;
  const std::uint32_t page_log2 = policy::log2_exact(s.geometry.page_tokens);
  const std::uint32_t max_pages = policy::pages_for_tokens(max_context, page_log2);
  const std::uint32_t seg_log2 = policy::log2_exact(s.segment_pages);
  const std::vector<std::uint64_t> weights(pools, pool_streams);

  std::vector<GpuPoolSpec> specs;
  std::vector<std::uint64_t> cache(s.requests);
  std::uint32_t slot_base = 0;
  for (std::uint32_t r = 0; r < s.requests; ++r) {
    policy::RequestSpec spec;
    spec.model = {s.layers, s.heads, 128, 2};
    spec.geometry = s.geometry;
    spec.static_region = s.static_region;
    spec.max_context_tokens = max_context;
    spec.scope = s.scope;
    spec.policy = s.policy;
    spec.cache_pages = cache[r] = cache_pages_at(s, r, 0);
    REQUIRE(engine.add_request(spec) == r);
    REQUIRE(engine.pool_count(r) == pools);
    std::vector<std::uint64_t> most(pools, 0);
    for (std::uint32_t step = 0; step < s.steps; ++step) {
      const auto parts = policy::split_pages(cache_pages_at(s, r, step), weights);
      for (std::uint32_t p = 0; p < pools; ++p) most[p] = std::max(most[p], parts[p]);
    }
    const auto first = policy::split_pages(cache[r], weights);
    for (std::uint32_t p = 0; p < pools; ++p) {
      GpuPoolSpec g;
      g.streams = pool_streams;
      g.max_extent = static_cast<std::uint32_t>(most[p]);
      g.capacity = static_cast<std::uint32_t>(first[p]);
      g.directory_entries = (max_pages + s.segment_pages - 1) / s.segment_pages;
      g.policy = s.policy;
      g.slot_base = slot_base;
      slot_base += g.max_extent;
      specs.push_back(g);
    }
  }
  GpuResidency gpu(specs, seg_log2, s.staging);
  std::vector<policy::PartitionMap> maps(std::size_t{s.requests} * streams,
                                         policy::PartitionMap(s.geometry));
  std::vector<std::uint32_t> known_clusters(maps.size(), 0);

  // Gather check: a host store of every stream's pages (page bytes 64), HBM slots for the pools
  // and one scratch slot per fetch-list entry.
  constexpr std::uint64_t kPageBytes = 64;
  std::unique_ptr<spin::exec::HostKvStore> host;
  std::unique_ptr<spin::exec::HbmPagePool> hbm;
  std::uint64_t scratch_slots = 0;
  if (s.gather) {
    host = std::make_unique<spin::exec::HostKvStore>(s.requests * streams, max_pages, kPageBytes);
    std::mt19937_64 rng(99);
    for (std::size_t i = 0; i < host->bytes(); ++i)
      host->host_data()[i] = static_cast<std::uint8_t>(rng());
    scratch_slots = std::uint64_t{s.requests} * streams * max_pages;
    hbm = std::make_unique<spin::exec::HbmPagePool>(
        static_cast<std::uint32_t>(slot_base + scratch_slots), kPageBytes);
  }

  std::uint64_t compared = 0;
  std::uint64_t hits = 0, fetches = 0, victims = 0, bypassed = 0;
  std::unique_ptr<NonBlockingStream> queue;
  if (s.queued_launches) queue = std::make_unique<NonBlockingStream>();
  for (std::uint32_t step = 0; step < s.steps; ++step) {
    const std::uint32_t context = s.prompt_tokens + step;
    std::vector<StreamSelection> selections;
    std::vector<std::uint32_t> now;
    for (std::uint32_t r = 0; r < s.requests; ++r) {
      const std::uint64_t wanted = cache_pages_at(s, r, step);
      if (wanted != cache[r]) {
        engine.set_cache_pages(r, cache[r] = wanted);
        const auto parts = policy::split_pages(wanted, weights);
        for (std::uint32_t p = 0; p < pools; ++p) {
          gpu.set_capacity(r * pools + p, static_cast<std::uint32_t>(parts[p]));
        }
      }
      const std::uint32_t t = 3 * step + r;  // gaps between steps exercise bucket widths
      engine.begin_step(r, t, context);
      source.next_step(r, step);
      const policy::StaticRegion region =
          policy::static_region(s.static_region, s.geometry.page_tokens, context);
      for (std::uint32_t l = 0; l < s.layers; ++l) {
        for (std::uint32_t h = 0; h < s.heads; ++h) {
          const std::size_t k = std::size_t{r} * streams + std::size_t{l} * s.heads + h;
          policy::PartitionMap& map = maps[k];
          map.set_stored_tokens(context);
          const auto offsets = source.offsets(r, l, h);
          if (!offsets.empty() && offsets.size() - 1 > known_clusters[k]) {
            std::vector<std::uint32_t> lengths;
            for (std::size_t c = known_clusters[k]; c + 1 < offsets.size(); ++c) {
              lengths.push_back(offsets[c + 1] - offsets[c]);
            }
            engine.append_clusters(r, l, h, offsets[known_clusters[k]], lengths);
            map.append_clusters(offsets[known_clusters[k]], lengths);
            known_clusters[k] = static_cast<std::uint32_t>(offsets.size() - 1);
          }
          const auto ids = source.ids(r, l, h);
          engine.select(r, l, h, ids);
          selections.push_back(
              StreamSelection{map.view(), region, ids, static_cast<std::uint32_t>(k) * max_pages});
        }
      }
      for (std::uint32_t p = 0; p < pools; ++p) now.push_back(t);
    }
    for (std::uint32_t r = 0; r < s.requests; ++r) engine.end_step(r);
    engine_log += engine.take_decision_log();
    engine.check_invariants();

    gpu.plan(now, selections, s.gather ? slot_base : kSkipEntry);
    if (queue) {
      SPIN_CUDA_CHECK(cudaLaunchHostFunc(
          queue->stream, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); },
          nullptr));
      gpu.run(queue->stream);
      if (step + 1 < s.steps) {  // the next plan() comes while this launch waits
        engine_log.clear();
        continue;
      }
    } else {
      gpu.run();
    }
    if (s.gather) {
      hbm->fill(0xA5);
      spin::exec::launch_gather(spin::exec::GatherParams{
          host->device_data(), hbm->data(), kPageBytes, gpu.fetch_host_page(), gpu.fetch_slot(),
          gpu.fetch_list_size(), spin::exec::GatherDirection::kHostToDevice});
    }
    gpu.download();
    std::string gpu_log =
        step == 0 || queue ? std::string(policy::kDecisionLogHeader) : std::string();
    if (queue && step > 0) engine_log.insert(0, policy::kDecisionLogHeader);
    for (std::uint32_t r = 0; r < s.requests; ++r) {
      for (std::uint32_t p = 0; p < pools; ++p) {
        const auto& c = gpu.counts(r * pools + p);
        REQUIRE(c.status == 0);
        hits += c.hits;
        fetches += c.fetches;
        victims += c.victims;
        bypassed += c.bypassed;
        policy::append_decision_log(gpu_log, gpu.decisions(r * pools + p, r, p));
        ++compared;
      }
    }
    if (gpu_log != engine_log) {
      // Report the first line that differs, not two whole logs.
      std::size_t at = 0;
      while (at < gpu_log.size() && at < engine_log.size() && gpu_log[at] == engine_log[at]) ++at;
      const std::size_t line = gpu_log.rfind('\n', at == 0 ? 0 : at - 1);
      const std::size_t from = line == std::string::npos ? 0 : line + 1;
      FAIL("step " << step << ": the decision logs differ\n  cpu: "
                   << engine_log.substr(from, engine_log.find('\n', from) - from)
                   << "\n  gpu: " << gpu_log.substr(from, gpu_log.find('\n', from) - from));
    }
    engine_log.clear();

    // The fetch list: each pool's cached misses (then bypasses to scratch), then holes.
    const auto fetch_host = gpu.fetch_host_page_host();
    const auto fetch_slot = gpu.fetch_slot_host();
    std::uint32_t list_at = 0;
    std::vector<std::uint8_t> slot_bytes;
    if (s.gather) {
      slot_bytes.resize(hbm->bytes());
      SPIN_CUDA_CHECK(
          cudaMemcpy(slot_bytes.data(), hbm->data(), slot_bytes.size(), cudaMemcpyDeviceToHost));
    }
    std::uint32_t bad = 0;
    for (std::uint32_t q = 0; q < gpu.pools(); ++q) {
      const policy::PoolDecisions d = gpu.decisions(q, 0, 0);
      const auto& c = gpu.counts(q);
      // Regions are contiguous in pool order: a pool's entries start where the holes end.
      for (std::uint32_t j = 0; j < c.fetches + c.bypassed; ++j) {
        const std::uint32_t i = j < c.fetches ? d.fetch_index[j] : d.bypass_index[j - c.fetches];
        const std::uint32_t stream =
            q / pools * streams + (q % pools) * pool_streams + policy::key_stream(d.keys[i]);
        const std::uint32_t want_host = stream * max_pages + policy::key_page(d.keys[i]);
        const std::uint32_t at = list_at + j;
        bad += fetch_host[at] != want_host;
        if (j < c.fetches) {
          bad += fetch_slot[at] != specs[q].slot_base + static_cast<std::uint32_t>(d.slot_of[i]);
        } else {
          bad += fetch_slot[at] != (s.gather ? slot_base + at : kSkipEntry);
        }
        if (s.gather && fetch_slot[at] != kSkipEntry) {
          bad += std::memcmp(slot_bytes.data() + std::uint64_t{fetch_slot[at]} * kPageBytes,
                             host->host_page(want_host), kPageBytes) != 0;
        }
      }
      // Holes up to the next pool's region (regions are contiguous, in pool order).
      std::uint32_t end = list_at + c.fetches + c.bypassed;
      while (end < gpu.fetch_list_size() && fetch_host[end] == kSkipEntry) {
        bad += fetch_slot[end] != kSkipEntry;
        ++end;
      }
      list_at = end;
    }
    REQUIRE(list_at == gpu.fetch_list_size());
    REQUIRE(bad == 0);
  }
  INFO("hits " << hits << " fetches " << fetches << " victims " << victims << " bypassed "
               << bypassed);
  CHECK(hits > 0);
  CHECK(fetches > 0);
  if (s.expect_victims) CHECK(victims > 0);
  return compared;
}

const char* scope_name(policy::PoolScope s) {
  return s == policy::PoolScope::kStream         ? "stream"
         : s == policy::PoolScope::kRequestLayer ? "request-layer"
                                                 : "request";
}

}  // namespace

TEST_CASE(
    "residency kernel: decisions equal the CPU engine's on random selections, every scope "
    "and policy",
    "[gpu][residency]") {
  const policy::PartitionGeometry geometries[] = {
      {policy::PartitionKind::kFixed, 8, 8},    // a partition is a page
      {policy::PartitionKind::kFixed, 16, 1},   // token-level selection
      {policy::PartitionKind::kFixed, 8, 24}};  // partitions span pages
  const policy::PolicyParams policies[] = {
      {policy::PolicyKind::kBucketedLru, 64, 0},   {policy::PolicyKind::kBucketedLru, 4, 1},
      {policy::PolicyKind::kBucketedLru, 1024, 0}, {policy::PolicyKind::kBucketedLru, 300, 3},
      {policy::PolicyKind::kExactLru, 0, 0},       {policy::PolicyKind::kFifo, 0, 0},
      {policy::PolicyKind::kPreviousStep, 0, 0}};
  std::uint64_t seed = 1;
  std::uint64_t compared = 0;
  for (const auto& geometry : geometries) {
    for (const auto scope : {policy::PoolScope::kStream, policy::PoolScope::kRequestLayer,
                             policy::PoolScope::kRequest}) {
      for (const auto& pol : policies) {
        Scenario s;
        s.name = std::string("random g=") + std::to_string(geometry.partition_tokens) +
                 " page=" + std::to_string(geometry.page_tokens) + " scope=" + scope_name(scope) +
                 " policy=" + std::to_string(static_cast<int>(pol.kind)) +
                 " B=" + std::to_string(pol.buckets);
        s.geometry = geometry;
        s.static_region = {16, 64};
        s.scope = scope;
        s.policy = pol;
        s.steps = 40;
        s.staging = static_cast<spin::exec::Staging>(seed % 3);
        RandomSelections source(s, seed++);
        compared += run_lockstep(s, source);
      }
    }
  }
  CHECK(compared > 0);
}

TEST_CASE("residency kernel: decisions equal the CPU engine's on generated selections",
          "[gpu][residency]") {
  std::uint32_t variant = 0;
  for (const char* algorithm : {"shadowkv", "retroinfer", "seer", "token"}) {
    for (const auto scope : {policy::PoolScope::kStream, policy::PoolScope::kRequestLayer,
                             policy::PoolScope::kRequest}) {
      spin::gen::GeneratorConfig c;
      c.algorithm = algorithm;
      c.seed = 5;
      spin::config::ModelConfig model = spin::gen::default_model();
      model.layers = 3;
      model.kv_heads = 2;
      model.query_heads = 4;
      c.workload.name = "fixed";
      c.workload.requests = 2;
      c.workload.prompt_tokens = 6000;
      c.workload.output_tokens = 50;
      c.locality.poor_layers = 1;
      const spin::gen::Generator g(c, model);
      const auto& alg = g.algorithm_of(0);
      Scenario s;
      s.name = std::string("generated ") + algorithm + " scope=" + scope_name(scope);
      s.geometry = {alg.partition_kind == spin::trace::PartitionKind::kVariable
                        ? policy::PartitionKind::kVariable
                        : policy::PartitionKind::kFixed,
                    alg.page_tokens, alg.partition_tokens};
      s.static_region = {alg.sink_tokens, alg.local_window_tokens};
      s.layers = 3;
      s.heads = 2;
      s.requests = 2;
      s.prompt_tokens = 6000;
      s.steps = 50;
      s.scope = scope;
      s.cache_per_stream = 16;
      s.expect_victims = false;
      s.staging = static_cast<spin::exec::Staging>(variant++ % 3);
      GeneratedSelections source(g, s);
      CHECK(run_lockstep(s, source) > 0);
    }
  }
}

TEST_CASE("residency kernel: its fetch list feeds the gather kernel directly", "[gpu][residency]") {
  Scenario s;
  s.name = "fetch list → gather";
  s.geometry = {policy::PartitionKind::kFixed, 16, 16};
  s.static_region = {16, 64};
  s.scope = policy::PoolScope::kRequestLayer;
  s.steps = 30;
  s.gather = true;
  s.staging = spin::exec::Staging::kSelectionAndSlots;
  RandomSelections source(s, 77);
  CHECK(run_lockstep(s, source) > 0);
}

TEST_CASE(
    "residency kernel: the cooperative step on ties, bypasses, empty selections, tiny segments "
    "and pools larger than a block",
    "[gpu][residency]") {
  struct Variant {
    const char* name;
    policy::PolicyParams policy;
    policy::PoolScope scope;
    std::uint32_t heads, cache_per_stream, max_select, hot, segment_pages, empty_every;
  };
  const Variant variants[] = {
      // One bucket: every unpinned slot ties, victims are the lowest slots.
      {"all ties",
       {policy::PolicyKind::kBucketedLru, 1, 0},
       policy::PoolScope::kRequest,
       2,
       10,
       60,
       30,
       1,
       5},
      {"four buckets",
       {policy::PolicyKind::kBucketedLru, 4, 0},
       policy::PoolScope::kRequest,
       8,
       60,
       300,
       200,
       2,
       7},
      {"64 buckets, large pools",
       {policy::PolicyKind::kBucketedLru, 64, 0},
       policy::PoolScope::kRequestLayer,
       8,
       120,
       400,
       300,
       4,
       0},
      // Over 256 buckets: the oldest-first count, then radix passes without digit skipping.
      {"1024 buckets of 4 steps, large pools",
       {policy::PolicyKind::kBucketedLru, 1024, 2},
       policy::PoolScope::kRequest,
       8,
       60,
       300,
       200,
       2,
       0},
      {"exact lru, large pools",
       {policy::PolicyKind::kExactLru, 0, 0},
       policy::PoolScope::kRequest,
       8,
       50,
       300,
       200,
       2,
       6},
      {"fifo, large pools",
       {policy::PolicyKind::kFifo, 0, 0},
       policy::PoolScope::kRequest,
       8,
       50,
       300,
       200,
       8,
       0},
      {"previous step, large pools",
       {policy::PolicyKind::kPreviousStep, 0, 0},
       policy::PoolScope::kRequestLayer,
       8,
       80,
       300,
       200,
       1,
       4},
  };
  std::uint64_t seed = 500;
  for (const Variant& v : variants) {
    Scenario s;
    s.name = std::string("stress ") + v.name;
    s.geometry = {policy::PartitionKind::kFixed, 8, 8};
    s.static_region = {16, 64};
    s.layers = 2;
    s.heads = v.heads;
    s.requests = 2;
    s.prompt_tokens = 16000;
    s.steps = 30;
    s.scope = v.scope;
    s.policy = v.policy;
    s.segment_pages = v.segment_pages;
    s.cache_per_stream = v.cache_per_stream;
    s.max_select = v.max_select;
    s.hot = v.hot;
    s.empty_every = v.empty_every;
    s.staging = static_cast<spin::exec::Staging>(seed % 3);
    RandomSelections source(s, seed++);
    CHECK(run_lockstep(s, source) > 0);
  }
}

TEST_CASE("residency kernel: plan() waits for a launch still queued on a non-blocking stream",
          "[gpu][residency]") {
  // Each step's kernel waits 20 ms behind a host function while the next step is planned; the
  // capacities change along the way (the views are uploaded again). The last step's decisions,
  // after every earlier step ran on its own inputs, must be the engine's.
  Scenario s;
  s.name = "queued launches";
  s.geometry = {policy::PartitionKind::kFixed, 8, 8};
  s.static_region = {16, 64};
  s.scope = policy::PoolScope::kRequestLayer;
  s.steps = 30;
  s.expect_victims = false;
  s.queued_launches = true;
  RandomSelections source(s, 91);
  CHECK(run_lockstep(s, source) > 0);
}

TEST_CASE("residency kernel: a stream longer than its pool's directory is refused by plan()",
          "[gpu][residency]") {
  // One directory entry of 64 pages; a map of 100 pages would index past the directory.
  GpuPoolSpec spec;
  spec.streams = 1;
  spec.max_extent = 16;
  spec.capacity = 16;
  spec.directory_entries = 1;
  GpuResidency gpu(std::span<const GpuPoolSpec>(&spec, 1), 6);
  const policy::PartitionGeometry geometry{policy::PartitionKind::kFixed, 8, 8};
  policy::PartitionMap map(geometry);
  map.set_stored_tokens(100 * 8);
  const std::vector<std::uint32_t> ids = {70};
  const std::vector<StreamSelection> selections = {
      StreamSelection{map.view(), policy::static_region({0, 0}, 8, 800), ids, 0}};
  const std::vector<std::uint32_t> now = {1};
  CHECK_THROWS_WITH(gpu.plan(now, selections),
                    "gpu residency: stream 0 has 100 pages, more than its pool's 1 directory "
                    "entries of 64 pages");
  // Within the directory it plans.
  policy::PartitionMap fits(geometry);
  fits.set_stored_tokens(64 * 8);
  const std::vector<std::uint32_t> in_range = {3};
  const std::vector<StreamSelection> ok = {
      StreamSelection{fits.view(), policy::static_region({0, 0}, 8, 512), in_range, 0}};
  CHECK_NOTHROW(gpu.plan(now, ok));
}
