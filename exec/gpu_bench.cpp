#include "exec/gpu_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/policy/budget.h"
#include "common/policy/partition.h"
#include "exec/cublaslt.h"
#include "exec/device.h"
#include "exec/gather.h"
#include "exec/gemm.h"
#include "exec/gpu_residency.h"
#include "exec/memory.h"
#include "exec/paged_attention.h"
#include "exec/prefill_attention.h"
#include "exec/selection.h"
#include "traces/gen/generator.h"

namespace spin::exec {
namespace {

namespace po = boost::program_options;

class Stream {
 public:
  Stream() { SPIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class EventPair {
 public:
  EventPair() {
    SPIN_CUDA_CHECK(cudaEventCreate(&start_));
    SPIN_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  void start(cudaStream_t s) { SPIN_CUDA_CHECK(cudaEventRecord(start_, s)); }
  void stop(cudaStream_t s) { SPIN_CUDA_CHECK(cudaEventRecord(stop_, s)); }
  double seconds() const {
    SPIN_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    SPIN_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median seconds of `reps` timed runs of `body` on `stream`, after one warm-up run.
template <class Body>
double time_median(cudaStream_t stream, int reps, Body&& body) {
  EventPair events;
  body();
  SPIN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    events.start(stream);
    body();
    events.stop(stream);
    times.push_back(events.seconds());
  }
  return median(times);
}

// Seconds per run of `run(r)`, r = 0, 1, …: one warm-up run, then a CUDA graph of `runs`
// back-to-back runs captured once and replayed `reps` times (median), so that launch gaps do not
// count.
template <class Run>
double graph_seconds_per_run(cudaStream_t stream, int runs, int reps, Run&& run) {
  run(0);
  SPIN_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  SPIN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < runs; ++r) run(r);
  SPIN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  SPIN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double t =
      time_median(stream, reps, [&] { SPIN_CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  SPIN_CUDA_CHECK(cudaGraphExecDestroy(exec));
  SPIN_CUDA_CHECK(cudaGraphDestroy(graph));
  return t / runs;
}

// A spot check that a bf16 output is finite and not all zero (the gpu suite checks the values):
// its first `count` elements, or its last with `from_end`.
void check_output(const DeviceArray<std::uint16_t>& out, std::size_t count, bool from_end,
                  const char* what) {
  std::vector<std::uint16_t> back(std::min<std::size_t>(out.size(), count));
  out.download(back, from_end ? out.size() - back.size() : 0);
  std::size_t bad = 0, nonzero = 0;
  for (const std::uint16_t h : back) {
    bad += (h & 0x7F80u) == 0x7F80u;
    nonzero += (h & 0x7FFFu) != 0;
  }
  if (bad > 0 || nonzero == 0)
    throw InvariantError(fmt::format("bench gpu: {} wrote a non-finite or all-zero output", what));
}

std::string page_label(std::uint64_t bytes) {
  return bytes >= (1u << 20) ? fmt::format("{} MiB", bytes >> 20)
                             : fmt::format("{} KiB", bytes >> 10);
}

struct TransferRow {
  std::uint64_t page_bytes;
  bool h2d;
  double gather_gbps, per_page_gbps, batch_gbps, bulk_gbps;
  std::string batch_error;  // why cudaMemcpyBatchAsync refused the list, if it did
};

// Part 1: scattered pages, host pages in random order, slots ascending; every method moves the
// same pages between the same buffers.
std::vector<TransferRow> bench_transfers(std::uint64_t total_bytes, int reps, int slow_reps,
                                         std::uint64_t seed) {
  MappedHostBuffer host(total_bytes);
  DeviceBuffer hbm(total_bytes);
  std::mt19937_64 rng(seed);
  {
    auto* words = reinterpret_cast<std::uint64_t*>(host.host());
    for (std::size_t i = 0; i < total_bytes / 8; ++i) words[i] = rng();
  }
  Stream stream;
  std::vector<TransferRow> rows;
  for (std::uint64_t page = 2048; page <= 512 * 1024; page *= 4) {
    const std::uint32_t n = static_cast<std::uint32_t>(total_bytes / page);
    std::vector<std::uint32_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0u);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<std::uint32_t> slots(n);
    std::iota(slots.begin(), slots.end(), 0u);
    const DeviceArray<std::uint32_t> d_host_page{std::span<const std::uint32_t>(perm)};
    const DeviceArray<std::uint32_t> d_slot{std::span<const std::uint32_t>(slots)};
    auto* hbm_bytes = static_cast<std::uint8_t*>(hbm.data());
    for (const bool h2d : {true, false}) {
      std::vector<void*> dsts(n);
      std::vector<const void*> srcs(n);
      std::vector<std::size_t> sizes(n, page);
      for (std::uint32_t i = 0; i < n; ++i) {
        void* device_page = hbm_bytes + std::uint64_t{i} * page;
        void* host_page = host.host() + std::uint64_t{perm[i]} * page;
        dsts[i] = h2d ? device_page : host_page;
        srcs[i] = h2d ? host_page : device_page;
      }
      const GatherParams params{
          host.device(),
          hbm_bytes,
          page,
          d_host_page.data(),
          d_slot.data(),
          n,
          h2d ? GatherDirection::kHostToDevice : GatherDirection::kDeviceToHost};
      const cudaMemcpyKind kind = h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
      cudaMemcpyAttributes attr{};
      attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
      std::size_t attr_index = 0;
      const cudaStream_t s = stream.get();
      TransferRow row{page, h2d, 0, 0, 0, 0, {}};
      const double bytes = static_cast<double>(n) * page;
      row.gather_gbps = bytes / time_median(s, reps, [&] { launch_gather(params, s); }) / 1e9;
      row.per_page_gbps =
          bytes /
          time_median(s, slow_reps,
                      [&] {
                        for (std::uint32_t i = 0; i < n; ++i) {
                          SPIN_CUDA_CHECK(cudaMemcpyAsync(dsts[i], srcs[i], page, kind, s));
                        }
                      }) /
          1e9;
      // cudaMemcpyBatchAsync may refuse a list (e.g. too many copies); the row then says so.
      const cudaError_t batch_status =
          cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), n, &attr, &attr_index, 1, s);
      if (batch_status == cudaSuccess) {
        SPIN_CUDA_CHECK(cudaStreamSynchronize(s));
        row.batch_gbps =
            bytes /
            time_median(s, slow_reps,
                        [&] {
                          SPIN_CUDA_CHECK(cudaMemcpyBatchAsync(
                              dsts.data(), srcs.data(), sizes.data(), n, &attr, &attr_index, 1, s));
                        }) /
            1e9;
      } else {
        cudaGetLastError();  // clear the failed call's error state
        row.batch_error = cudaGetErrorName(batch_status);
      }
      row.bulk_gbps = bytes /
                      time_median(s, reps,
                                  [&] {
                                    SPIN_CUDA_CHECK(cudaMemcpyAsync(
                                        h2d ? static_cast<void*>(hbm_bytes) : host.host(),
                                        h2d ? static_cast<const void*>(host.host()) : hbm_bytes,
                                        n * page, kind, s));
                                  }) /
                      1e9;
      rows.push_back(row);
    }
    // A spot check that the timed gather moved the right bytes (the gpu suite checks every byte).
    hbm.fill(0x5A);
    launch_gather(GatherParams{host.device(), hbm_bytes, page, d_host_page.data(), d_slot.data(), n,
                               GatherDirection::kHostToDevice},
                  stream.get());
    SPIN_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    std::vector<std::uint8_t> back(page);
    for (int k = 0; k < 8; ++k) {
      const std::uint32_t i = static_cast<std::uint32_t>(rng() % n);
      SPIN_CUDA_CHECK(cudaMemcpy(back.data(), hbm_bytes + std::uint64_t{i} * page, page,
                                 cudaMemcpyDeviceToHost));
      if (std::memcmp(back.data(), host.host() + std::uint64_t{perm[i]} * page, page) != 0) {
        throw InvariantError(
            fmt::format("bench gpu: gather of {}-byte pages moved wrong bytes", page));
      }
    }
  }
  return rows;
}

struct ResidencyRow {
  std::string algorithm;
  std::string scope;
  std::uint32_t pools;
  std::uint32_t pool_slots;
  std::uint64_t pages_per_layer;  // selected cacheable pages per layer step (mean)
  std::uint32_t page_tokens;
  double hit_ratio;
  double us[3];    // median per layer launch, by Staging (none, selection, selection + slots)
  bool staged[3];  // whether that instance's last plan staged what it asked for
};

// Part 2: one layer of `batch` requests at `context` tokens, buffer ratio k, generated selections;
// the same selections drive one instance per staging mode (their decisions must agree).
ResidencyRow bench_residency(const std::string& algorithm, bool per_stream_pools,
                             std::uint32_t batch, std::uint32_t context, double k,
                             std::uint32_t warmup_steps, std::uint32_t timed_steps,
                             std::uint64_t seed) {
  gen::GeneratorConfig g;
  g.algorithm = algorithm;
  g.seed = seed;
  config::ModelConfig model = gen::default_model();
  model.layers = 4;
  model.kv_heads = 8;
  model.query_heads = 32;
  g.locality.poor_layers = 0;
  g.workload.name = "fixed";
  g.workload.requests = batch;
  g.workload.prompt_tokens = context;
  g.workload.output_tokens = warmup_steps + timed_steps;
  const gen::Generator generator(g, model);
  const trace::AlgorithmInfo& alg = generator.algorithm_of(0);
  const std::uint32_t heads = model.kv_heads;
  const std::uint32_t layer = 2;  // a sparse layer (the generator's first layers may be dense)
  const policy::PartitionGeometry geometry{alg.partition_kind == trace::PartitionKind::kVariable
                                               ? policy::PartitionKind::kVariable
                                               : policy::PartitionKind::kFixed,
                                           alg.page_tokens, alg.partition_tokens};
  const policy::StaticRegionParams region_params{alg.sink_tokens, alg.local_window_tokens};
  policy::BudgetParams budget;
  budget.kind = alg.budget_tokens > 0 ? policy::BudgetKind::kTokens : policy::BudgetKind::kRatio;
  budget.ratio = alg.budget_ratio;
  budget.tokens = alg.budget_tokens;
  const std::uint32_t max_context = context + warmup_steps + timed_steps;
  // The cache of one layer of a request (its KV heads' share), sized at the largest context.
  const std::uint64_t layer_cache = policy::cache_pages(
      policy::request_footprint(budget, geometry, region_params, heads, max_context, 0), k);
  const std::uint32_t pools_per_request = per_stream_pools ? heads : 1;
  const std::uint32_t streams_per_pool = heads / pools_per_request;
  const std::vector<std::uint64_t> parts =
      policy::split_pages(layer_cache, std::vector<std::uint64_t>(pools_per_request, 1));
  const std::uint32_t page_log2 = policy::log2_exact(alg.page_tokens);
  const std::uint32_t max_pages = policy::pages_for_tokens(max_context, page_log2);
  std::vector<GpuPoolSpec> specs;
  std::uint32_t slot_base = 0;
  for (std::uint32_t r = 0; r < batch; ++r) {
    for (std::uint32_t p = 0; p < pools_per_request; ++p) {
      GpuPoolSpec s;
      s.streams = streams_per_pool;
      s.max_extent = static_cast<std::uint32_t>(parts[p]);
      s.capacity = s.max_extent;
      s.directory_entries = (max_pages + 511) / 512;
      s.policy = policy::PolicyParams{policy::PolicyKind::kBucketedLru, 64, 0};
      s.slot_base = slot_base;
      slot_base += s.max_extent;
      specs.push_back(s);
    }
  }
  GpuResidency none(specs, 9, Staging::kNone);
  GpuResidency selection(specs, 9, Staging::kSelection);
  GpuResidency all(specs, 9, Staging::kSelectionAndSlots);
  GpuResidency* const instances[3] = {&none, &selection, &all};
  std::vector<std::unique_ptr<trace::StepStream>> steps;
  for (std::uint32_t r = 0; r < batch; ++r) steps.push_back(generator.open_layer(r, layer));
  std::vector<double> times[3];
  std::uint64_t selected = 0, hits = 0;
  EventPair events;
  // Ahead of each timed launch, a memset that keeps the GPU busy while the host launches, so
  // that the host's launch latency is not timed (the attention part times graphs for the same
  // reason); it also leaves L2 cold, as a layer's other kernels would.
  constexpr std::uint64_t kBusyBytes = 256ull << 20;
  DeviceBuffer busy(kBusyBytes);
  for (std::uint32_t step = 0; step < warmup_steps + timed_steps; ++step) {
    const std::uint32_t tokens = context + step;
    std::vector<StreamSelection> selections;
    for (std::uint32_t r = 0; r < batch; ++r) {
      if (!steps[r]->next()) throw InvariantError("bench gpu: the generator ended early");
      for (std::uint32_t h = 0; h < heads; ++h) {
        StreamSelection s;
        const auto offsets = steps[r]->partition_offsets(h);
        s.map = policy::PartitionMapView{
            geometry.kind,
            page_log2,
            alg.partition_tokens,
            offsets.empty() ? (tokens + alg.partition_tokens - 1) / alg.partition_tokens
                            : static_cast<std::uint32_t>(offsets.size() - 1),
            tokens,
            offsets.empty() ? nullptr : offsets.data()};
        s.region = policy::static_region(region_params, alg.page_tokens, tokens);
        s.ids = steps[r]->selection(h);
        s.host_base = (r * heads + h) * max_pages;
        selections.push_back(s);
      }
    }
    const std::vector<std::uint32_t> now(specs.size(), step);
    for (int m = 0; m < 3; ++m) {
      GpuResidency* instance = instances[m];
      instance->plan(now, selections);
      SPIN_CUDA_CHECK(cudaMemsetAsync(busy.data(), static_cast<int>(step & 0xFF), kBusyBytes));
      events.start(nullptr);
      instance->run();
      events.stop(nullptr);
      const double t = events.seconds();
      if (step >= warmup_steps) times[m].push_back(t);
      instance->download();
    }
    for (std::uint32_t p = 0; p < specs.size(); ++p) {
      const PoolStepCounts& a = none.counts(p);
      for (const GpuResidency* other : {&none, &selection, &all}) {
        const std::uint32_t status = other->counts(p).status;
        if (status != 0) {
          throw InvariantError(
              fmt::format("bench gpu: the residency kernel's step of pool {} failed: {}", p,
                          policy::step_status_name(static_cast<policy::StepStatus>(status))));
        }
      }
      for (const GpuResidency* other : {&selection, &all}) {
        const PoolStepCounts& b = other->counts(p);
        if (a.n != b.n || a.hits != b.hits || a.fetches != b.fetches || a.bypassed != b.bypassed ||
            a.victims != b.victims) {
          throw InvariantError("bench gpu: the residency kernel's staging modes disagree");
        }
      }
      if (step >= warmup_steps) {
        selected += a.n;
        hits += a.hits;
      }
    }
  }
  ResidencyRow row;
  row.algorithm = algorithm;
  row.scope = per_stream_pools ? "stream" : "request-layer";
  row.pools = static_cast<std::uint32_t>(specs.size());
  row.pool_slots = specs[0].max_extent;
  row.pages_per_layer = selected / timed_steps;
  row.page_tokens = alg.page_tokens;
  row.hit_ratio = selected == 0 ? 0 : static_cast<double>(hits) / static_cast<double>(selected);
  for (int m = 0; m < 3; ++m) row.us[m] = median(times[m]) * 1e6;
  row.staged[0] = true;
  row.staged[1] = selection.staged_keys();
  row.staged[2] = all.staged_slots();
  return row;
}

// Part 3: paged decode attention. Device-to-device copy ceiling (bytes read + written), then
// sparse lists (random distinct slots) and dense lists (each stream's pages in order), timed as
// CUDA graphs of back-to-back runs that rotate over enough copies of the inputs that the K/V of
// one replay never fits in L2.
double bench_d2d_gbps(std::uint64_t bytes, int reps) {
  DeviceBuffer a(bytes), b(bytes);
  fill_random_bf16(static_cast<std::uint16_t*>(a.data()), bytes / 2, 7);
  Stream stream;
  const double t = time_median(stream.get(), reps, [&] {
    SPIN_CUDA_CHECK(
        cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
  });
  return 2.0 * static_cast<double>(bytes) / t / 1e9;
}

struct AttentionRow {
  std::uint32_t batch, tokens, page_tokens, group, work_items, split_tokens;
  double kv_bytes;
  double us[6];  // per run, by variant (kVariantOptions)
};

// Variants timed: no prefetch; the next chunk in registers (the default: DecodeAttentionOptions'
// defaults); the same with the merge fused into the attention kernel; L2 bulk prefetch 2 or 4
// chunks ahead; registers and L2 2 ahead.
constexpr int kAttentionVariants = 6;
constexpr DecodeAttentionOptions kVariantOptions[kAttentionVariants] = {
    {0, false, 0, false}, {0, true, 0, false},  {0, true, 0, true},
    {0, false, 2, false}, {0, false, 4, false}, {0, true, 2, false}};
constexpr int kDefaultVariant = 1;

// One shape: rows = batch · 8 KV heads, each listing `tokens` tokens (the last page partial when
// tokens is not a multiple of page_tokens). dense: slots of a stream in order, else scattered.
AttentionRow bench_attention(std::uint32_t batch, std::uint32_t tokens, std::uint32_t page_tokens,
                             std::uint32_t group, bool dense, int graph_runs, int reps,
                             std::uint64_t seed, bool only_default = false) {
  const DecodeAttentionShape shape{batch, 8, group, kAttentionHeadDim, page_tokens};
  const std::uint32_t rows = shape.rows();
  const std::uint32_t pages = (tokens + page_tokens - 1) / page_tokens;
  const std::uint64_t nnz = std::uint64_t{rows} * pages;
  const double kv_bytes = 2.0 * rows * tokens * kAttentionHeadDim * 2;
  // Copies of the inputs so that one graph's runs read at least 1 GiB of distinct K/V.
  const std::uint32_t sets = static_cast<std::uint32_t>(std::min<std::uint64_t>(
      graph_runs, std::max<std::uint64_t>(1, (1ull << 30) / nnz / shape.page_bytes())));
  if (nnz * sets > 0xFFFFFFF0ull) throw InputError("bench gpu: attention pool too large");
  HbmPagePool pool(static_cast<std::uint32_t>(nnz * sets), shape.page_bytes());
  fill_random_bf16(reinterpret_cast<std::uint16_t*>(pool.data()), pool.bytes() / 2, seed);
  DeviceArray<std::uint16_t> q(std::uint64_t{batch} * shape.query_heads() * kAttentionHeadDim);
  fill_random_bf16(q.data(), q.size(), seed + 1);
  DeviceArray<std::uint16_t> out(q.size());
  std::vector<std::uint32_t> indptr(rows + 1), last(rows, tokens - (pages - 1) * page_tokens);
  for (std::uint32_t r = 0; r <= rows; ++r) indptr[r] = r * pages;
  std::vector<std::uint32_t> indices(nnz * sets);
  std::mt19937_64 rng(seed);
  for (std::uint32_t s = 0; s < sets; ++s) {
    std::uint32_t* set = indices.data() + s * nnz;
    std::iota(set, set + nnz, static_cast<std::uint32_t>(s * nnz));
    if (!dense) std::shuffle(set, set + nnz, rng);
  }
  const DeviceArray<std::uint32_t> d_indptr{std::span<const std::uint32_t>(indptr)};
  const DeviceArray<std::uint32_t> d_last{std::span<const std::uint32_t>(last)};
  const DeviceArray<std::uint32_t> d_indices{std::span<const std::uint32_t>(indices)};
  AttentionRow row{batch, tokens, page_tokens, group, 0, 0, kv_bytes, {0, 0, 0, 0, 0, 0}};
  Stream stream;
  for (int variant = 0; variant < kAttentionVariants; ++variant) {
    if (only_default && variant != kDefaultVariant) continue;
    DecodeAttention attention;
    attention.plan(shape, indptr, last, kVariantOptions[variant]);
    if (variant == kDefaultVariant) {
      row.work_items = attention.work_items();
      row.split_tokens = attention.split_tokens();
    }
    const auto run = [&](int r) {
      attention.run(
          DecodeAttentionArgs{q.data(), pool.data(), d_indptr.data(),
                              d_indices.data() + (r % sets) * nnz, d_last.data(), out.data()},
          stream.get());
    };
    row.us[variant] = graph_seconds_per_run(stream.get(), graph_runs, reps, run) * 1e6;
  }
  check_output(out, 4096, false, "attention");
  return row;
}

// Part 4: selection (scores + top-k) over `rows` = batch · 8 KV heads of `partitions` summaries
// each, group 5, timed as CUDA graphs of back-to-back runs over rotating copies of the summaries
// (one per run, or fewer that still make 1 GiB; ≥ 80 MiB per replay even at batch 1 × 16K, more
// than L2), like the attention part.
struct SelectionRow {
  const char* algorithm;
  std::uint32_t batch, context, partition_tokens, partitions, k, work_items, blocks;
  double summary_bytes;
  double us_total, us_score;
};

SelectionRow bench_selection(SelectionAlgorithm algorithm, std::uint32_t batch,
                             std::uint32_t context, std::uint32_t partition_tokens, std::uint32_t k,
                             int graph_runs, int reps, std::uint64_t seed) {
  const SelectionShape shape{algorithm, batch, 8, 5, kSelectionHeadDim};
  const std::uint32_t rows = shape.rows();
  const std::uint32_t n = (context + partition_tokens - 1) / partition_tokens;
  std::vector<std::uint32_t> indptr(rows + 1);
  for (std::uint32_t r = 0; r <= rows; ++r) indptr[r] = r * n;
  const std::uint64_t elems = std::uint64_t{rows} * n * shape.summary_dim();
  const double bytes = 2.0 * static_cast<double>(elems);
  const std::uint32_t sets = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(graph_runs, std::max<std::uint64_t>(1, (1ull << 30) / (elems * 2))));
  DeviceArray<std::uint16_t> summaries(elems * sets);
  fill_random_bf16(summaries.data(), summaries.size(), seed);
  DeviceArray<std::uint16_t> q(std::uint64_t{batch} * shape.query_heads() * kSelectionHeadDim);
  fill_random_bf16(q.data(), q.size(), seed + 1);
  DeviceArray<std::uint16_t> w_q(std::uint64_t{shape.group} * kSelectionHeadDim * kSeerGateDim);
  fill_random_bf16(w_q.data(), w_q.size(), seed + 2);
  Selection selection;
  const std::uint32_t ks[1] = {k};
  selection.plan(shape, indptr, ks);
  DeviceArray<std::uint32_t> selected(
      std::max<std::uint32_t>(selection.selected_indptr().back(), 1));
  Stream stream;
  const auto time_graph = [&](bool score_only) {
    const auto run = [&](int r) {
      const SelectionArgs args{q.data(), summaries.data() + (r % sets) * elems, selected.data(),
                               w_q.data()};
      if (score_only) {
        selection.score(args, stream.get());
      } else {
        selection.run(args, stream.get());
      }
    };
    return graph_seconds_per_run(stream.get(), graph_runs, reps, run) * 1e6;
  };
  SelectionRow row{selection_algorithm_name(algorithm),
                   batch,
                   context,
                   partition_tokens,
                   n,
                   std::min(k, n),
                   selection.work_items(),
                   selection.score_blocks(),
                   bytes,
                   0,
                   0};
  row.us_total = time_graph(false);
  row.us_score = time_graph(true);
  // A spot check: the first row's selection is ascending and in range (the gpu suite checks it).
  std::vector<std::uint32_t> back(row.k);
  selected.download(back);
  for (std::uint32_t i = 0; i < row.k; ++i) {
    if (back[i] >= n || (i > 0 && back[i] <= back[i - 1]))
      throw InvariantError("bench gpu: selection wrote an invalid selection");
  }
  return row;
}
// Part 5: causal prefill attention, one request of q_len queries over kv_len keys (q_len = kv_len:
// a whole prompt; less: the last chunk of a chunked prefill), bf16, head_dim 128, random inputs.
// Each tiling is timed on the same tensors: median of `reps` runs after one warm-up run.
struct PrefillRow {
  std::uint32_t q_len, kv_len, q_heads, kv_heads, tiles;
  double flops;  // 4 · head_dim · q_heads · causal pairs, pairs = L²/2 for a whole prompt
  double ms[kPrefillTilings + 1];  // by tiling (lazy rescale), then the default tiling, eager
};

PrefillRow bench_prefill(std::uint32_t q_len, std::uint32_t kv_len, std::uint32_t q_heads,
                         std::uint32_t kv_heads, int reps, std::uint64_t seed,
                         int only_tiling = -1) {
  const PrefillAttentionShape shape{kv_heads, q_heads / kv_heads, kPrefillHeadDim};
  const std::uint64_t q_elems = std::uint64_t{q_len} * q_heads * kPrefillHeadDim;
  const std::uint64_t kv_elems = std::uint64_t{kv_len} * kv_heads * kPrefillHeadDim;
  DeviceArray<std::uint16_t> q(q_elems), k(kv_elems), v(kv_elems), out(q_elems);
  fill_random_bf16(q.data(), q_elems, seed + 11);
  fill_random_bf16(k.data(), kv_elems, seed + 12);
  fill_random_bf16(v.data(), kv_elems, seed + 13);
  const std::vector<std::uint32_t> cu_q = {0, q_len}, cu_k = {0, kv_len};
  const double pairs = q_len == kv_len ? 0.5 * static_cast<double>(q_len) * q_len
                                       : static_cast<double>(q_len) * (kv_len - q_len) +
                                             0.5 * static_cast<double>(q_len) * q_len;
  PrefillRow row{q_len, kv_len, q_heads, kv_heads, 0, 4.0 * kPrefillHeadDim * q_heads * pairs, {}};
  Stream stream;
  const PrefillTiling default_tiling = PrefillAttentionOptions{}.tiling;
  for (std::uint32_t t = 0; t <= kPrefillTilings; ++t) {
    if (only_tiling >= 0 && static_cast<std::uint32_t>(only_tiling) != t) continue;
    PrefillAttention attention;
    attention.plan(shape, cu_q, cu_k,
                   t < kPrefillTilings
                       ? PrefillAttentionOptions{static_cast<PrefillTiling>(t), true}
                       : PrefillAttentionOptions{default_tiling, false});
    if (t == static_cast<std::uint32_t>(PrefillAttentionOptions{}.tiling)) {
      row.tiles = attention.tiles();
    }
    row.ms[t] =
        time_median(stream.get(), reps,
                    [&] {
                      attention.run(PrefillAttentionArgs{q.data(), k.data(), v.data(), out.data()},
                                    stream.get());
                    }) *
        1e3;
    check_output(out, 1 << 16, true, "prefill attention");
  }
  return row;
}

const char* tiling_name(std::uint32_t t) {
  constexpr const char* kNames[kPrefillTilings] = {
      "128q/4 warps",   "128q/8 warps", "64q/4 warps", "256q/8 warps", "wgmma 128q/2 warpgroups",
      "wgmma staggered"};
  return kNames[t];
}

// Part 6: the dense layers' GEMMs through cuBLASLt (exec/gemm.h), Y[m, n] = X[m, k] · W[n, k]ᵀ,
// bf16, default options (alignment 16, no bias), timed as CUDA graphs of back-to-back runs that
// rotate over enough copies of W that one replay reads ≥ 1 GiB of distinct weights (more than L2),
// as decode does across layers (at m ≥ 4096, compute-bound, 4 runs over at most 4 copies); X
// stays hot (the activations of a layer are small and just written).
struct GemmRow {
  const char* name;
  std::uint32_t m, n, k;
  double us;
  double flops, weight_bytes;
  int algorithms;
  std::uint64_t workspace_bytes;
  float waves;
};

GemmRow bench_gemm(const char* name, std::uint32_t m, std::uint32_t n, std::uint32_t k,
                   int graph_runs, int reps, std::uint64_t seed) {
  const GemmShape shape{m, n, k};
  const std::uint64_t w_elems = std::uint64_t{n} * k;
  const int runs = m >= 4096 ? std::min(graph_runs, 4) : graph_runs;  // ms per run: fewer
  const std::uint32_t sets = static_cast<std::uint32_t>(std::min<std::uint64_t>(
      runs, std::max<std::uint64_t>(1, ((1ull << 30) + 2 * w_elems - 1) / (2 * w_elems))));
  DeviceArray<std::uint16_t> w(w_elems * sets), x(std::uint64_t{m} * k), y(std::uint64_t{m} * n);
  fill_random_bf16(w.data(), w.size(), seed + 21);
  fill_random_bf16(x.data(), x.size(), seed + 22);
  Gemm gemm;
  gemm.plan(shape);
  Stream stream;
  const auto run = [&](int r) {
    gemm.run(GemmArgs{x.data(), w.data() + (r % sets) * w_elems, y.data()}, stream.get());
  };
  const double run_s = graph_seconds_per_run(stream.get(), runs, reps, run);
  check_output(y, 1 << 16, true, "the GEMM");
  return GemmRow{name,
                 m,
                 n,
                 k,
                 run_s * 1e6,
                 shape.flops(),
                 static_cast<double>(shape.weight_bytes()),
                 gemm.algorithms(),
                 gemm.workspace_bytes(),
                 gemm.waves()};
}

}  // namespace

int bench_gpu(const cli::Args& args) {
  po::options_description opts("Options");
  opts.add_options()("total-mib", po::value<std::uint32_t>()->default_value(256),
                     "bytes of the scattered fetch list per page size, in MiB")(
      "reps", po::value<int>()->default_value(20), "timed repetitions (gather, bulk copy)")(
      "slow-reps", po::value<int>()->default_value(3),
      "timed repetitions of the per-page and batched DMA copies")(
      "batch", po::value<std::uint32_t>()->default_value(64), "requests (residency part)")(
      "context-tokens", po::value<std::uint32_t>()->default_value(32768),
      "prompt tokens per request (residency part)")(
      "buffer-ratio", po::value<double>()->default_value(5.0),
      "k: buffering pages per mandatory page (residency part)")(
      "steps", po::value<std::uint32_t>()->default_value(40),
      "timed decode steps (residency part), after 8 warm-up steps")(
      "seed", po::value<std::uint64_t>()->default_value(1), "seed of pages and selections")(
      "skip-transfers", po::bool_switch(), "skip the transfer part")(
      "skip-residency", po::bool_switch(), "skip the residency part")(
      "skip-attention", po::bool_switch(), "skip the attention part")(
      "skip-selection", po::bool_switch(), "skip the selection part")(
      "skip-prefill", po::bool_switch(), "skip the prefill attention part")(
      "skip-gemm", po::bool_switch(), "skip the GEMM (cuBLASLt) part")(
      "only-prefill", po::bool_switch(), "run only the prefill attention part")(
      "only-gemm", po::bool_switch(), "run only the GEMM (cuBLASLt) part")(
      "peak-tflops", po::value<double>()->default_value(989.5),
      "bf16 dense peak for the GEMM part's efficiency column (the h100-sxm and h200 presets' "
      "bf16_dense_tflops)")("prefill-reps", po::value<int>()->default_value(5),
                            "timed runs per prefill shape and tiling (median)")(
      "gemm-csv", po::value<std::string>()->default_value(""),
      "also write the GEMM rows as CSV to this file")(
      "prefill-csv", po::value<std::string>()->default_value(""),
      "also write the prefill rows as CSV to this file (for exec/bench/sdpa_bench.py --prefill)")(
      "prefill-shape", po::value<std::string>()->default_value(""),
      "time only this prefill shape, Q_LEN,KV_LEN,Q_HEADS,KV_HEADS, default tiling (e.g. for a "
      "profiler)")(
      "attention-csv", po::value<std::string>()->default_value(""),
      "also write the dense attention rows as CSV to this file (for exec/bench/sdpa_bench.py)")(
      "attention-shape", po::value<std::string>()->default_value(""),
      "time only this attention shape, BATCH,TOKENS,PAGE_TOKENS,sparse|dense, default variant "
      "(e.g. for a profiler)")("graph-runs", po::value<int>()->default_value(20),
                               "attention runs per timed CUDA graph (attention part)");
  const auto vm = cli::parse_options(
      args, "bench gpu", "[options]",
      "Measures, on GPU 0, (1) a fetch list of scattered pages (host pages in random order) "
      "moved by the gather kernel, one cudaMemcpyAsync per page, one cudaMemcpyBatchAsync and "
      "one bulk cudaMemcpyAsync of the same bytes on the same buffers, host to device and back, "
      "for pages of 2 KiB to 512 KiB; and (2) the residency kernel's time per layer launch "
      "at the given batch over generated selections, and its ratio to the same layer's sparse "
      "attention; (3) paged decode attention, sparse and dense, "
      "against a device-to-device copy; (4) selection (scores + top-k) per algorithm, against "
      "the same copy; (5) causal prefill attention at 16K and 64K tokens; (6) the dense layers' "
      "GEMMs "
      "(Qwen3-14B's projections through cuBLASLt) at decode and prefill token counts "
      "(docs/gpu-kernels.md).",
      opts);
  if (!vm) return 0;
  char why[256] = "";
  if (device_count(why, sizeof(why)) == 0)
    throw InputError(fmt::format("no CUDA device is visible ({})", why[0] ? why : "count is 0"));
  SPIN_CUDA_CHECK(cudaSetDevice(0));
  const DeviceInfo d = query_device(0);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::cout << fmt::format("spin bench gpu: {} (sm_{}{}, {} SMs), {}\n", d.name, d.cc_major,
                           d.cc_minor, d.sm_count, date);
  const std::uint64_t seed = (*vm)["seed"].as<std::uint64_t>();
  const bool only_prefill = (*vm)["only-prefill"].as<bool>();
  const bool only_gemm = (*vm)["only-gemm"].as<bool>();
  if (only_gemm && only_prefill)
    throw InputError("bench gpu: --only-prefill and --only-gemm exclude each other");
  const bool only_one = only_prefill || only_gemm;  // parts 1-4 are off
  if (!only_one && !(*vm)["skip-transfers"].as<bool>()) {
    const std::uint64_t total = std::uint64_t{(*vm)["total-mib"].as<std::uint32_t>()} << 20;
    const auto rows =
        bench_transfers(total, (*vm)["reps"].as<int>(), (*vm)["slow-reps"].as<int>(), seed);
    std::cout << fmt::format(
        "\nScattered pages, {} MiB per run, host pages in random order (GB/s = 1e9 B/s, "
        "median):\n\n| page | dir | gather kernel | cudaMemcpyAsync per page | "
        "cudaMemcpyBatchAsync | bulk cudaMemcpyAsync | gather / bulk |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n",
        total >> 20);
    for (const TransferRow& r : rows) {
      std::cout << fmt::format(
          "| {} | {} | {:.1f} | {:.1f} | {} | {:.1f} | {:.2f} |\n", page_label(r.page_bytes),
          r.h2d ? "H2D" : "D2H", r.gather_gbps, r.per_page_gbps,
          r.batch_error.empty() ? fmt::format("{:.1f}", r.batch_gbps) : r.batch_error, r.bulk_gbps,
          r.gather_gbps / r.bulk_gbps);
    }
  }
  if (!only_one && !(*vm)["skip-residency"].as<bool>()) {
    const std::uint32_t batch = (*vm)["batch"].as<std::uint32_t>();
    const std::uint32_t context = (*vm)["context-tokens"].as<std::uint32_t>();
    const double k = (*vm)["buffer-ratio"].as<double>();
    const std::uint32_t steps = (*vm)["steps"].as<std::uint32_t>();
    const int reps = (*vm)["reps"].as<int>();
    const int graph_runs = (*vm)["graph-runs"].as<int>();
    std::cout << fmt::format(
        "\nResidency kernel (bucketed LRU, B = 64), one layer of {} requests × 8 KV heads, "
        "context {} tokens, buffer ratio k = {}, generated selections; median over {} steps "
        "after 8 warm-up steps, each launch timed with CUDA events behind a 256 MiB memset (GPU "
        "time only; L2 cold). Columns by what the kernel keeps in shared memory (— where it "
        "would not fit without lowering concurrency). Attention: sparse decode attention of the "
        "same layer (batch {}, 8 KV heads, group 5, head_dim 128, bf16), each stream over its "
        "mean selected pages (selected pages per layer / streams, rounded, × page tokens), timed "
        "as in the attention part (default variant); ratio = residency (default staging) / "
        "attention:\n\n| algorithm | pool scope | pools | slots per pool | selected pages per "
        "layer | hit ratio | µs per layer, nothing staged | µs per layer, selection staged "
        "(default) | µs per layer, selection and slots staged | µs per pool (default, "
        "amortised) | attention tokens per stream | attention µs per layer | residency / "
        "attention |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        batch, context, k, steps, batch);
    for (const char* algorithm : {"shadowkv", "seer", "token"}) {
      double attention_us = 0;
      std::uint32_t attention_tokens = 0;
      for (const bool per_stream : {false, true}) {
        const ResidencyRow r =
            bench_residency(algorithm, per_stream, batch, context, k, 8, steps, seed);
        if (attention_us == 0) {
          const std::uint64_t streams = std::uint64_t{batch} * 8;
          const std::uint64_t pages =
              std::max<std::uint64_t>(1, (r.pages_per_layer + streams / 2) / streams);
          attention_tokens = static_cast<std::uint32_t>(pages * r.page_tokens);
          attention_us = bench_attention(batch, attention_tokens, r.page_tokens, 5, false,
                                         graph_runs, reps, seed, true)
                             .us[kDefaultVariant];
        }
        const auto cell = [&](int m) {
          return r.staged[m] ? fmt::format("{:.1f}", r.us[m]) : std::string("—");
        };
        std::cout << fmt::format(
            "| {} | {} | {} | {} | {} | {:.3f} | {} | {} | {} | {:.2f} | {} | {:.1f} | {:.3f} "
            "|\n",
            r.algorithm, r.scope, r.pools, r.pool_slots, r.pages_per_layer, r.hit_ratio, cell(0),
            cell(1), cell(2), r.us[1] / r.pools, attention_tokens, attention_us,
            r.us[1] / attention_us);
      }
    }
  }
  double measured_d2d = 0;  // GB/s
  // The device-to-device copy ceiling: measured and printed once, by whichever part needs it first.
  const auto d2d_gbps = [&] {
    if (measured_d2d == 0) {
      measured_d2d = bench_d2d_gbps(1ull << 30, (*vm)["reps"].as<int>());
      std::cout << fmt::format(
          "\nDevice-to-device copy, 1 GiB, cudaMemcpyAsync: {:.0f} GB/s (bytes read + "
          "written).\n",
          measured_d2d);
    }
    return measured_d2d;
  };
  const std::string one_shape = (*vm)["attention-shape"].as<std::string>();
  if (!one_shape.empty() && !only_one) {
    std::uint32_t batch = 0, tokens = 0, page_tokens = 0;
    char kind[16] = "";
    if (std::sscanf(one_shape.c_str(), "%u,%u,%u,%15s", &batch, &tokens, &page_tokens, kind) != 4 ||
        batch == 0 || tokens == 0 ||
        (std::string(kind) != "sparse" && std::string(kind) != "dense")) {
      throw InputError(fmt::format(
          "bench gpu: --attention-shape '{}': expected BATCH,TOKENS,PAGE_TOKENS,sparse|dense",
          one_shape));
    }
    const AttentionRow r =
        bench_attention(batch, tokens, page_tokens, 5, std::string(kind) == "dense",
                        (*vm)["graph-runs"].as<int>(), (*vm)["reps"].as<int>(), seed, true);
    std::cout << fmt::format("attention {}: {:.1f} µs per run, {:.0f} GB/s\n", one_shape,
                             r.us[kDefaultVariant], r.kv_bytes / (r.us[kDefaultVariant] * 1e3));
  } else if (!only_one && !(*vm)["skip-attention"].as<bool>()) {
    const int reps = (*vm)["reps"].as<int>();
    const int graph_runs = (*vm)["graph-runs"].as<int>();
    const double d2d = d2d_gbps();
    const char* header =
        "| {} | page tokens | blocks | largest item (tokens) | K/V MiB | µs per run (default) | "
        "GB/s, no prefetch | GB/s, registers (default) | GB/s, registers, fused merge | GB/s, "
        "L2 2 ahead | GB/s, L2 4 ahead | GB/s, registers + L2 2 ahead | default / D2D |\n| --- "
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    std::cout << fmt::format(
        "\nSparse decode attention: 8 KV heads, 40 query heads (group 5), head_dim 128, bf16; "
        "each row lists `selected` tokens on random distinct pages; time per run = a CUDA graph "
        "of {} back-to-back runs over rotating inputs, median of {} replays; GB/s = K/V bytes "
        "read / time; columns by prefetch variant.\n\n",
        graph_runs, reps);
    std::cout << fmt::format(fmt::runtime(header), "batch | selected tokens");
    const auto gbps = [](const AttentionRow& r, int v) { return r.kv_bytes / (r.us[v] * 1e3); };
    const auto print = [&](const AttentionRow& r) {
      std::cout << fmt::format(
          "| {} | {} | {} | {} | {} | {:.1f} | {:.1f} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | "
          "{:.0f} | {:.0f} | {:.2f} |\n",
          r.batch, r.tokens, r.page_tokens, r.work_items, r.split_tokens, r.kv_bytes / (1 << 20),
          r.us[kDefaultVariant], gbps(r, 0), gbps(r, 1), gbps(r, 2), gbps(r, 3), gbps(r, 4),
          gbps(r, 5), gbps(r, kDefaultVariant) / d2d);
    };
    for (const std::uint32_t batch : {1u, 8u, 32u, 128u}) {
      for (const std::uint32_t tokens : {1024u, 4096u, 16384u}) {
        print(bench_attention(batch, tokens, 16, 5, false, graph_runs, reps, seed));
      }
    }
    for (const std::uint32_t pt : {8u, 32u}) {
      print(bench_attention(32, 4096, pt, 5, false, graph_runs, reps, seed));
    }
    std::cout << "\nDense decode attention (all pages of each request, in order), page tokens 16, "
                 "same columns:\n\n";
    std::cout << fmt::format(fmt::runtime(header), "batch | KV tokens");
    const std::string csv_path = (*vm)["attention-csv"].as<std::string>();
    std::ofstream csv;
    if (!csv_path.empty()) {
      csv.open(csv_path);
      if (!csv) throw InputError(fmt::format("bench gpu: cannot write {}", csv_path));
      csv << "batch,kv_tokens,us,gbps,d2d_gbps\n";
    }
    const std::pair<std::uint32_t, std::uint32_t> dense_shapes[] = {
        {1, 16384}, {8, 16384}, {64, 1024}, {64, 4096}, {32, 16384}, {8, 65536}};
    for (const auto& [batch, tokens] : dense_shapes) {
      const AttentionRow r = bench_attention(batch, tokens, 16, 5, true, graph_runs, reps, seed);
      print(r);
      if (csv) {
        csv << fmt::format("{},{},{:.3f},{:.1f},{:.1f}\n", batch, tokens, r.us[kDefaultVariant],
                           gbps(r, kDefaultVariant), d2d);
      }
    }
  }
  if (!only_one && !(*vm)["skip-selection"].as<bool>()) {
    const int reps = (*vm)["reps"].as<int>();
    const int graph_runs = (*vm)["graph-runs"].as<int>();
    const double d2d = d2d_gbps();
    std::cout << fmt::format(
        "\nSelection (scores + top-k): 8 KV heads, 40 query heads (group 5), head_dim 128, bf16 "
        "summaries, random; time per run = a CUDA graph of {} back-to-back runs over rotating "
        "summaries, median of {} replays; GB/s = summary bytes read / time (scores + top-k).\n\n"
        "| algorithm | batch | context tokens | partition tokens | partitions per row | k | score "
        "items | score blocks | summary MiB | µs per run | µs, scores only | GB/s | / D2D |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        graph_runs, reps);
    const auto print = [&](const SelectionRow& r) {
      const double gbps = r.summary_bytes / (r.us_total * 1e3);
      std::cout << fmt::format(
          "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.0f} | {:.2f} "
          "|\n",
          r.algorithm, r.batch, r.context, r.partition_tokens, r.partitions, r.k, r.work_items,
          r.blocks, r.summary_bytes / (1 << 20), r.us_total, r.us_score, gbps, gbps / d2d);
    };
    const auto budget = [](std::uint32_t context, double ratio, std::uint32_t g) {
      return std::max<std::uint32_t>(1,
                                     static_cast<std::uint32_t>(std::lround(ratio * context / g)));
    };
    for (const std::uint32_t batch : {1u, 8u, 32u, 128u}) {
      for (const std::uint32_t context : {16384u, 65536u, 131072u}) {
        print(bench_selection(SelectionAlgorithm::kShadowKv, batch, context, 8,
                              budget(context, 0.0156, 8), graph_runs, reps, seed));
      }
    }
    for (const auto& [batch, context] :
         {std::pair<std::uint32_t, std::uint32_t>{8, 65536}, {32, 131072}, {128, 131072}}) {
      print(bench_selection(SelectionAlgorithm::kQuest, batch, context, 16,
                            budget(context, 0.0156, 16), graph_runs, reps, seed));
      print(bench_selection(SelectionAlgorithm::kSeer, batch, context, 32, 2048 / 32, graph_runs,
                            reps, seed));
      print(bench_selection(SelectionAlgorithm::kRetroInfer, batch, context, 16,
                            budget(context, 0.018, 16), graph_runs, reps, seed));
    }
  }
  const std::string prefill_shape = (*vm)["prefill-shape"].as<std::string>();
  const int prefill_reps = (*vm)["prefill-reps"].as<int>();
  const auto tflops = [](const PrefillRow& r, std::uint32_t t) {
    return r.flops / (r.ms[t] * 1e-3) / 1e12;
  };
  const std::uint32_t default_tiling = static_cast<std::uint32_t>(PrefillAttentionOptions{}.tiling);
  if (!prefill_shape.empty()) {
    std::uint32_t q_len = 0, kv_len = 0, q_heads = 0, kv_heads = 0;
    if (std::sscanf(prefill_shape.c_str(), "%u,%u,%u,%u", &q_len, &kv_len, &q_heads, &kv_heads) !=
            4 ||
        q_len == 0 || q_len > kv_len || kv_heads == 0 || q_heads % kv_heads != 0) {
      throw InputError(fmt::format(
          "bench gpu: --prefill-shape '{}': expected Q_LEN,KV_LEN,Q_HEADS,KV_HEADS with "
          "Q_LEN ≤ KV_LEN and Q_HEADS a multiple of KV_HEADS",
          prefill_shape));
    }
    const PrefillRow r = bench_prefill(q_len, kv_len, q_heads, kv_heads, prefill_reps, seed,
                                       static_cast<int>(default_tiling));
    std::cout << fmt::format("prefill {}: {:.3f} ms per run, {:.0f} TFLOP/s\n", prefill_shape,
                             r.ms[default_tiling], tflops(r, default_tiling));
  } else if (!only_gemm && !(*vm)["skip-prefill"].as<bool>()) {
    std::cout << fmt::format(
        "\nCausal prefill attention: batch 1, head_dim 128, bf16 in, fp32 accumulation; median "
        "of {} runs after a warm-up; FLOPs = 4 · head_dim · query heads · L²/2 for an L-token "
        "prompt (FlashAttention's causal convention; for a chunk of q queries after c cached "
        "tokens, 4 · head_dim · query heads · (q·c + q²/2)); TFLOP/s by tiling (default: {}).\n\n"
        "| queries | keys | query / KV heads | tiles | ms (default) |",
        prefill_reps, tiling_name(default_tiling));
    for (std::uint32_t t = 0; t < kPrefillTilings; ++t)
      std::cout << fmt::format(" TFLOP/s, {} |", tiling_name(t));
    std::cout << fmt::format(" TFLOP/s, {}, eager rescale |\n|", tiling_name(default_tiling));
    for (std::uint32_t c = 0; c < kPrefillTilings + 6; ++c) std::cout << " --- |";
    std::cout << "\n";
    const std::string csv_path = (*vm)["prefill-csv"].as<std::string>();
    std::ofstream csv;
    if (!csv_path.empty()) {
      csv.open(csv_path);
      if (!csv) throw InputError(fmt::format("bench gpu: cannot write {}", csv_path));
      csv << "q_len,kv_len,q_heads,kv_heads,ms,tflops,best_tiling,best_tflops\n";
    }
    struct Shape {
      std::uint32_t q_len, kv_len, q_heads, kv_heads;
    };
    const Shape shapes[] = {{16384, 16384, 40, 8},
                            {65536, 65536, 40, 8},
                            {16384, 16384, 32, 8},
                            {65536, 65536, 32, 8},
                            {2048, 65536, 40, 8}};
    for (const Shape& sh : shapes) {
      const PrefillRow r =
          bench_prefill(sh.q_len, sh.kv_len, sh.q_heads, sh.kv_heads, prefill_reps, seed);
      std::uint32_t best = 0;
      for (std::uint32_t t = 1; t < kPrefillTilings; ++t)
        if (r.ms[t] < r.ms[best]) best = t;
      std::cout << fmt::format("| {} | {} | {} / {} | {} | {:.2f} |", r.q_len, r.kv_len, r.q_heads,
                               r.kv_heads, r.tiles, r.ms[default_tiling]);
      for (std::uint32_t t = 0; t <= kPrefillTilings; ++t)
        std::cout << fmt::format(" {:.0f} |", tflops(r, t));
      std::cout << "\n";
      if (csv) {
        csv << fmt::format("{},{},{},{},{:.4f},{:.1f},{},{:.1f}\n", r.q_len, r.kv_len, r.q_heads,
                           r.kv_heads, r.ms[default_tiling], tflops(r, default_tiling),
                           tiling_name(best), tflops(r, best));
      }
    }
  }
  if (!only_prefill && !(*vm)["skip-gemm"].as<bool>() && prefill_shape.empty() &&
      one_shape.empty()) {
    const int reps = (*vm)["reps"].as<int>();
    const int graph_runs = (*vm)["graph-runs"].as<int>();
    const double peak = (*vm)["peak-tflops"].as<double>();
    const double d2d = d2d_gbps();
    const CublasLt& lt = cublaslt();
    std::cout << fmt::format(
        "\nGEMMs through cuBLASLt {} ({}): Y[m, n] = X[m, k] · W[n, k]ᵀ, bf16 in and out, fp32 "
        "accumulation, the heuristic's first algorithm; Qwen3-14B's projections (hidden 5120, 40 "
        "query / 8 KV heads of 128, MLP 17408); time per run = a CUDA graph of back-to-back runs "
        "over rotating weight copies (≥ 1 GiB per replay below m = 4096), median of {} replays; "
        "TFLOP/s = 2·m·n·k "
        "/ time; / peak = over {} TFLOP/s (bf16 dense); weight GB/s = n·k·2 bytes / time; / D2D "
        "= over the copy above.\n\n"
        "| projection | m | n | k | µs per run | TFLOP/s | / peak | weight GB/s | / D2D | "
        "algorithms | workspace KiB | waves |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        lt.version, lt.library.path(), reps, peak);
    struct Projection {
      const char* name;
      std::uint32_t n, k;
    };
    const Projection projections[] = {{"qkv", 5120 + 2 * 1024, 5120},
                                      {"o", 5120, 5120},
                                      {"gate_up", 2 * 17408, 5120},
                                      {"down", 5120, 17408}};
    struct LayerSum {
      std::uint32_t m;
      double us = 0, flops = 0, weight_bytes = 0;
    };
    std::vector<LayerSum> layers;
    const std::string csv_path = (*vm)["gemm-csv"].as<std::string>();
    std::ofstream csv;
    if (!csv_path.empty()) {
      csv.open(csv_path);
      if (!csv) throw InputError(fmt::format("bench gpu: cannot write {}", csv_path));
      csv << "projection,m,n,k,us,tflops,weight_gbps,d2d_gbps,peak_tflops\n";
    }
    for (const std::uint32_t m : {1u, 8u, 64u, 256u, 8192u}) {
      LayerSum layer{m};
      for (const Projection& p : projections) {
        const GemmRow r = bench_gemm(p.name, m, p.n, p.k, graph_runs, reps, seed);
        const double tflops = r.flops / (r.us * 1e-6) / 1e12;
        const double gbps = r.weight_bytes / (r.us * 1e3);
        std::cout << fmt::format(
            "| {} | {} | {} | {} | {:.1f} | {:.1f} | {:.3f} | {:.0f} | {:.2f} | {} | {} | {:.2f} "
            "|\n",
            r.name, r.m, r.n, r.k, r.us, tflops, tflops / peak, gbps, gbps / d2d, r.algorithms,
            r.workspace_bytes >> 10, r.waves);
        if (csv) {
          csv << fmt::format("{},{},{},{},{:.3f},{:.2f},{:.1f},{:.1f},{}\n", r.name, r.m, r.n, r.k,
                             r.us, tflops, gbps, d2d, peak);
        }
        layer.us += r.us;
        layer.flops += r.flops;
        layer.weight_bytes += r.weight_bytes;
      }
      layers.push_back(layer);
    }
    std::cout << "\nOne layer's four projections together (sums of the rows above):\n\n"
                 "| m | µs per layer | TFLOP/s | / peak | weight GB/s | / D2D |\n"
                 "| --- | --- | --- | --- | --- | --- |\n";
    for (const LayerSum& l : layers) {
      const double tflops = l.flops / (l.us * 1e-6) / 1e12;
      const double gbps = l.weight_bytes / (l.us * 1e3);
      std::cout << fmt::format("| {} | {:.1f} | {:.1f} | {:.3f} | {:.0f} | {:.2f} |\n", l.m, l.us,
                               tflops, tflops / peak, gbps, gbps / d2d);
    }
  }
  return 0;
}

}  // namespace spin::exec
