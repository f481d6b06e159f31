// GeneratorConfig: every key of the synthetic trace generators (docs/trace-generators.md), as
// plain data: the config schema of a generator, wherever it is mounted. A run config holds one
// under `trace.generator` (config::TraceConfig, common/config/config.h), `spin trace gen` under
// `generator` (traces/gen/config.h); the generator itself (traces/gen/generator.h) is not part
// of common/.
//
// One plain struct per concern, each with defaults in its member initialisers and a visit() that
// declares its keys once (common/config/schema.h), so the same declaration drives YAML parsing,
// `--set`, the resolved config and `spin config keys`:
//   algorithm / seed        what is traced, and the seed of every random choice
//   geometry.*              overrides of the algorithm's partition geometry and budget
//                           (0 or negative = the algorithm's default)
//   workload.*              requests: length distribution, arrivals, count
//   locality.*              the locality model (traces/gen/generator.h describes it)
// The model traced is not a generator key: it is a config::ModelConfig, the run's `model` in a
// run config and `generator.model` for `spin trace gen`.
// Defaults are calibrated to reference/locality-and-transfer.md; the calibration test and
// scripts/calibration_table.py check them. Names (algorithm, workload) are checked while parsing;
// validate() checks the rest and names the offending key path in its InputError.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config/model.h"
#include "common/config/schema.h"
#include "common/text.h"
#include "common/trace/trace.h"

namespace spin::gen {

// "longbench-v2, longgenbench, fixed, list" and whether `name` is one of them.
std::vector<std::string_view> workload_names();
bool known_workload(std::string_view name);
// "shadowkv, retroinfer, seer, quest, token" and whether `name` is one of them.
std::vector<std::string_view> algorithm_names();
bool known_algorithm(std::string_view name);
// Whether algorithm `name` has variable-size partitions (clusters); false for an unknown name.
bool variable_partitions(std::string_view name);

// Limits that keep a mistyped number from exhausting memory or time: a workload's requests
// (also of arrivals until duration_s), and the locality windows, whose state grows with them.
inline constexpr std::uint32_t kMaxRequests = 1'000'000;
inline constexpr std::uint32_t kMaxWindowSteps = 1 << 16;

// Overrides of the algorithm's geometry and budget (DESIGN.md §5). Zero (or a negative ratio)
// keeps the algorithm's default, listed by `spin --list trace-algorithms`.
struct GeometrySection {
  uint32_t partition_tokens = 0;
  uint32_t page_tokens = 0;
  double budget_ratio = -1;
  uint32_t budget_tokens = 0;
  uint32_t sink_tokens = 0;
  uint32_t local_window_tokens = 0;
  uint32_t reindex_interval_tokens = 0;
  uint32_t cluster_min_tokens = 0;
  uint32_t cluster_max_tokens = 0;

  template <class V>
  void visit(V& v) {
    v.field("partition_tokens", partition_tokens,
            "fixed partitions: tokens per partition g; variable: nominal cluster size (0 = the "
            "algorithm's)",
            config::at_most(1 << 16));
    v.field("page_tokens", page_tokens, "tokens per KV page, a power of two (0 = the algorithm's)");
    v.field("budget_ratio", budget_ratio,
            "retrieval budget as a fraction of the context; with budget_tokens it replaces the "
            "algorithm's budget, the key not given counting 0 (negative and budget_tokens 0 = "
            "the algorithm's)",
            config::at_most(1));
    v.field("budget_tokens", budget_tokens,
            "retrieval budget in tokens, added to budget_ratio's share; with it replaces the "
            "algorithm's budget (0 and a negative budget_ratio = the algorithm's)",
            config::at_most(1 << 24));
    v.field("sink_tokens", sink_tokens,
            "attention-sink tokens in the static region (0 = the algorithm's)");
    v.field("local_window_tokens", local_window_tokens,
            "local-window tokens in the static region (0 = the algorithm's)");
    v.field("reindex_interval_tokens", reindex_interval_tokens,
            "variable partitions: generated tokens between re-indexes (0 = the algorithm's)");
    v.field("cluster_min_tokens", cluster_min_tokens,
            "variable partitions: shortest cluster in tokens (0 = the algorithm's)");
    v.field("cluster_max_tokens", cluster_max_tokens,
            "variable partitions: longest cluster in tokens (0 = the algorithm's)");
  }
};

// Which requests, with which lengths, arriving when.
struct WorkloadSection {
  static constexpr uint32_t kDefaultPromptTokens = 32768;
  static constexpr uint32_t kDefaultOutputTokens = 2048;

  std::string name = "longbench-v2";
  uint32_t requests = 16;
  double duration_s = 0;
  double rate_rps = 1.0;
  uint32_t prompt_tokens = kDefaultPromptTokens;
  uint32_t output_tokens = kDefaultOutputTokens;
  uint32_t max_prompt_tokens = 0;
  uint32_t max_output_tokens = 0;
  std::vector<uint64_t> list;

