#include "sim/cli/bench_commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <ranges>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/config/config.h"
#include "common/error.h"
#include "common/policy/cache_config.h"
#include "common/policy/metadata.h"
#include "common/text.h"
#include "common/trace/memory_source.h"
#include "sim/cli/stopwatch.h"
#include "sim/replay.h"
#include "sim/sim_outputs.h"
#include "sim/simulator.h"
#include "sim/trace_source.h"
#include "traces/gen/generator.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

// One generated ShadowKV request of `context` prompt tokens and `steps` decode steps, in memory.
trace::MemorySource shadowkv_request(uint32_t context, uint32_t steps, uint32_t layers,
                                     uint64_t seed) {
  gen::GeneratorConfig g;
  g.algorithm = "shadowkv";
  g.seed = seed;
  g.workload.name = "fixed";
  g.workload.requests = 1;
  g.workload.prompt_tokens = context;
  g.workload.output_tokens = steps;
  config::ModelConfig model = gen::default_model();
  model.layers = layers;
  const gen::Generator generator(g, model);
  return trace::MemorySource(trace::materialize(generator, 0, 1));
}

struct Timed {
  sim::ReplayResult result;
  double seconds;
  double cpu_seconds;
};

Timed timed_replay(const trace::TraceSource& source, const std::string& policy, double k,
                   policy::PageTableLayout page_table) {
  sim::ReplayOptions options;
  options.cache.policy = policy;
  options.cache.buffer_ratio = k;
  options.cache.page_table = page_table;
  options.threads = 1;
  const Stopwatch clock;
  Timed t{sim::replay(source, options), 0, 0};
  t.seconds = clock.wall_seconds();
  t.cpu_seconds = clock.cpu_seconds();
  return t;
}

std::string mib(uint64_t bytes) {
  return fmt::format("{:.2f}", static_cast<double>(bytes) / (1 << 20));
}

const char* layout_name(policy::PageTableLayout layout) {
  return layout == policy::PageTableLayout::kHashed ? "hashed" : "two-level";
}

