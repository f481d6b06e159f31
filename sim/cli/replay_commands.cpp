#include "sim/cli/replay_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/text.h"
#include "sim/cli/config_commands.h"
#include "sim/replay.h"
#include "sim/trace_source.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

nlohmann::ordered_json stats_json(const policy::PolicyStats& s) {
  return {{"pool_steps", s.steps},
          {"accesses", s.accesses},
          {"hits", s.hits},
          {"misses", s.misses},
          {"bypassed", s.bypassed},
          {"static_accesses", s.static_accesses},
          {"victims", s.victims},
          {"fetched_bytes", s.fetched_bytes},
          {"hit_ratio", s.hit_ratio()}};
}

nlohmann::ordered_json result_json(const sim::ReplayResult& r, const std::string& trace) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& l : r.layers) layers.push_back(stats_json(l));
  const policy::MetadataBytes& m = r.peak_metadata;
  return {{"trace", trace},
          {"policy", r.policy},
          {"requests", r.requests},
          {"request_steps", r.request_steps},
          {"page_bytes", r.page_bytes.size() == 1 ? nlohmann::ordered_json(r.page_bytes.front())
                                                  : nlohmann::ordered_json(r.page_bytes)},
          {"total", stats_json(r.total)},
          {"layers", layers},
          {"peak_metadata_bytes",
           {{"directory", m.directory},
            {"segments", m.segments},
            {"two_level", m.two_level()},
            {"hash_table", m.hash_table},
            {"flat_page_table", m.flat_page_table},
            {"slot_state", m.slot_state},
            {"host_page_table", m.host_page_table},
            {"partition_offsets", m.partition_offsets}}}};
}

void print_table(const sim::ReplayResult& r, std::ostream& out) {
  out << fmt::format("{:>7} {:>12} {:>12} {:>9} {:>12} {:>10} {:>12} {:>12}\n", "layer", "accesses",
                     "hits", "hit ratio", "misses", "bypassed", "static", "fetched");
  const auto row = [&](std::string_view name, const policy::PolicyStats& s) {
    out << fmt::format("{:>7} {:>12} {:>12} {:>9.4f} {:>12} {:>10} {:>12} {:>12}\n", name,
                       s.accesses, s.hits, s.hit_ratio(), s.misses, s.bypassed, s.static_accesses,
                       binary_bytes(s.fetched_bytes));
  };
  for (size_t l = 0; l < r.layers.size(); ++l) row(std::to_string(l), r.layers[l]);
  row("all", r.total);
  const policy::MetadataBytes& m = r.peak_metadata;
  const std::string table =
      m.hash_table > 0
          ? fmt::format("hashed {}", binary_bytes(m.hash_table))
          : fmt::format("two-level {} (directory {} + segments {})", binary_bytes(m.two_level()),
                        binary_bytes(m.directory), binary_bytes(m.segments));
  out << fmt::format(
      "\n{} requests, {} decode steps, policy {}, {}.\n"
      "Peak page-table metadata of one request: {} vs a flat table {}; slot state {}; host "
      "tables {} (pinned).\n",
      r.requests, r.request_steps, r.policy,
      r.page_bytes.size() == 1
          ? fmt::format("page {} B", r.page_bytes.front())
          : fmt::format("pages of {} B (by algorithm)", fmt::join(r.page_bytes, " B, ")),
      table, binary_bytes(m.flat_page_table), binary_bytes(m.slot_state),
      binary_bytes(m.host_page_table + m.partition_offsets));
}

void write_json(const nlohmann::ordered_json& j, const std::filesystem::path& path) {
  write_file_atomically(path, j.dump(2) + "\n", "the replay results");
}

