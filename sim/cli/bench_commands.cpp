#include "sim/cli/bench_commands.h"

#include <fmt/format.h>

#include <iostream>

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

Timed timed_replay(const trace::TraceSource& source, const std::string& policy, double k) {
  sim::ReplayOptions options;
  options.cache.policy = policy;
  options.cache.buffer_ratio = k;
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

int bench_core(const Args& args) {
  po::options_description options("Options");
  options.add_options()("steps", po::value<uint32_t>()->default_value(300),
                        "decode steps replayed")("layers", po::value<uint32_t>()->default_value(4),
                                                 "layers (8 KV heads each, Qwen3-14B shape)")(
      "context-tokens", po::value<uint32_t>()->default_value(131072),
      "prompt tokens of the replay benchmark's request")("buffer-ratio",
                                                         po::value<double>()->default_value(4.0),
                                                         "k: buffering pages per mandatory page")(
      "seed", po::value<uint64_t>()->default_value(1), "generator seed");
  const auto vm = parse_options(
      args, "bench core", "[options]",
      "Measures the policy core: a ShadowKV request generated with the calibrated defaults\n"
      "(8-token pages, 1.56% budget, one pool per (request, layer)) is read into memory, then\n"
      "replayed single-threaded with each policy; prints selected pages per second (wall clock\n"
      "and CPU time). Then replays 16K, 128K and 1M-token contexts and prints the peak\n"
      "metadata of the request: two-level page tables against a flat worst-case table.",
      options);
  if (!vm) return 0;
  const uint32_t steps = (*vm)["steps"].as<uint32_t>();
  const uint32_t layers = (*vm)["layers"].as<uint32_t>();
  const double k = (*vm)["buffer-ratio"].as<double>();
  const uint64_t seed = (*vm)["seed"].as<uint64_t>();

  const trace::MemorySource source =
      shadowkv_request((*vm)["context-tokens"].as<uint32_t>(), steps, layers, seed);
  std::cout << fmt::format(
      "Replay: 1 ShadowKV request, {} prompt tokens, {} steps, {} layers x 8 KV heads, k = {}, one "
      "thread\n{:<14} {:>14} {:>9} {:>12} {:>14} {:>9}\n",
      source.requests()[0].prompt_tokens, steps, layers, k, "policy", "selected pages", "wall s",
      "M pages/s", "M pages/cpu-s", "hit ratio");
  for (const std::string policy : {"bucketed-lru", "lru", "fifo", "belady"}) {
    const Timed t = timed_replay(source, policy, k);
    const double pages =
        static_cast<double>(t.result.total.accesses + t.result.total.static_accesses);
    std::cout << fmt::format("{:<14} {:>14} {:>9.3f} {:>12.1f} {:>14.1f} {:>9.4f}\n", policy,
                             static_cast<uint64_t>(pages), t.seconds, pages / t.seconds / 1e6,
                             pages / t.cpu_seconds / 1e6, t.result.total.hit_ratio());
  }

  std::cout << fmt::format(
      "\nMetadata of one request (bucketed LRU, k = {}, 2 layers x 8 KV heads, 32 steps), MiB:\n"
      "{:>9} {:>12} {:>12} {:>10} {:>12} {:>12}\n",
      k, "context", "two-level", "flat table", "flat/2lvl", "slot state", "host tables");
  for (const uint32_t context : {16384u, 131072u, 1048576u}) {
    const Timed t = timed_replay(shadowkv_request(context, 32, 2, seed), "bucketed-lru", k);
    const policy::MetadataBytes& m = t.result.peak_metadata;
    std::cout << fmt::format(
        "{:>9} {:>12} {:>12} {:>10.1f} {:>12} {:>12}\n", context, mib(m.two_level()),
        mib(m.flat_page_table),
        static_cast<double>(m.flat_page_table) / static_cast<double>(m.two_level()),
        mib(m.slot_state), mib(m.host_page_table + m.partition_offsets));
  }
  return 0;
}

}  // namespace

void register_bench_commands(Registry& registry) {
  registry.add(
      Command{"bench core", "measure policy-core replay speed and metadata footprint", bench_core});
}

}  // namespace spin::cli
