#include "sim/cli/gen_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <limits>
#include <optional>

#include "common/atomic_file.h"
#include "common/config/schema.h"
#include "common/error.h"
#include "common/text.h"
#include "common/trace/reader.h"
#include "sim/cli/stopwatch.h"
#include "traces/gen/generator.h"
#include "traces/stats/stats.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

// Generator options shared by the commands: a config file, shorthands, and --set overrides.
po::options_description generator_options() {
  const gen::GeneratorConfig d;  // the defaults the help states
  po::options_description o("Generator (shorthands for --set generator.KEY=VALUE)");
  o.add_options()("config", po::value<std::string>()->value_name("FILE"),
                  "YAML file with a `generator:` section (docs/trace-generators.md); default: "
                  "all defaults")(
      "algorithm", po::value<std::string>()->value_name("NAME"),
      fmt::format("shadowkv, retroinfer, seer, quest or token (default {})", d.algorithm).c_str())(
      "workload", po::value<std::string>()->value_name("NAME"),
      fmt::format("longbench-v2, longgenbench, fixed or list (default {})", d.workload.name)
          .c_str())("requests", po::value<uint32_t>()->value_name("N"),
                    fmt::format("number of requests (default {})", d.workload.requests).c_str())(
      "duration", po::value<double>()->value_name("S"),
      "generate Poisson arrivals for this many seconds instead of a request count (default 0: "
      "use --requests)")(
      "rate", po::value<double>()->value_name("RPS"),
      fmt::format("Poisson arrival rate, requests per second (default {})", d.workload.rate_rps)
          .c_str())("seed", po::value<uint64_t>()->value_name("S"),
                    fmt::format("seed of every random choice (default {})", d.seed).c_str())(
      "max-prompt-tokens", po::value<uint32_t>()->value_name("T"),
      "cap on prompt lengths, tokens (default 0: no cap)")(
      "max-output-tokens", po::value<uint32_t>()->value_name("T"),
      "cap on output lengths, tokens (default 0: no cap)")(
      "set", po::value<std::vector<std::string>>()->composing()->value_name("KEY=VALUE"),
      "override a key (repeatable; applied last; docs/trace-generators.md lists the keys), for "
      "example generator.locality.persistence=0.5");
  return o;
}

gen::TraceGenConfig generator_config(const po::variables_map& vm) {
  if (vm.count("requests") && vm.count("duration")) {
    throw InputError(
        "--requests and --duration exclude each other: --duration S generates Poisson arrivals "
        "for S seconds, --requests N generates N requests");
  }
  constexpr Shorthand kShorthands[] = {
      {"algorithm", "generator.algorithm", true},
      {"workload", "generator.workload.name", true},
      {"requests", "generator.workload.requests"},
      {"duration", "generator.workload.duration_s"},
      {"rate", "generator.workload.rate_rps"},
      {"seed", "generator.seed"},
      {"max-prompt-tokens", "generator.workload.max_prompt_tokens"},
      {"max-output-tokens", "generator.workload.max_output_tokens"}};
  const std::vector<std::string> sets = overrides_with_shorthands(vm, kShorthands);
  gen::TraceGenConfig config;
  try {
    config = vm.count("config") ? gen::load_generator_config(vm["config"].as<std::string>(), sets)
                                : gen::parse_generator_config("", "(defaults)", sets);
  } catch (const InputError& e) {
    throw named_as_typed(e, vm, kShorthands);
  }
  if (config.generator.workload.name == "list") {
    for (const char* option : {"requests", "duration", "rate"}) {
      if (vm.count(option)) {
        throw InputError(
            fmt::format("--{} does not apply to workload list, whose list gives every request "
                        "with its arrival",
                        option));
      }
    }
  }
  return config;
}

