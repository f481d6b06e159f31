#include "sim/cli/sim_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <thread>

#include "common/error.h"
#include "common/serving/mode.h"
#include "common/text.h"
#include "sim/cli/config_commands.h"
#include "sim/sim_outputs.h"
#include "sim/simulator.h"
#include "sim/trace_source.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

void print_summary(const nlohmann::ordered_json& s, const sim::SimResult& result,
                   std::ostream& out) {
  const auto& ttft = s["ttft_s"];
  const auto& tpot = s["tpot_s"];
  const serving::Mode mode = serving::parse_mode(s["mode"].get<std::string>());
  const std::string pcie = fmt::format("PCIe {} host to HBM ({} per output token), {} HBM to host",
                                       decimal_bytes(s["pcie_h2d_bytes"].get<double>()),
                                       decimal_bytes(s["h2d_bytes_per_output_token"].get<double>()),
                                       decimal_bytes(s["pcie_d2h_bytes"].get<double>()));
  out << fmt::format(
      "mode {}: {} of {} requests finished ({} rejected, {} truncated) in {:.3f} s simulated\n"
      "throughput   {:.1f} output tokens/s, {:.3f} requests/s\n"
      "TTFT         mean {:.3f} s, p50 {:.3f}, p90 {:.3f}, p99 {:.3f}\n"
      "TPOT         mean {:.2f} ms, p50 {:.2f}, p90 {:.2f}, p99 {:.2f}\n"
      "batch        mean {:.2f}, max {} decoding requests over {} iterations; {} preemptions\n"
      "cache        {}; {}\n"
      "HBM          weights {}, KV pool {}, peak KV use {}; page tables {} vs {} for flat tables "
      "at that peak\n",
      mode.name(), s["requests_finished"].get<uint64_t>(), s["requests"].get<uint64_t>(),
      s["requests_rejected"].get<uint64_t>(), s["requests_truncated"].get<uint64_t>(),
      s["duration_s"].get<double>(), s["throughput_tokens_per_s"].get<double>(),
      s["throughput_requests_per_s"].get<double>(), ttft["mean"].get<double>(),
      ttft["p50"].get<double>(), ttft["p90"].get<double>(), ttft["p99"].get<double>(),
      tpot["mean"].get<double>() * 1e3, tpot["p50"].get<double>() * 1e3,
      tpot["p90"].get<double>() * 1e3, tpot["p99"].get<double>() * 1e3,
      s["batch_mean"].get<double>(), s["batch_max"].get<uint32_t>(),
      s["iterations"].get<uint64_t>(), s["preemptions"].get<uint64_t>(),
      mode.sparse() ? fmt::format("hit ratio {:.4f}", s["hit_ratio"].get<double>())
                    : std::string("none, all KV in HBM (hit ratio written as 0)"),
      pcie, binary_bytes(s["hbm"]["weights_bytes"].get<double>()),
      binary_bytes(s["hbm"]["kv_pool_bytes"].get<double>()),
      binary_bytes(s["hbm"]["kv_used_peak_bytes"].get<double>()),
      binary_bytes(s["metadata"]["page_table_peak_bytes"].get<double>()),
      binary_bytes(s["metadata"]["flat_table_bytes_at_peak"].get<double>()));
  if (const double rate = s["stream_sampling"].get<double>(); rate < 1 && mode.sparse()) {
    out << fmt::format(
        "sampling     the policy ran on {:.4g} of the layers (sim.stream_sampling {:.4g}): hit "
        "ratio, PCIe bytes and the times they drive are estimates (docs/simulator.md, \"Stream "
        "sampling\")\n",
        s["sampled_layer_share"].get<double>(), rate);
  }
  const auto& host = s["host"];
  if (host["memory_bytes"].get<double>() > 0) {
    out << fmt::format("host         KV reserved {} at peak, of {} DRAM\n",
                       binary_bytes(host["kv_reserved_peak_bytes"].get<double>()),
                       binary_bytes(host["memory_bytes"].get<double>()));
  }
  if (const auto held = s["hbm"]["offload_held_prompts"].get<uint64_t>(); held > 0) {
    const std::string_view their = held == 1 ? "its" : "their";
    out << fmt::format(
        "offload      {} prompt{} stayed in HBM past {} prefill until {} copy to host ended (up "
        "to {} at once): hardware.pcie_d2h_gbps is slower than prefill\n",
        held, held == 1 ? "" : "s", their, their,
        binary_bytes(s["hbm"]["offload_held_peak_bytes"].get<double>()));
  }
  if (const auto rejected = s["requests_rejected"].get<uint64_t>(); rejected > 0) {
    const auto first = std::ranges::find_if(result.requests, &sim::RequestRecord::rejected);
    out << fmt::format(
        "rejected     {} request{} too large for the mode's memory even alone; the first, request "
        "{}: {} (requests.csv, rejected_reason)\n",
        rejected, rejected == 1 ? " is" : "s are", first->trace_id, first->rejected_reason);
  }
  if (mode.sparse() && s["output_tokens"].get<uint64_t>() > 0 &&
      s["policy"]["accesses"].get<uint64_t>() == 0) {
    out << "selected     no page: the trace selects nothing outside the static region (sinks, "
           "local window), e.g. partitions so large that each touches it; attention read the "
           "static region only\n";
  }
  if (s["requests_finished"].get<uint64_t>() == 0) {
    out << "no request finished: TTFT, TPOT, throughput, batch and hit ratio have no samples "
           "(printed as 0)\n";
  }
}