int bench_core(const Args& args) {
  po::options_description options("Options");
  options.add_options()("steps", po::value<uint32_t>()->default_value(300),
                        "decode steps replayed")("layers", po::value<uint32_t>()->default_value(4),
                                                 "layers (8 KV heads each, Qwen3-14B shape)")(
      "context-tokens", po::value<uint32_t>()->default_value(131072),
      "prompt tokens of the replay benchmark's request")("buffer-ratio",
                                                         po::value<double>()->default_value(4.0),
                                                         "k: buffering pages per mandatory page")(
      "seed", po::value<uint64_t>()->default_value(1), "generator seed")(
      "policies",
      po::value<std::vector<std::string>>()->multitoken()->default_value(
          {"bucketed-lru", "lru", "fifo", "belady"}, "bucketed-lru lru fifo belady"),
      "replacement policies timed, each with every layout of --page-tables")(
      "page-tables",
      po::value<std::vector<std::string>>()->multitoken()->default_value({"two-level", "hashed"},
                                                                         "two-level hashed"),
      "page-table layouts timed (two-level, hashed)")(
      "repeats", po::value<uint32_t>()->default_value(3),
      "replays per (policy, layout); the fastest (by CPU time) is reported (a warning below 0.1 "
      "CPU s, where the CPU clock may count in 4 ms ticks)")(
      "skip-metadata", po::bool_switch(), "time the replay only, without the metadata table");
  const auto vm = parse_options(
      args, "bench core", "[options]",
      "Measures the policy core: a ShadowKV request generated with the calibrated defaults\n"
      "(8-token pages, 1.56% budget, one pool per (request, layer)) is read into memory, then\n"
      "replayed single-threaded with each policy and each page-table layout (two-level,\n"
      "hashed); prints selected pages per second (wall clock and CPU time). Then replays 16K,\n"
      "128K and 1M-token contexts and prints the peak page-table metadata of the request in\n"
      "both layouts against a flat worst-case table, and the paper's comparison\n"
      "(Llama-3.1-70B, 128K, batch 32).",
      options);
  if (!vm) return 0;
  const uint32_t steps = (*vm)["steps"].as<uint32_t>();
  const uint32_t layers = (*vm)["layers"].as<uint32_t>();
  const double k = (*vm)["buffer-ratio"].as<double>();
  const uint64_t seed = (*vm)["seed"].as<uint64_t>();
  const uint32_t repeats = (*vm)["repeats"].as<uint32_t>();
  const uint32_t context = (*vm)["context-tokens"].as<uint32_t>();
  const gen::LocalitySection locality;  // the generator's defaults
  const uint32_t min_layers = std::max(1u, locality.dense_layers + locality.poor_layers);
  require_at_least("bench core", "steps", steps, 1);
  require_at_least("bench core", "repeats", repeats, 1);
  require_at_least("bench core", "context-tokens", context, 1);
  require_at_least("bench core", "layers", layers, min_layers);
  // Layers, k and the policies as config keys take them (the same ranges and messages), before
  // the table starts.
  const auto check_as_key = [](const std::string& set, const std::string& typed) {
    try {
      config::default_config({set});
    } catch (const InputError& e) {
      throw named_as_typed(e, set, typed);
    }
  };
  check_as_key(fmt::format("model.layers={}", layers), fmt::format("--layers {}", layers));
  check_as_key(fmt::format("cache.buffer_ratio={}", k), fmt::format("--buffer-ratio {}", k));
  const auto policies = (*vm)["policies"].as<std::vector<std::string>>();
  for (const std::string& name : policies) {
    check_as_key(fmt::format("cache.policy={}", yaml_quoted(name)), "--policies " + name);
  }
  constexpr policy::PageTableLayout kLayouts[] = {policy::PageTableLayout::kTwoLevel,
                                                  policy::PageTableLayout::kHashed};
  std::vector<policy::PageTableLayout> layouts;
  const auto layout_names = policy::kPageTableLayoutNames |
                            std::views::transform(&config::EnumName<policy::PageTableLayout>::name);
  for (const std::string& name : (*vm)["page-tables"].as<std::vector<std::string>>()) {
    const auto known = std::ranges::find(layout_names, name);
    if (known == layout_names.end()) {
      throw InputError(fmt::format("bench core: --page-tables: unknown layout '{}'; expected {}",
                                   name, fmt::join(layout_names, " or ")));
    }
    layouts.push_back(known.base()->value);
  }

  const trace::MemorySource source = shadowkv_request(context, steps, layers, seed);
  std::cout << fmt::format(
      "Replay: 1 ShadowKV request, {} prompt tokens, {} steps, {} layers x 8 KV heads, k = {}, one "
      "thread\n{:<14} {:<10} {:>14} {:>9} {:>9} {:>12} {:>14} {:>9}\n",
      source.requests()[0].prompt_tokens, steps, layers, k, "policy", "page table",
      "selected pages", "wall s", "cpu s", "M pages/s", "M pages/cpu-s", "hit ratio");
  double shortest_cpu = std::numeric_limits<double>::infinity();
  for (const std::string& policy : policies) {
    for (const policy::PageTableLayout layout : layouts) {
      Timed best = timed_replay(source, policy, k, layout);
      for (uint32_t r = 1; r < repeats; ++r) {
        Timed t = timed_replay(source, policy, k, layout);
        if (t.cpu_seconds < best.cpu_seconds) best = std::move(t);
      }
      const double pages =
          static_cast<double>(best.result.total.accesses + best.result.total.static_accesses);
      std::cout << fmt::format(
          "{:<14} {:<10} {:>14} {:>9.3f} {:>9.3f} {:>12.1f} {:>14.1f} {:>9.4f}\n", policy,
          layout_name(layout), static_cast<uint64_t>(pages), best.seconds, best.cpu_seconds,
          pages / best.seconds / 1e6, pages / best.cpu_seconds / 1e6,
          best.result.total.hit_ratio());
      shortest_cpu = std::min(shortest_cpu, best.cpu_seconds);
    }
  }
  warn_if_short("bench core", "--steps", shortest_cpu);
  if ((*vm)["skip-metadata"].as<bool>()) return 0;

  std::cout << fmt::format(
      "\nPeak page-table metadata of one request (bucketed LRU, k = {}, 2 layers x 8 KV heads, 32 "
      "steps), MiB:\n{:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}\n",
      k, "context", "two-level", "hashed", "flat", "flat/2lvl", "flat/hash", "slot state",
      "host tables");
  for (const uint32_t context : {16384u, 131072u, 1048576u}) {
    const trace::MemorySource request = shadowkv_request(context, 32, 2, seed);
    const Timed two_level = timed_replay(request, "bucketed-lru", k, kLayouts[0]);
    const Timed hashed = timed_replay(request, "bucketed-lru", k, kLayouts[1]);
    const policy::MetadataBytes& m = two_level.result.peak_metadata;
    const policy::MetadataBytes& h = hashed.result.peak_metadata;
    if (two_level.result.total.misses != hashed.result.total.misses) {
      throw InvariantError("bench core: the page-table layouts made different decisions");
    }
    const auto ratio = [&](uint64_t bytes) {
      return static_cast<double>(m.flat_page_table) / static_cast<double>(bytes);
    };
    std::cout << fmt::format("{:>9} {:>10} {:>10} {:>10} {:>10.1f} {:>10.1f} {:>11} {:>11}\n",
                             context, mib(m.two_level()), mib(h.hash_table), mib(m.flat_page_table),
                             ratio(m.two_level()), ratio(h.hash_table), mib(m.slot_state),
                             mib(m.host_page_table + m.partition_offsets));
  }

  std::cout << "\nThe paper's configuration (Llama-3.1-70B, 128K, batch 32, TP 4; per GPU; "
               "docs/policy.md §7):\n";
  policy::MetadataComparisonConfig clustered;
  policy::MetadataComparisonConfig uniform;
  uniform.occupancy = policy::SegmentOccupancy::kUniform;
  const policy::MetadataComparison c = policy::compare_metadata(clustered);
  const policy::MetadataComparison u = policy::compare_metadata(uniform);
  const auto gb = [](double bytes) { return fmt::format("{:.3f} GB", bytes / 1e9); };
  std::cout << fmt::format(
      "  flat GPU page table {}, host tables {}, all tables on the GPU {}\n"
      "  two-level (S = {}), clustered working set: {}  flat/two-level {:.2f}x (paper 13.9-17.4x)\n"
      "  two-level (S = {}), spread working set:    {}  flat/two-level {:.2f}x\n"
      "  hashed, any locality:                      {}  flat/hashed {:.2f}x\n"
      "  all tables / GPU page table (host-side tables): {:.2f}x (paper 3.5-4.5x)\n",
      gb(static_cast<double>(c.flat_page_table_bytes)),
      gb(static_cast<double>(c.host_tables_bytes)),
      gb(static_cast<double>(c.flat_all_tables_bytes)), clustered.segment_pages,
      gb(c.two_level_bytes), c.two_level_ratio, uniform.segment_pages, gb(u.two_level_bytes),
      u.two_level_ratio, gb(static_cast<double>(c.hashed_bytes)), c.hashed_ratio, c.host_ratio);
  return 0;
}