int trace_gen(const Args& args) {
  po::options_description options("Options");
  options.add_options()("out", po::value<std::string>()->required(), "trace file to write (.spt)");
  options.add(generator_options());
  const auto vm = parse_options(
      args, "trace gen", "--out FILE [--algorithm A] [--workload W] [options]",
      "Generates a synthetic trace: one algorithm's selections (its partition geometry and\n"
      "retrieval budget) for a workload's requests, following the locality model of\n"
      "docs/trace-generators.md. Same config and seed, same file.",
      options);
  if (!vm) return 0;
  if (vm->count("config")) {
    refuse_input_as_output((*vm)["config"].as<std::string>(), (*vm)["out"].as<std::string>(),
                           "trace gen: --out");
  }
  const gen::TraceGenConfig config = generator_config(*vm);
  const gen::Generator generator(config.generator, config.model);
  const size_t n = generator.requests().size();
  const bool tty = isatty(STDERR_FILENO);  // a progress line only for a person watching
  gen::copy_to_file(generator, (*vm)["out"].as<std::string>(), {}, [n, tty](size_t done) {
    if (tty) std::cerr << fmt::format("\rrequests written: {}/{}", done, n) << std::flush;
  });
  if (tty) std::cerr << "\n";
  std::cout << fmt::format("wrote {} ({} requests, algorithm {}, workload {})\n",
                           (*vm)["out"].as<std::string>(), n, generator.algorithm().name,
                           generator.config().workload.name);
  return 0;
}

int trace_stats(const Args& args) {
  po::options_description options("Options");
  options.add_options()("gen", "analyse the generator given by the generator options, not a file")(
      "json", po::value<std::string>(), "also write the statistics as JSON to this file");
  options.add(generator_options());
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>(), "trace file");
  po::positional_options_description pos;
  pos.add("file", 1);
  const auto vm = parse_options(
      args, "trace stats", "FILE | --gen [generator options] [--json OUT]",
      "Prints the locality statistics of a trace file, or of a generator config (--gen):\n"
      "selection sizes, step-to-step overlap, the share of a selection inside the union of the\n"
      "last w steps, working-set sizes, reuse distances, and the exact-LRU hit ratio at\n"
      "1-8x the per-step selection per (request, layer) pool, per layer and overall.",
      options, pos, hidden);
  if (!vm) return 0;
  const bool from_gen = vm->count("gen") != 0;
  if (from_gen == (vm->count("file") != 0)) {
    throw InputError("trace stats: give either a trace FILE or --gen");
  }
  if (!from_gen) {
    const po::options_description generator = generator_options();
    for (const auto& option : generator.options()) {
      if (vm->count(option->long_name())) {
        throw InputError(fmt::format(
            "trace stats: --{} is a generator option, which applies with --gen, not to a trace "
            "FILE",
            option->long_name()));
      }
    }
  }
  for (const char* input : {"file", "config"}) {
    if (vm->count("json") && vm->count(input)) {
      refuse_input_as_output((*vm)[input].as<std::string>(), (*vm)["json"].as<std::string>(),
                             "trace stats: --json");
    }
  }
  // Opened before the work, so that an output that cannot be written fails first.
  std::optional<PartialFile> json;
  if (vm->count("json")) json.emplace((*vm)["json"].as<std::string>(), "the JSON statistics");
  std::unique_ptr<stats::StatsCollector> collector;
  if (from_gen) {
    const gen::TraceGenConfig config = generator_config(*vm);
    const gen::Generator generator(config.generator, config.model);
    collector = std::make_unique<stats::StatsCollector>(generator.header());
    for (size_t r = 0; r < generator.requests().size(); ++r) {
      for (uint32_t l = 0; l < generator.header().model.layers; ++l) {
        const auto stream = generator.open_layer(r, l);
        collector->add_layer(generator.requests()[r], l, *stream);
      }
    }
  } else {
    const trace::TraceReader reader((*vm)["file"].as<std::string>());
    collector = std::make_unique<stats::StatsCollector>(reader.header());
    for (size_t r = 0; r < reader.requests().size(); ++r) {
      for (uint32_t l = 0; l < reader.header().model.layers; ++l) {
        trace::LayerCursor cursor = reader.open_layer(r, l);
        collector->add_layer(reader.requests()[r], l, cursor);
      }
    }
  }
  std::cout << collector->to_text();
  if (json) {
    json->stream() << collector->to_json().dump(2) << "\n";
    json->commit();
  }
  return 0;
}

