#include "sim/sim_outputs.h"

#include <fmt/format.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/text.h"
#include "common/version.h"
#include "sim/trace_source.h"

namespace spin::sim {

Distribution distribution(std::vector<double> values) {
  Distribution d;
  d.count = values.size();
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  const auto rank = [&](double p) {
    const auto k = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
    return values[std::clamp<std::size_t>(k, 1, values.size()) - 1];
  };
  d.p50 = rank(0.50);
  d.p90 = rank(0.90);
  d.p99 = rank(0.99);
  d.max = values.back();
  return d;
}

namespace {

nlohmann::ordered_json to_json(const Distribution& d) {
  return {{"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90}, {"p99", d.p99}, {"max", d.max}};
}

}  // namespace

nlohmann::ordered_json summary_json(const SimResult& r) {
  std::vector<double> ttft, tpot;
  std::uint64_t tokens = 0, done = 0, rejected = 0, truncated = 0;
  for (const RequestRecord& q : r.requests) {
    truncated += q.truncated;
    if (q.rejected) {
      ++rejected;
      continue;
    }
    ++done;
    tokens += q.output_tokens;
    ttft.push_back(q.ttft_s());
    if (q.output_tokens > 1) tpot.push_back(q.tpot_s());
  }
  const double seconds = static_cast<double>(r.end_ns) * 1e-9;
  const double decode_s = static_cast<double>(r.decode_only_ns) * 1e-9;
  const policy::PolicyStats& p = r.policy_total;
  return {
      {"mode", r.mode},
      {"stream_sampling", r.sampling},
      {"sampled_layer_share", r.sampled_layer_share},
      {"requests", r.requests.size()},
      {"requests_finished", done},
      {"requests_rejected", rejected},
      {"requests_truncated", truncated},
      {"output_tokens", tokens},
      {"duration_s", seconds},
      {"throughput_tokens_per_s", seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0},
      {"throughput_requests_per_s", seconds > 0 ? static_cast<double>(done) / seconds : 0.0},
      {"ttft_s", to_json(distribution(ttft))},
      {"tpot_s", to_json(distribution(tpot))},
      {"iterations", r.iteration_count},
      {"batch_mean", r.batch_time_weighted_mean},
      {"batch_max", r.batch_max},
      {"decode_only",
       {{"iterations", r.decode_only_iterations},
        {"seconds", decode_s},
        {"tokens_per_s", decode_s > 0 ? static_cast<double>(r.decode_only_tokens) / decode_s : 0.0},
        {"batch_mean", r.decode_only_iterations ? static_cast<double>(r.decode_only_tokens) /
                                                      static_cast<double>(r.decode_only_iterations)
                                                : 0.0}}},
      {"preemptions", r.preemptions},
      {"hit_ratio", p.hit_ratio()},
      {"policy",
       {{"accesses", p.accesses},
        {"hits", p.hits},
        {"misses", p.misses},
        {"bypassed", p.bypassed},
        {"victims", p.victims}}},
      {"pcie_h2d_bytes", r.h2d_bytes},
      {"pcie_d2h_bytes", r.d2h_bytes},
      {"h2d_bytes_per_output_token", tokens ? r.h2d_bytes / static_cast<double>(tokens) : 0.0},
      {"hbm",
       {{"weights_bytes", r.weight_bytes},
        {"kv_pool_bytes", r.kv_pool_bytes},
        {"kv_used_peak_bytes", r.kv_used_peak_bytes},
        {"page_bytes", r.page_bytes},
        {"offload_held_prompts", r.offload_held_prompts},
        {"offload_held_peak_bytes", r.offload_held_peak_bytes}}},
      {"host",
       {{"memory_bytes", r.host_memory_bytes}, {"kv_reserved_peak_bytes", r.host_kv_peak_bytes}}},
      {"metadata",
       {{"page_table_peak_bytes", r.metadata_peak_bytes},
        {"flat_table_bytes_at_peak", r.metadata_flat_bytes}}},
  };
}

std::string requests_csv(const SimResult& r) {
  std::string out =
      "id,arrival_s,prompt_tokens,output_tokens,truncated,rejected,admitted_s,first_token_s,"
      "finish_s,ttft_s,tpot_s,preemptions,accesses,hits,misses,hit_ratio,rejected_reason\n";
  // Values a request does not have are empty cells: the times of a rejected request, the TPOT
  // of a one-token one, the hit ratio of one that selected no page (rejected, or a dense mode).
  const auto seconds = [](bool has, double s) {
    return has ? fmt::format("{:.9f}", s) : std::string();
  };
  for (const RequestRecord& q : r.requests) {
    const auto s = [](TimeNs t) { return static_cast<double>(t) * 1e-9; };
    const bool ran = !q.rejected;
    out += fmt::format("{},{:.9f},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", q.trace_id,
                       s(q.arrival_ns), q.prompt_tokens, q.output_tokens, int{q.truncated},
                       int{q.rejected}, seconds(ran, s(q.admitted_ns)),
                       seconds(ran, s(q.first_token_ns)), seconds(ran, s(q.finish_ns)),
                       seconds(ran, q.ttft_s()), seconds(ran && q.output_tokens > 1, q.tpot_s()),
                       q.preemptions, q.policy.accesses, q.policy.hits, q.policy.misses,
                       q.policy.accesses > 0 ? fmt::format("{:.6f}", q.policy.hit_ratio()) : "",
                       csv_field(q.rejected_reason));
  }
  return out;
}

std::string steps_csv(const SimResult& r) {
  std::string out =
      "iteration,start_s,end_s,decodes,prefill_tokens,preempted,kv_used_bytes,fetched_bytes,hits,"
      "misses\n";
  for (std::size_t i = 0; i < r.iterations.size(); ++i) {
    const IterationRecord& it = r.iterations[i];
    out += fmt::format("{},{:.9f},{:.9f},{},{},{},{},{},{},{}\n", i,
                       static_cast<double>(it.start_ns) * 1e-9,
                       static_cast<double>(it.end_ns) * 1e-9, it.decodes, it.prefill_tokens,
                       it.preempted, it.kv_used_bytes, it.fetched_bytes, it.hits, it.misses);
  }
  return out;
}

std::string file_xxh64(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(fmt::format("cannot read '{}': {}", path.string(), std::strerror(errno)));
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    XXH64_update(state, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  const XXH64_hash_t h = XXH64_digest(state);
  XXH64_freeState(state);
  return fmt::format("{:016x}", h);
}

std::string trace_source_hash(const config::TraceConfig& trace) {
  if (trace.path) return file_xxh64(*trace.path);
  // A generator is its settings: the hash of its resolved keys.
  config::Config c;
  c.trace = trace;
  const std::string yaml = config::to_yaml(c);
  return fmt::format("{:016x}", XXH64(yaml.data(), yaml.size(), 0));
}

namespace {

std::string hostname() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("unknown");
}

}  // namespace

void write_sim_outputs(const std::filesystem::path& dir, const config::Config& cfg,
                       const SimResult& result) {
  create_output_folder(dir, "the output folder");
  config::write_resolved_config(cfg, dir / "resolved_config.yaml");
  const nlohmann::ordered_json provenance = {{"program", "spin"},
                                             {"version", std::string(version())},
                                             {"git_commit", std::string(git_commit())},
                                             {"trace", trace_source_name(cfg.trace)},
                                             {"trace_xxh64", trace_source_hash(cfg.trace)},
                                             {"seed", cfg.seed},
                                             {"host", hostname()}};
  write_file_atomically(dir / "provenance.json", provenance.dump(2) + "\n", "the provenance");
  write_file_atomically(dir / "summary.json", summary_json(result).dump(2) + "\n", "the summary");
  write_file_atomically(dir / "requests.csv", requests_csv(result), "the request table");
  // The optional outputs: written, or else removed, so that a folder used again holds no file
  // of an earlier run.
  const auto write_or_remove = [&](const char* name, const std::string& contents,
                                   const char* what) {
    if (!contents.empty()) {
      write_file_atomically(dir / name, contents, what);
      return;
    }
    std::error_code ec;
    std::filesystem::remove(dir / name, ec);
    if (ec) {
      throw InputError(fmt::format("cannot remove {} of an earlier run from '{}': {}", what,
                                   (dir / name).string(), ec.message()));
    }
  };
  write_or_remove("steps.csv", result.iterations.empty() ? std::string() : steps_csv(result),
                  "the step table");
  write_or_remove("timeline.json", result.timeline_json, "the timeline");
}

}  // namespace spin::sim
