#include "sim/cli/bench_commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/policy/metadata.h"
#include "common/trace/memory_source.h"
#include "sim/cli/stopwatch.h"
#include "sim/replay.h"
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
  g.model.layers = layers;
  g.workload.name = "fixed";
  g.workload.requests = 1;
  g.workload.prompt_tokens = context;
  g.workload.output_tokens = steps;
  const gen::Generator generator(g);
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
      "replacement policies timed, each with both page-table layouts")(
      "repeats", po::value<uint32_t>()->default_value(1),
      "replays per (policy, layout); the fastest (by CPU time) is reported")(
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
  const uint32_t repeats = std::max(1u, (*vm)["repeats"].as<uint32_t>());
  const auto policies = (*vm)["policies"].as<std::vector<std::string>>();
  constexpr policy::PageTableLayout kLayouts[] = {policy::PageTableLayout::kTwoLevel,
                                                  policy::PageTableLayout::kHashed};

  const trace::MemorySource source =
      shadowkv_request((*vm)["context-tokens"].as<uint32_t>(), steps, layers, seed);
  std::cout << fmt::format(
      "Replay: 1 ShadowKV request, {} prompt tokens, {} steps, {} layers x 8 KV heads, k = {}, one "
      "thread\n{:<14} {:<10} {:>14} {:>9} {:>12} {:>14} {:>9}\n",
      source.requests()[0].prompt_tokens, steps, layers, k, "policy", "page table",
      "selected pages", "wall s", "M pages/s", "M pages/cpu-s", "hit ratio");
  for (const std::string& policy : policies) {
    for (const policy::PageTableLayout layout : kLayouts) {
      Timed best = timed_replay(source, policy, k, layout);
      for (uint32_t r = 1; r < repeats; ++r) {
        Timed t = timed_replay(source, policy, k, layout);
        if (t.cpu_seconds < best.cpu_seconds) best = std::move(t);
      }
      const double pages =
          static_cast<double>(best.result.total.accesses + best.result.total.static_accesses);
      std::cout << fmt::format("{:<14} {:<10} {:>14} {:>9.3f} {:>12.1f} {:>14.1f} {:>9.4f}\n",
                               policy, layout_name(layout), static_cast<uint64_t>(pages),
                               best.seconds, pages / best.seconds / 1e6,
                               pages / best.cpu_seconds / 1e6, best.result.total.hit_ratio());
    }
  }
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

}  // namespace

void register_bench_commands(Registry& registry) {
  registry.add(
      Command{"bench core", "measure policy-core replay speed and metadata footprint", bench_core});
}

}  // namespace spin::cli