int bench_gen(const Args& args) {
  po::options_description options("Options");
  options.add_options()("steps", po::value<uint32_t>()->default_value(512),
                        "decode steps per request")(
      "prompt-tokens", po::value<uint32_t>()->default_value(55000), "prompt length in tokens")(
      "algorithm", po::value<std::string>()->value_name("NAME"),
      "time only this algorithm (default: every one)")(
      "repeats", po::value<uint32_t>()->default_value(3),
      "runs per algorithm; the fastest (by CPU time) is reported");
  const auto vm = parse_options(
      args, "bench gen", "[--steps N] [--prompt-tokens T] [--algorithm NAME] [--repeats R]",
      "Measures generation speed on one thread: every layer and KV head of one request of the\n"
      "default model (40 layers, 8 KV heads) for each algorithm, with default locality, opening\n"
      "the request's layers included. Prints selected partitions per CPU second, i.e. per core\n"
      "(the target is >= 150 M), of the fastest of --repeats runs.",
      options);
  if (!vm) return 0;
  const uint32_t repeats = (*vm)["repeats"].as<uint32_t>();
  require_at_least("bench gen", "repeats", repeats, 1);
  require_at_least("bench gen", "steps", (*vm)["steps"].as<uint32_t>(), 1);
  require_at_least("bench gen", "prompt-tokens", (*vm)["prompt-tokens"].as<uint32_t>(), 1);
  if (vm->count("algorithm") && !gen::known_algorithm((*vm)["algorithm"].as<std::string>())) {
    const std::string typed = (*vm)["algorithm"].as<std::string>();
    throw InputError(fmt::format("bench gen: --algorithm: expected {}, got '{}'{}",
                                 one_of(gen::algorithm_names()), typed,
                                 did_you_mean(typed, gen::algorithm_names())));
  }
  std::cout << fmt::format("{:<11} {:>14} {:>9} {:>9} {:>13}\n", "algorithm", "selections",
                           "wall s", "cpu s", "M sel/cpu-s");
  double shortest_cpu = std::numeric_limits<double>::infinity();
  for (const gen::AlgorithmSpec& spec : gen::algorithms()) {
    if (vm->count("algorithm") && (*vm)["algorithm"].as<std::string>() != spec.name) continue;
    gen::GeneratorConfig config;
    config.algorithm = std::string(spec.name);
    config.workload.name = "fixed";
    config.workload.requests = 1;
    config.workload.prompt_tokens = (*vm)["prompt-tokens"].as<uint32_t>();
    config.workload.output_tokens = (*vm)["steps"].as<uint32_t>();
    const gen::Generator generator(config, gen::default_model());
    const config::ModelConfig& model = generator.model();
    uint64_t selections = 0;
    double cpu = 0;
    double wall = 0;
    for (uint32_t r = 0; r < repeats; ++r) {
      selections = 0;
      // CPU time of this (single-threaded) process, so that other load on the machine does not
      // count against the generator.
      const Stopwatch clock;
      for (uint32_t l = 0; l < model.layers; ++l) {
        const auto stream = generator.open_layer(0, l);
        while (stream->next()) {
          for (uint32_t h = 0; h < model.kv_heads; ++h) {
            selections += stream->selection(h).size();
          }
        }
      }
      const double run_cpu = clock.cpu_seconds();
      if (r == 0 || run_cpu < cpu) {
        cpu = run_cpu;
        wall = clock.wall_seconds();
      }
    }
    std::cout << fmt::format("{:<11} {:>14} {:>9.3f} {:>9.3f} {:>13.1f}\n", spec.name, selections,
                             wall, cpu, static_cast<double>(selections) / cpu / 1e6);
    shortest_cpu = std::min(shortest_cpu, cpu);
  }
  warn_if_short("bench gen", "--steps, --prompt-tokens", shortest_cpu);
  return 0;
}

}  // namespace

void register_gen_commands(Registry& registry) {
  registry.add(
      Command{"trace gen", "generate a synthetic trace for an algorithm and workload", trace_gen});
  registry.add(Command{"trace stats", "locality statistics and LRU hit-ratio curves of a trace",
                       trace_stats});
  registry.add(Command{"bench gen", "measure trace generation speed per algorithm", bench_gen});
  registry.add(
      ListFamily{"trace-algorithms", "sparse-attention algorithms of the trace generator", [] {
                   std::vector<std::pair<std::string, std::string>> out;
                   for (const gen::AlgorithmSpec& a : gen::algorithms()) {
                     out.emplace_back(a.name, a.description);
                   }
                   return out;
                 }});
  registry.add(ListFamily{"workloads", "request-length workloads of the trace generator", [] {
                            std::vector<std::pair<std::string, std::string>> out;
                            for (const auto& [name, description] : gen::workloads()) {
                              out.emplace_back(name, description);
                            }
                            return out;
                          }});
}

}  // namespace spin::cli