struct SimRun {
  nlohmann::ordered_json summary;
  double pages = 0;  // selected pages the policy core processed (sampled runs: fewer)
  double wall_s = 0, cpu_s = 0;
  std::uint64_t rewinds = 0;  // wrong cache predictions of running ahead
};

SimRun timed_sim(std::vector<std::string> sets, double sampling, unsigned threads) {
  sets.push_back(fmt::format("sim.stream_sampling={}", sampling));
  const config::Config c = config::default_config(sets);
  sim::SimOptions o;
  o.threads = threads;
  o.timeline = false;
  const Stopwatch clock;
  const std::unique_ptr<trace::TraceSource> source = sim::open_trace_source(c);
  const sim::SimResult r = sim::simulate(c, *source, o);
  SimRun run;
  run.wall_s = clock.wall_seconds();
  run.cpu_s = clock.cpu_seconds();
  run.summary = sim::summary_json(r);
  run.rewinds = r.run_ahead_rewinds;
  run.pages = static_cast<double>(r.policy_total.accesses + r.policy_total.static_accesses) *
              r.sampled_layer_share;
  return run;
}

// The relative error of a run's metric against the exact run's, as a table cell: "n/a" where the
// exact value is 0 (e.g. no TPOT of one-token outputs).
std::string error_cell(const SimRun& a, const SimRun& exact, const char* key,
                       const char* sub = nullptr) {
  const auto value = [&](const SimRun& r) {
    return sub ? r.summary[key][sub].get<double>() : r.summary[key].get<double>();
  };
  const double error = std::abs(value(a) - value(exact)) / std::abs(value(exact));
  return std::isfinite(error) ? fmt::format("{:.2f}%", 100 * error) : std::string("n/a");
}