  template <class V>
  void visit(V& v) {
    using config::above;
    using config::at_least;
    v.field("name", name,
            "length distribution: longbench-v2, longgenbench, fixed (prompt_tokens, "
            "output_tokens) or list (the `list` key); spin --list workloads");
    v.field("requests", requests, "requests to generate when duration_s is 0",
            at_least(1).at_most(kMaxRequests));
    v.field("duration_s", duration_s,
            "if > 0: generate arrivals until this time in seconds instead of a request count",
            at_least(0));
    v.field("rate_rps", rate_rps, "Poisson arrival rate in requests per second", above(0));
    v.field("prompt_tokens", prompt_tokens, "workload fixed: prompt length in tokens", at_least(1));
    v.field("output_tokens", output_tokens, "workload fixed: output length in tokens", at_least(1));
    v.field("max_prompt_tokens", max_prompt_tokens,
            "cap on every prompt length in tokens, to scale studies down (0 = none)");
    v.field("max_output_tokens", max_output_tokens,
            "cap on every output length in tokens, to scale studies down (0 = none)");
    v.field("list", list,
            "workload list: flat (arrival_us, prompt_tokens, output_tokens) triples, one per "
            "request");
    v.check(
        "name", [this] { return expected_name(name, workload_names(), "spin --list workloads"); },
        [this] { return known_workload(name); });
    v.check("list", "no list with workload " + name + " (the list goes with workload list)",
            [this] { return name == "list" || list.empty(); });
    // A list gives every request and its arrival: a count, a rate or a duration would be ignored.
    v.check("requests", "no requests with workload list (the list gives them)",
            [this] { return name != "list" || requests == WorkloadSection{}.requests; });
    v.check("rate_rps", "no rate_rps with workload list (the list gives the arrivals)",
            [this] { return name != "list" || rate_rps == WorkloadSection{}.rate_rps; });
    v.check("duration_s", "no duration_s with workload list (the list gives the arrivals)",
            [this] { return name != "list" || duration_s == 0; });
    // The lengths of workload fixed; another workload draws or lists its own, and would ignore
    // them (its lengths are capped by max_prompt_tokens and max_output_tokens).
    v.check("prompt_tokens",
            "no prompt_tokens with workload " + name +
                " (it goes with workload fixed; max_prompt_tokens caps the others)",
            [this] { return name == "fixed" || prompt_tokens == kDefaultPromptTokens; });
    v.check("output_tokens",
            "no output_tokens with workload " + name +
                " (it goes with workload fixed; max_output_tokens caps the others)",
            [this] { return name == "fixed" || output_tokens == kDefaultOutputTokens; });
    v.check("list", "a multiple of 3 values, each prompt and output >= 1, given with workload list",
            [this] {
              if (name != "list") return true;
              if (list.empty() || list.size() % 3 != 0) return false;
              for (size_t i = 0; i < list.size(); i += 3) {
                if (list[i + 1] == 0 || list[i + 2] == 0) return false;
              }
              return true;
            });
  }
};

// The locality model (generator.h, "The locality model"). Probabilities are per partition and
// step unless stated; "replacement" is a partition entering the selection to replace a dropped
// one.
struct LocalitySection {
  double persistence = 0.6;
  double granularity_exponent = 0.25;
  double recall_prob = 0.8;
  uint32_t recall_window_steps = 12;
  double recall_mean_age_steps = 50;
  double revisit_prob = 0.17;
  uint32_t revisit_window_steps = 48;
  double reemerge_prob = 0.02;
  double archive_prob = 0.3;
  double archive_ratio = 4.0;
  uint32_t hotspots = 32;
  uint32_t head_hotspots = 16;
  double head_correlation = 0.6;
  double layer_correlation = 0.7;
  double hotspot_zipf = 1.0;
  uint32_t hotspot_width_tokens = 192;
  uint32_t hotspot_lifetime_steps = 400;
  double background_prob = 0.15;
  uint32_t dense_layers = 0;
  uint32_t poor_layers = 2;
  double poor_layer_scale = 0.75;
  double layer_jitter = 0.04;

