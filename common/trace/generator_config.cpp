#include "common/trace/generator_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "common/error.h"

namespace spin::gen {
namespace {

using trace::AlgorithmInfo;
using trace::PartitionKind;

// Defaults: DESIGN.md §5 and spin-paper.md; static regions are [design] choices
// (docs/trace-generators.md, "Algorithms").
const std::array<AlgorithmSpec, 5> kAlgorithms = {{
    {"shadowkv", "8-token chunks = pages, budget 1.56% of the context",
     AlgorithmInfo{"shadowkv", PartitionKind::kFixed, 8, 8, 0.0156, 0, 16, 64, 0}},
    {"retroinfer",
     "variable k-means clusters (~16 tokens) over 8-token pages, budget 1.8%, re-indexed every "
     "1024 generated tokens",
     AlgorithmInfo{"retroinfer", PartitionKind::kVariable, 16, 8, 0.018, 0, 16, 1088, 1024}, 4, 28},
    {"seer", "SeerAttention-R: 32-token blocks = pages, 2048-token budget, last block always kept",
     AlgorithmInfo{"seer", PartitionKind::kFixed, 32, 32, 0, 2048, 0, 32, 0}},
    {"quest", "Quest: 16-token pages by min/max key bounds, 2048-token budget",
     AlgorithmInfo{"quest", PartitionKind::kFixed, 16, 16, 0, 2048, 0, 16, 0}},
    {"token", "token-level top-2048 (DeepSeek sparse attention) over 16-token pages",
     AlgorithmInfo{"token", PartitionKind::kFixed, 1, 16, 0, 2048, 0, 0, 0}},
}};

const std::array<std::pair<std::string_view, std::string_view>, 4> kWorkloads = {{
    {"longbench-v2", "LongBench-v2-like: prompt 32K-120K (mean 55K), output 500-15K (mean 5K)"},
    {"longgenbench", "LongGenBench-like: prompt 16K-19K (mean 18K), output 7K-32K (mean 12K)"},
    {"fixed", "every request has workload.prompt_tokens and workload.output_tokens"},
    {"list", "explicit (arrival_us, prompt_tokens, output_tokens) triples in workload.list"},
}};

template <class Names>
std::vector<std::string_view> name_list(const Names& names) {
  std::vector<std::string_view> out;
  for (const auto& n : names) {
    if constexpr (requires { n.name; }) {
      out.push_back(n.name);
    } else {
      out.push_back(n.first);
    }
  }
  return out;
}

[[noreturn]] void fail(std::string_view path, std::string_view key, const std::string& what) {
  throw KeyError(fmt::format("{}.{}", path, key), what);
}

bool power_of_two(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace

std::span<const AlgorithmSpec> algorithms() { return kAlgorithms; }
std::vector<std::string_view> workload_names() { return name_list(kWorkloads); }
bool known_workload(std::string_view name) {
  return std::any_of(kWorkloads.begin(), kWorkloads.end(),
                     [&](const auto& w) { return w.first == name; });
}
std::vector<std::string_view> algorithm_names() { return name_list(kAlgorithms); }
bool known_algorithm(std::string_view name) {
  return std::any_of(kAlgorithms.begin(), kAlgorithms.end(),
                     [&](const AlgorithmSpec& a) { return a.name == name; });
}
bool variable_partitions(std::string_view name) {
  return std::any_of(kAlgorithms.begin(), kAlgorithms.end(), [&](const AlgorithmSpec& a) {
    return a.name == name && a.info.partition_kind == PartitionKind::kVariable;
  });
}
std::span<const std::pair<std::string_view, std::string_view>> workloads() { return kWorkloads; }

AlgorithmSpec resolve_algorithm(const GeneratorConfig& config, std::string_view path) {
  const AlgorithmSpec* found = nullptr;
  for (const AlgorithmSpec& a : kAlgorithms) {
    if (a.name == config.algorithm) found = &a;
  }
  if (found == nullptr) {
    fail(path, "algorithm",
         fmt::format("unknown algorithm '{}'; expected {}{}", config.algorithm,
                     one_of(algorithm_names()), did_you_mean(config.algorithm, algorithm_names())));
  }
  AlgorithmSpec spec = *found;
  AlgorithmInfo& info = spec.info;
  const GeometrySection& g = config.geometry;
  const auto take = [](uint32_t& field, uint32_t value) {
    if (value != 0) field = value;
  };
  take(info.partition_tokens, g.partition_tokens);
  take(info.page_tokens, g.page_tokens);
  // A budget under geometry replaces the algorithm's whole budget (ratio and tokens): the key
  // not given counts 0, so that a token budget can become a ratio alone, and the reverse.
  if (g.budget_ratio >= 0 || g.budget_tokens != 0) {
    info.budget_ratio = std::max(g.budget_ratio, 0.0);
    info.budget_tokens = g.budget_tokens;
  }
  take(info.sink_tokens, g.sink_tokens);
  take(info.local_window_tokens, g.local_window_tokens);
  take(info.reindex_interval_tokens, g.reindex_interval_tokens);
  take(spec.cluster_min_tokens, g.cluster_min_tokens);
  take(spec.cluster_max_tokens, g.cluster_max_tokens);
  if (!power_of_two(info.page_tokens)) {
    fail(path, "geometry.page_tokens",
         fmt::format("expected a power of two, got {}", info.page_tokens));
  }
  if (info.budget_ratio <= 0 && info.budget_tokens == 0) {
    fail(path, "geometry.budget_tokens",
         "the budget is zero: give budget_ratio > 0 or budget_tokens");
  }
  if (info.partition_kind == PartitionKind::kVariable) {
    if (spec.cluster_min_tokens == 0 || spec.cluster_min_tokens > spec.cluster_max_tokens) {
      fail(path, "geometry.cluster_min_tokens",
           fmt::format("expected 1 <= cluster_min_tokens <= cluster_max_tokens, got {} and {}",
                       spec.cluster_min_tokens, spec.cluster_max_tokens));
    }
    if (info.reindex_interval_tokens == 0) {
      fail(path, "geometry.reindex_interval_tokens", "expected >= 1 for variable partitions");
    }
    // The budget counts clusters of the nominal size: it must be a length clusters can have.
    if (info.partition_tokens < spec.cluster_min_tokens ||
        info.partition_tokens > spec.cluster_max_tokens) {
      fail(path, "geometry.partition_tokens",
           fmt::format("the nominal cluster size {} (the budget counts clusters of it) is outside "
                       "the cluster lengths {}..{}: set partition_tokens to their mean",
                       info.partition_tokens, spec.cluster_min_tokens, spec.cluster_max_tokens));
    }
    // Tokens generated since the last re-index are in no cluster: the local window must hold
    // them, or they could never be selected.
    if (info.local_window_tokens < info.reindex_interval_tokens) {
      fail(path, "geometry.local_window_tokens",
           fmt::format("expected at least reindex_interval_tokens ({}), got {}: the tokens "
                       "generated since the last re-index are in no cluster, and only the local "
                       "window reaches them",
                       info.reindex_interval_tokens, info.local_window_tokens));
    }
  }
  return spec;
}

void validate(const GeneratorConfig& config, const config::ModelConfig& model,
              std::string_view path) {
  resolve_algorithm(config, path);
  const WorkloadSection& w = config.workload;
  if (!known_workload(w.name)) {
    fail(path, "workload.name",
         fmt::format("unknown workload '{}'; expected {}{}", w.name, one_of(workload_names()),
                     did_you_mean(w.name, workload_names())));
  }
  if (w.name == "list" && (w.list.empty() || w.list.size() % 3 != 0)) {
    fail(path, "workload.list", "expected (arrival_us, prompt_tokens, output_tokens) triples");
  }
  // Drawn arrivals that would run past what a trace holds, found here (at the key's place in
  // the config) rather than by the draw: the expected last arrival of `requests` at `rate_rps`,
  // or the end of `duration_s`. The draw still checks every arrival exactly.
  constexpr double kMaxArrivalS = static_cast<double>(trace::kMaxArrivalUs) / 1e6;
  if (w.name != "list" && w.duration_s > kMaxArrivalS) {
    fail(path, "workload.duration_s",
         fmt::format("expected at most {:.0f} s (31 years, the latest arrival a trace holds), got "
                     "{:g}",
                     kMaxArrivalS, w.duration_s));
  }
  if (w.name != "list" && w.duration_s == 0 && w.requests / w.rate_rps > kMaxArrivalS) {
    fail(
        path, "workload.rate_rps",
        fmt::format("{} requests at {:g} per s would arrive over about {:.3g} s, past the {:.0f} s "
                    "(31 years) a trace holds; raise rate_rps",
                    w.requests, w.rate_rps, w.requests / w.rate_rps, kMaxArrivalS));
  }
  const LocalitySection& l = config.locality;
  if (l.dense_layers + l.poor_layers > model.layers) {
    fail(path, "locality.poor_layers",
         fmt::format("dense_layers + poor_layers = {} exceeds model.layers = {}",
                     l.dense_layers + l.poor_layers, model.layers));
  }
  if (l.recall_prob + l.revisit_prob + l.reemerge_prob > 1.0) {
    fail(path, "locality.reemerge_prob",
         "expected recall_prob + revisit_prob + reemerge_prob <= 1");
  }
  if (l.revisit_window_steps <= l.recall_window_steps) {
    fail(path, "locality.revisit_window_steps", "expected > recall_window_steps");
  }
}

}  // namespace spin::gen
