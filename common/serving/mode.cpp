#include "common/serving/mode.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <variant>
#include <vector>

#include "common/error.h"
#include "common/trace/generator_config.h"

namespace spin::serving {
namespace {

struct KindName {
  ModeKind kind;
  ModeInfo info;
  bool needs_algorithm;
};

constexpr std::array<KindName, 6> kKinds = {{
    {ModeKind::kDense,
     {"dense", "vLLM-like: all KV in HBM, full attention, preemption by recompute"},
     false},
    {ModeKind::kDenseOffload,
     {"dense-offload", "as dense, but a preempted request's KV is swapped to host and back"},
     false},
    {ModeKind::kSparseOriginal,
     {"sparse-original:<algo>",
      "the algorithm's original system: its KV home, fetch path and cache (docs/simulator.md)"},
     true},
    {ModeKind::kSpin,
     {"spin:<algo>",
      "KV on host, per-request HBM page cache (cache section), one gather kernel per layer"},
     true},
    {ModeKind::kOracle,
     {"oracle:<algo>", "as spin, with the Belady cache (the policy bound)"},
     true},
    {ModeKind::kIdeal,
     {"ideal:<algo>",
      "as oracle, with free fetches: no time, no host-to-HBM bytes (the envelope); offloads as "
      "spin"},
     true},
}};

std::string_view kind_word(const KindName& k) {
  const std::string_view n = k.info.name;
  return n.substr(0, n.find(':'));
}

}  // namespace

bool Mode::kv_on_host() const {
  switch (kind) {
    case ModeKind::kDense:
    case ModeKind::kDenseOffload:
      return false;
    case ModeKind::kSparseOriginal:
      return algorithm == "shadowkv" || algorithm == "retroinfer";
    case ModeKind::kSpin:
    case ModeKind::kOracle:
    case ModeKind::kIdeal:
      return true;
  }
  return true;
}

std::string Mode::name() const {
  for (const KindName& k : kKinds) {
    if (k.kind == kind)
      return algorithm.empty() ? std::string(kind_word(k))
                               : fmt::format("{}:{}", kind_word(k), algorithm);
  }
  throw InvariantError("mode: a ModeKind has no name");
}

namespace {

// The mode `text` names, or what was expected instead.
std::variant<Mode, std::string> try_parse_mode(std::string_view text) {
  const size_t colon = text.find(':');
  const std::string_view word = text.substr(0, colon);
  const std::string_view algorithm =
      colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  for (const KindName& k : kKinds) {
    if (kind_word(k) != word) continue;
    if (!k.needs_algorithm) {
      if (colon != std::string_view::npos)
        return fmt::format("{} without an algorithm (it takes none)", word);
      return Mode{k.kind, {}};
    }
    // The algorithms are the trace generators' (common/trace/generator_config.h).
    for (std::string_view a : gen::algorithm_names()) {
      if (a == algorithm) return Mode{k.kind, std::string(a)};
    }
    return fmt::format("{}:<algo> with <algo> one of {}", word,
                       fmt::join(gen::algorithm_names(), ", "));
  }
  std::vector<std::string_view> names;
  for (const KindName& k : kKinds) names.push_back(k.info.name);
  return fmt::format("one of {}", fmt::join(names, ", "));
}

}  // namespace

Mode parse_mode(std::string_view text) {
  auto parsed = try_parse_mode(text);
  if (const std::string* expected = std::get_if<std::string>(&parsed))
    throw InputError(fmt::format("mode '{}': expected {}", text, *expected));
  return std::get<Mode>(std::move(parsed));
}

bool is_mode(std::string_view text) { return std::holds_alternative<Mode>(try_parse_mode(text)); }

std::string mode_expected(std::string_view text) {
  const auto parsed = try_parse_mode(text);
  const std::string* expected = std::get_if<std::string>(&parsed);
  return expected != nullptr ? *expected : std::string();
}

std::vector<std::string> mode_names() {
  std::vector<std::string> names;
  for (const KindName& k : kKinds) {
    if (!k.needs_algorithm) {
      names.emplace_back(kind_word(k));
      continue;
    }
    for (std::string_view a : gen::algorithm_names())
      names.push_back(fmt::format("{}:{}", kind_word(k), a));
  }
  return names;
}

std::span<const ModeInfo> mode_kinds() {
  static const std::array<ModeInfo, kKinds.size()> infos = [] {
    std::array<ModeInfo, kKinds.size()> a{};
    for (size_t i = 0; i < kKinds.size(); ++i) a[i] = kKinds[i].info;
    return a;
  }();
  return infos;
}

}  // namespace spin::serving