int replay_command(const Args& args) {
  po::options_description options("Options");
  add_config_options(options, nullptr);  // replay's positional is the trace
  options.add_options()(
      "trace", po::value<std::string>()->value_name("TRACE"),
      "trace file (.spt) to replay instead of the config's trace source; also the first "
      "positional argument (default: trace.path or trace.generator of the config; the built-in "
      "default replays traces/sample.spt)")(
      "policy", po::value<std::string>(),
      "replacement policy: shorthand for --set cache.policy=NAME")(
      "buffer-ratio", po::value<std::string>()->value_name("K"),
      "buffering pages per mandatory page: --set cache.buffer_ratio=K")(
      "buckets", po::value<std::string>()->value_name("B"),
      "bucketed LRU bucket count: --set cache.buckets=B")(
      "pool-scope", po::value<std::string>()->value_name("SCOPE"),
      "stream | request-layer | request: --set cache.pool_scope=SCOPE")(
      "threads",
      po::value<unsigned>()->default_value(std::max(1u, std::thread::hardware_concurrency())),
      "worker threads (requests replay in parallel; results do not depend on it)")(
      "out", po::value<std::string>()->value_name("DIR"),
      "write resolved_config.yaml and replay.json into DIR (created if missing)")(
      "json", po::value<std::string>()->value_name("FILE"), "write the results as JSON to FILE")(
      "decision-log", po::value<std::string>()->value_name("FILE"),
      "write every pool step's hits, victims, fetches and bypasses to FILE (docs/policy.md)")(
      "check-invariants",
      "check the policy engine's invariants after every pool step (slots owned once, page "
      "tables and slots agree, capacity, pinned pages kept): for a new policy; slower");
  po::positional_options_description positional;
  positional.add("trace", 1);
  const auto vm = parse_options(
      args, "replay", "[TRACE] [--config FILE] [--set KEY=VALUE]... [options]",
      "Runs the policy core alone over a trace (TRACE, else the config's trace.path or\n"
      "trace.generator), without a timing model: each request's pages compete for its HBM cache\n"
      "of floor((1 + k)·M_r) pages, at most its pages outside the static region (M_r: the\n"
      "pages one step may select, from the algorithm's retrieval budget; k: cache.buffer_ratio),\n"
      "under the replacement policy of the config's cache section. Prints hits, misses,\n"
      "bypasses, static-region accesses and bytes fetched per layer and overall (counts are of\n"
      "selected pages), and the peak metadata of one request: its page tables\n"
      "(cache.page_table) vs a flat worst-case table. The shorthand options are --set\n"
      "overrides, validated the same way; spin config keys lists the keys.",
      options, positional);
  if (!vm) return 0;

  std::vector<std::string> trace_source;
  if (vm->count("trace")) {  // replaces the config's source, whichever it is
    const std::filesystem::path trace = (*vm)["trace"].as<std::string>();
    if (trace.extension() == ".yaml" || trace.extension() == ".yml") {
      throw InputError(fmt::format(
          "replay: {}: a config file where a trace was expected; replay's positional argument is "
          "the trace, a config goes in --config {}",
          trace.string(), trace.string()));
    }
    trace_source = {"trace.generator=", "trace.path=" + trace.string()};
  }
  constexpr Shorthand kShorthands[] = {{"policy", "cache.policy", true},
                                       {"buffer-ratio", "cache.buffer_ratio"},
                                       {"buckets", "cache.buckets"},
                                       {"pool-scope", "cache.pool_scope", true}};
  const config::Config cfg = config_from_options(*vm, kShorthands, trace_source);
  check_built_in_trace(vm->count("config") > 0, cfg, "replay");

  // Neither output may be an input (the trace, the config), nor the other output.
  std::vector<std::filesystem::path> inputs;
  if (cfg.trace.path) inputs.push_back(*cfg.trace.path);
  if (vm->count("config")) inputs.push_back((*vm)["config"].as<std::string>());
  for (const char* option : {"json", "decision-log"}) {
    if (!vm->count(option)) continue;
    for (const std::filesystem::path& input : inputs) {
      refuse_input_as_output(input, (*vm)[option].as<std::string>(),
                             fmt::format("replay: --{}", option));
    }
  }
  const auto resolved = [&](const char* option) {
    return std::filesystem::weakly_canonical(
        std::filesystem::absolute((*vm)[option].as<std::string>()));
  };
  if (vm->count("json") && vm->count("decision-log") &&
      resolved("json") == resolved("decision-log")) {
    throw InputError("replay: --json and --decision-log name the same file; give two files");
  }
  const std::unique_ptr<trace::TraceSource> opened = sim::open_trace_source(cfg);
  const trace::TraceSource& source = *opened;
  sim::ReplayOptions ro;
  ro.cache = cfg.cache;
  ro.threads = thread_count(*vm, "threads", "replay");
  if (vm->count("decision-log")) ro.decision_log = (*vm)["decision-log"].as<std::string>();
  ro.check_invariants = vm->count("check-invariants") > 0;
  const bool show_progress = source.requests().size() > 1 && isatty(STDERR_FILENO);
  ro.progress = [&](size_t done, size_t total) {
    if (show_progress)
      std::cerr << fmt::format("\rreplay: {}/{} requests", done, total) << std::flush;
  };
  const sim::ReplayResult result = sim::replay(source, ro);
  if (show_progress) std::cerr << "\n";

  const nlohmann::ordered_json json = result_json(result, sim::trace_source_name(cfg.trace));
  if (vm->count("out")) {
    const std::filesystem::path dir = (*vm)["out"].as<std::string>();
    create_output_folder(dir, "the output folder (--out)");
    config::write_resolved_config(cfg, dir / "resolved_config.yaml");
    write_json(json, dir / "replay.json");
  }
  if (vm->count("json")) write_json(json, (*vm)["json"].as<std::string>());
  print_table(result, std::cout);
  return 0;
}

std::vector<std::pair<std::string, std::string>> list_policies() {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const policy::PolicyInfo& p : policy::policy_registry().list()) {
    entries.emplace_back(p.name, p.description);
  }
  return entries;
}

}  // namespace

void register_replay_commands(Registry& registry) {
  registry.add(Command{"replay",
                       "the policy core alone over a trace: hit ratio, misses, bytes, metadata",
                       replay_command});
  registry.add(ListFamily{"policies",
                          "replacement policies of the HBM page cache (config key cache.policy)",
                          list_policies});
}

}  // namespace spin::cli