int bench_sim(const Args& args) {
  po::options_description options("Options");
  options.add_options()("requests", po::value<uint32_t>()->default_value(16),
                        "LongBench-v2-like requests (prompts 32K-120K tokens)")(
      "max-output-tokens", po::value<uint32_t>()->default_value(512),
      "cap on each request's output tokens (the workload's mean is 5K; 0: none)")(
      "rate", po::value<double>()->default_value(0.5), "Poisson arrivals, requests per second")(
      "threads",
      po::value<unsigned>()->default_value(std::max(1u, std::thread::hardware_concurrency())),
      "threads of the parallel runs")("seed", po::value<uint64_t>()->default_value(1),
                                      "generator seed")(
      "sampling",
      po::value<std::vector<unsigned>>()->multitoken()->default_value({2, 4, 8, 16, 32, 64},
                                                                      "2 4 8 16 32 64"),
      "stream sampling rates to run, as denominators D of 1/D")(
      "run-ahead", po::value<uint32_t>()->default_value(config::SimConfig{}.run_ahead),
      "sim.run_ahead of every run: steps a layer's policy may run ahead (1 = lockstep)")(
      "skip-single-thread",
      "skip the exact run on one thread (for workloads too large for it): the exact run on "
      "--threads threads is the reference, and its pages per CPU second the per-core figure");
  const auto vm = parse_options(
      args, "bench sim", "[options]",
      "Measures the serving simulator end to end (trace source, policy core and timing), pulling "
      "ShadowKV selections straight from the generator (trace.generator): spin:shadowkv on "
      "Qwen3-14B / H100 SXM with the default config. First the exact run on one thread (selected "
      "pages per CPU second, per core) and on --threads threads, then stream sampling "
      "(--sampling; 1/2 to 1/64) of the layers with its wall time and its relative error against "
      "the exact run on throughput, mean TTFT, mean TPOT, hit ratio and the PCIe bytes host to "
      "HBM (err H2D), which follow the misses: a hit ratio near 1 has a far smaller relative error "
      "than its misses, hit ratio / (1 - hit ratio) times smaller.",
      options);
  if (!vm) return 0;
  const uint32_t requests = (*vm)["requests"].as<uint32_t>();
  const double rate = (*vm)["rate"].as<double>();
  const uint32_t max_output = (*vm)["max-output-tokens"].as<uint32_t>();
  const std::vector<std::string> generator = {
      "trace.path=",
      "trace.generator.algorithm=shadowkv",
      fmt::format("trace.generator.seed={}", (*vm)["seed"].as<uint64_t>()),
      "trace.generator.workload.name=longbench-v2",
      fmt::format("trace.generator.workload.requests={}", requests),
      fmt::format("trace.generator.workload.rate_rps={}", rate),
      fmt::format("trace.generator.workload.max_output_tokens={}", max_output),
      fmt::format("sim.run_ahead={}", (*vm)["run-ahead"].as<uint32_t>())};
  const unsigned threads = thread_count(*vm, "threads", "bench sim");
  // Every option is checked before the table starts, each error naming its option.
  require_at_least("bench sim", "requests", requests, 1);
  require_at_least("bench sim", "run-ahead", (*vm)["run-ahead"].as<uint32_t>(), 1);
  if (!(rate > 0) || !std::isfinite(rate)) {
    throw InputError(fmt::format(
        "spin bench sim: --rate: expected a number of requests per second > 0, got {}", rate));
  }
  const auto sampling = (*vm)["sampling"].as<std::vector<unsigned>>();
  for (const unsigned d : sampling)
    if (d < 2) require_at_least("bench sim", "sampling", d, 2);
  config::default_config(generator);  // the rest as the config checks it

  std::cout << fmt::format(
      "Simulation: {} LongBench-v2-like requests at {} req/s, {}, spin:shadowkv, "
      "generator as the source, run ahead {} steps\n"
      "{:<22} {:>8} {:>15} {:>9} {:>9} {:>13} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
      requests, rate,
      max_output ? fmt::format("outputs <= {} tokens", max_output) : "outputs uncapped",
      (*vm)["run-ahead"].as<uint32_t>(), "run", "threads", "selected pages", "wall s", "cpu s",
      "M pages/cpu-s", "err tput", "err TTFT", "err TPOT", "err hit", "err H2D", "rewinds");
  const bool single = vm->count("skip-single-thread") == 0;
  const SimRun exact1 = timed_sim(generator, 1.0, single ? 1 : threads);
  const auto row = [&](const std::string& name, unsigned t, const SimRun& r) {
    std::cout << fmt::format(
        "{:<22} {:>8} {:>15.0f} {:>9.2f} {:>9.2f} {:>13.1f} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        name, t, r.pages, r.wall_s, r.cpu_s, r.pages / r.cpu_s / 1e6,
        error_cell(r, exact1, "throughput_tokens_per_s"), error_cell(r, exact1, "ttft_s", "mean"),
        error_cell(r, exact1, "tpot_s", "mean"), error_cell(r, exact1, "hit_ratio"),
        error_cell(r, exact1, "pcie_h2d_bytes"), r.rewinds);
  };
  row("exact", single ? 1 : threads, exact1);
  if (single && threads > 1) row("exact", threads, timed_sim(generator, 1.0, threads));
  for (const unsigned d : sampling) {
    const SimRun r = timed_sim(generator, 1.0 / d, threads);
    row(fmt::format("sampled 1/{} ({:.3f})", d, r.summary["sampled_layer_share"].get<double>()),
        threads, r);
  }
  std::cout << "(M pages/cpu-s: selected pages the policy core processed per CPU second of the "
               "process; on one thread, per core. Sampled rows: in parentheses the share of layers "
               "simulated, round(layers x rate) / layers, at least one layer. err H2D: PCIe bytes "
               "host to HBM. rewinds: wrong cache "
               "predictions of running ahead, each re-ran part of a block)\n";
  return 0;
}

}  // namespace

void register_bench_commands(Registry& registry) {
  registry.add(
      Command{"bench core", "measure policy-core replay speed and metadata footprint", bench_core});
  registry.add(Command{"bench sim",
                       "measure the serving simulator end to end, exact and with stream sampling",
                       bench_sim});
}

}  // namespace spin::cli