int sim_command(const Args& args) {
  po::options_description options("Options");
  po::positional_options_description positional;
  add_config_options(options, &positional);
  options.add_options()(
      "trace", po::value<std::string>()->value_name("FILE"),
      "trace file (.spt) to replay instead of the config's trace source (trace.path or "
      "trace.generator)")(
      "mode", po::value<std::string>()->value_name("MODE"),
      "served system, e.g. dense or spin:shadowkv: --set serving.mode=MODE (spin --list modes)")(
      "out", po::value<std::string>()->value_name("DIR"),
      "write resolved_config.yaml, provenance.json, summary.json, requests.csv, timeline.json "
      "(and steps.csv with --steps) into DIR (created if missing)")(
      "steps", po::bool_switch(), "also write steps.csv: one row per iteration")(
      "no-timeline", po::bool_switch(), "do not write timeline.json")(
      "timeline-layers", po::value<uint32_t>()->default_value(8)->value_name("N"),
      "per-layer spans and PCIe counters in timeline.json for the first N iterations")(
      "threads",
      po::value<unsigned>()->default_value(std::max(1u, std::thread::hardware_concurrency())),
      "worker threads for the policy steps of a batch (outputs do not depend on it)")(
      "json", po::bool_switch(), "print summary.json instead of the text summary");
  const auto vm = parse_options(
      args, "sim", "[CONFIG] [--trace FILE] [--set KEY=VALUE]... [--out DIR] [options]",
      "Simulates a serving system replaying a trace on a modelled GPU: continuous batching with\n"
      "chunked prefill, admission by the mode's memory rule, preemption, the policy core on every\n"
      "decode step, and a cost model of GEMMs, attention, selection and PCIe transfers (shared\n"
      "fairly when concurrent). Prints throughput, TTFT, TPOT, batch size, hit ratio, PCIe bytes\n"
      "and memory; --out DIR keeps every output (docs/simulator.md). CONFIG defaults to the\n"
      "built-in configs/default.yaml; spin config keys lists the serving and hardware keys.",
      options, positional);
  if (!vm) return 0;

  std::vector<std::string> trace_source;
  if (vm->count("trace")) {  // replaces the config's source, whichever it is
    trace_source = {"trace.generator=", "trace.path=" + (*vm)["trace"].as<std::string>()};
  }
  constexpr Shorthand kShorthands[] = {{"mode", "serving.mode", true}};
  const config::Config cfg = config_from_options(*vm, kShorthands, trace_source);
  check_built_in_trace(vm->count("config") > 0, cfg, "sim");

  const std::unique_ptr<trace::TraceSource> source = sim::open_trace_source(cfg);

  sim::SimOptions so;
  so.threads = thread_count(*vm, "threads", "sim");
  so.keep_iterations = (*vm)["steps"].as<bool>();
  if (!vm->count("out")) {
    for (const char* option : {"steps", "timeline-layers"}) {  // asking for files not written
      if (!(*vm)[option].defaulted()) {
        throw InputError(fmt::format(
            "spin sim: --{} is about the files written into the --out folder; give --out DIR",
            option));
      }
    }
  }
  so.timeline = vm->count("out") && !(*vm)["no-timeline"].as<bool>();
  so.timeline_layer_iterations = (*vm)["timeline-layers"].as<uint32_t>();
  const bool tty = isatty(STDERR_FILENO);
  so.progress = [&](double t, size_t done, size_t total) {
    if (tty)
      std::cerr << fmt::format("\rsim: {:.1f} s simulated, {}/{} requests", t, done, total)
                << std::flush;
  };
  const sim::SimResult result = sim::simulate(cfg, *source, so);
  if (tty && result.iteration_count >= 256) std::cerr << "\n";
  const nlohmann::ordered_json summary = sim::summary_json(result);

  if (vm->count("out")) sim::write_sim_outputs((*vm)["out"].as<std::string>(), cfg, result);
  if ((*vm)["json"].as<bool>()) {
    std::cout << summary.dump(2) << "\n";
  } else {
    print_summary(summary, result, std::cout);
    if (cfg.sim.run_ahead > 1 && result.policy_total.steps > 0 &&
        cfg.cache.pool_scope == policy::PoolScope::kRequestLayer) {
      std::cout << fmt::format(
          "run ahead    up to {} steps; {} wrong cache predictions re-ran part of a block "
          "(docs/simulator.md, \"Running ahead\")\n",
          cfg.sim.run_ahead, result.run_ahead_rewinds);
    }
  }
  return 0;
}

std::vector<std::pair<std::string, std::string>> list_modes() {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const serving::ModeInfo& m : serving::mode_kinds())
    entries.emplace_back(std::string(m.name), std::string(m.description));
  return entries;
}

}  // namespace

void register_sim_commands(Registry& registry) {
  registry.add(Command{"sim",
                       "simulate serving a trace on a modelled GPU: throughput, TTFT, TPOT, "
                       "batch, hit ratio, PCIe bytes",
                       sim_command});
  registry.add(ListFamily{"modes", "served systems a simulation compares (config key serving.mode)",
                          list_modes});
}

}  // namespace spin::cli
