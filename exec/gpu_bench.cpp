#include "exec/gpu_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/policy/budget.h"
#include "common/policy/partition.h"
#include "exec/device.h"
#include "exec/gather.h"
#include "exec/gpu_residency.h"
#include "exec/memory.h"
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
      policy::request_footprint(budget, geometry, region_params, heads, max_context, 0)
          .mandatory_pages,
      k);
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
      events.start(nullptr);
      instance->run();
      events.stop(nullptr);
      const double t = events.seconds();
      if (step >= warmup_steps) times[m].push_back(t);
      instance->download();
    }
    for (std::uint32_t p = 0; p < specs.size(); ++p) {
      const PoolStepCounts& a = none.counts(p);
      for (const GpuResidency* other : {&selection, &all}) {
        const PoolStepCounts& b = other->counts(p);
        if (a.status != 0 || a.n != b.n || a.hits != b.hits || a.fetches != b.fetches ||
            a.bypassed != b.bypassed || a.victims != b.victims || b.status != 0) {
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
  row.hit_ratio = selected == 0 ? 0 : static_cast<double>(hits) / static_cast<double>(selected);
  for (int m = 0; m < 3; ++m) row.us[m] = median(times[m]) * 1e6;
  row.staged[0] = true;
  row.staged[1] = selection.staged_keys();
  row.staged[2] = all.staged_slots();
  return row;
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
      "skip-transfers", po::bool_switch(), "run only the residency part")(
      "skip-residency", po::bool_switch(), "run only the transfer part");
  const auto vm = cli::parse_options(
      args, "bench gpu", "[options]",
      "Measures, on GPU 0, (1) a fetch list of scattered pages (host pages in random order) "
      "moved by the gather kernel, one cudaMemcpyAsync per page, one cudaMemcpyBatchAsync and "
      "one bulk cudaMemcpyAsync of the same bytes on the same buffers, host to device and back, "
      "for pages of 2 KiB to 512 KiB; and (2) the residency kernel's time per layer launch "
      "at the given batch over generated selections (docs/gpu-kernels.md).",
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
  if (!(*vm)["skip-transfers"].as<bool>()) {
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
  if (!(*vm)["skip-residency"].as<bool>()) {
    const std::uint32_t batch = (*vm)["batch"].as<std::uint32_t>();
    const std::uint32_t context = (*vm)["context-tokens"].as<std::uint32_t>();
    const double k = (*vm)["buffer-ratio"].as<double>();
    const std::uint32_t steps = (*vm)["steps"].as<std::uint32_t>();
    std::cout << fmt::format(
        "\nResidency kernel (bucketed LRU, B = 64), one layer of {} requests × 8 KV heads, "
        "context {} tokens, buffer ratio k = {}, generated selections; median over {} steps "
        "after 8 warm-up steps. Columns by what the kernel keeps in shared memory (— where it "
        "would not fit without lowering concurrency):\n\n| algorithm | pool scope | pools | "
        "slots per pool | selected pages per layer | hit ratio | µs per layer, nothing staged | "
        "µs per layer, selection staged (default) | µs per layer, selection and slots staged | "
        "µs per pool (default, amortised) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        batch, context, k, steps);
    for (const char* algorithm : {"shadowkv", "seer", "token"}) {
      for (const bool per_stream : {false, true}) {
        const ResidencyRow r =
            bench_residency(algorithm, per_stream, batch, context, k, 8, steps, seed);
        const auto cell = [&](int m) {
          return r.staged[m] ? fmt::format("{:.1f}", r.us[m]) : std::string("—");
        };
        std::cout << fmt::format("| {} | {} | {} | {} | {} | {:.3f} | {} | {} | {} | {:.2f} |\n",
                                 r.algorithm, r.scope, r.pools, r.pool_slots, r.pages_per_layer,
                                 r.hit_ratio, cell(0), cell(1), cell(2), r.us[1] / r.pools);
      }
    }
  }
  return 0;
}

}  // namespace spin::exec