  template <class V>
  void visit(V& v) {
    using config::above;
    using config::at_least;
    using config::at_most;
    const auto unit = at_least(0).at_most(1);
    v.field("persistence", persistence,
            "probability that a selected token-level partition stays selected at the next step",
            unit);
    v.field("granularity_exponent", granularity_exponent,
            "persistence of g-token partitions: 1 - (1 - persistence) * g^-exponent", at_least(0));
    v.field("recall_prob", recall_prob,
            "probability that a replacement is recalled from the partitions dropped in the last "
            "recall_window_steps steps (the working set)",
            unit);
    v.field("recall_window_steps", recall_window_steps,
            "working-set window W: a recalled partition was last selected at most W steps ago",
            at_least(2).at_most(kMaxWindowSteps));
    v.field("recall_mean_age_steps", recall_mean_age_steps,
            "mean of (reuse distance - 1) of a recall, geometric before the cut at W", at_least(1));
    v.field("revisit_prob", revisit_prob,
            "probability that a replacement revisits a partition last selected between W and "
            "revisit_window_steps steps ago (uniform in that range)",
            unit);
    v.field("revisit_window_steps", revisit_window_steps,
            "longest reuse distance of a revisit in steps; > recall_window_steps",
            at_least(3).at_most(kMaxWindowSteps));
    v.field("reemerge_prob", reemerge_prob,
            "probability that a replacement re-emerges from the long-term archive of partitions "
            "that left the working set",
            unit);
    v.field("archive_prob", archive_prob,
            "probability that a partition leaving the recall ring enters the archive", unit);
    v.field("archive_ratio", archive_ratio, "archive size in multiples of the per-step selection",
            above(0));
    v.field("hotspots", hotspots, "importance hotspots shared by the KV heads of a layer",
            at_least(1).at_most(4096));
    v.field("head_hotspots", head_hotspots, "importance hotspots private to each KV head",
            at_least(1).at_most(4096));
    v.field("head_correlation", head_correlation,
            "probability that a fresh draw uses the layer's shared hotspots, not the head's own",
            unit);
    v.field("layer_correlation", layer_correlation,
            "probability that a shared hotspot of layer l is the same as layer l-1's", unit);
    v.field("hotspot_zipf", hotspot_zipf, "Zipf exponent of hotspot popularity", at_least(0));
    v.field("hotspot_width_tokens", hotspot_width_tokens,
            "scale of the Laplace spread of a fresh draw around its hotspot, in tokens",
            at_least(1));
    v.field("hotspot_lifetime_steps", hotspot_lifetime_steps,
            "mean steps before a hotspot moves to a new position (slow drift of importance)",
            at_least(1));
    v.field("background_prob", background_prob,
            "probability that a fresh draw is uniform over the context, not near a hotspot", unit);
    v.field("dense_layers", dense_layers,
            "first layers that select every partition outside the static region (dense)");
    v.field("poor_layers", poor_layers,
            "poorly-local layers (chosen from the seed among the sparse layers)");
    v.field("poor_layer_scale", poor_layer_scale,
            "persistence and recall_prob of poorly-local layers are multiplied by this", unit);
    v.field("layer_jitter", layer_jitter,
            "per-layer persistence offset, uniform in [-jitter, +jitter]",
            at_least(0).at_most(0.5));
    v.check("reemerge_prob", "recall_prob + revisit_prob + reemerge_prob <= 1",
            [this] { return recall_prob + revisit_prob + reemerge_prob <= 1.0; });
    v.check("revisit_window_steps", "revisit_window_steps > recall_window_steps",
            [this] { return revisit_window_steps > recall_window_steps; });
  }
};

struct GeneratorConfig {
  std::string algorithm = "shadowkv";
  uint64_t seed = 1;
  GeometrySection geometry;
  WorkloadSection workload;
  LocalitySection locality;

  template <class V>
  void visit(V& v) {
    v.field("algorithm", algorithm,
            "sparse-attention algorithm: shadowkv, retroinfer, seer, quest or token "
            "(spin --list trace-algorithms)");
    v.check(
        "algorithm",
        [this] {
          return expected_name(algorithm, algorithm_names(), "spin --list trace-algorithms");
        },
        [this] { return known_algorithm(algorithm); });
    v.field("seed", seed, "seed of every random choice; same config and seed, same trace");
    v.field("geometry", geometry, "overrides of the algorithm's partition geometry and budget");
    v.check("geometry",
            "no reindex_interval_tokens, cluster_min_tokens or cluster_max_tokens with "
            "algorithm " +
                algorithm + ", whose partitions are fixed (they go with variable partitions)",
            [this] {
              return variable_partitions(algorithm) ||
                     (geometry.reindex_interval_tokens == 0 && geometry.cluster_min_tokens == 0 &&
                      geometry.cluster_max_tokens == 0);
            });
    v.field("workload", workload, "request lengths and arrivals");
    v.field("locality", locality, "the locality model of the selections");
  }
};

// One algorithm's geometry and budget as the generator uses it.
struct AlgorithmSpec {
  std::string_view name;
  std::string_view description;
  trace::AlgorithmInfo info;
  uint32_t cluster_min_tokens = 0;  // variable partitions only
  uint32_t cluster_max_tokens = 0;
};

// The algorithms of DESIGN.md §5, in a fixed order.
std::span<const AlgorithmSpec> algorithms();
// Workload names with descriptions, in a fixed order.
std::span<const std::pair<std::string_view, std::string_view>> workloads();

// The algorithm's spec with the geometry overrides applied. Throws InputError naming
// "PATH.algorithm" (listing the known names) or the geometry key that is invalid; `path` is where
// the generator's keys are mounted ("generator", "trace.generator").
AlgorithmSpec resolve_algorithm(const GeneratorConfig& config, std::string_view path = "generator");
// Checks everything parsing cannot (names, combinations, the model's layer count); throws
// InputError naming the key path under `path`.
void validate(const GeneratorConfig& config, const config::ModelConfig& model,
              std::string_view path = "generator");

}  // namespace spin::gen
