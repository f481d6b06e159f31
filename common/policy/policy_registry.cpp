// Every replacement policy, registered by explicit calls (STYLE.md, "Plugins").
#include "common/policy/policy_registry.h"

#include <fmt/format.h>

#include "common/error.h"

namespace spin::policy {

void PolicyRegistry::add(PolicyInfo info, Factory factory) {
  if (find(info.name) != infos_.size()) {
    throw InvariantError(fmt::format("policy '{}' is registered twice", info.name));
  }
  infos_.push_back(std::move(info));
  factories_.push_back(std::move(factory));
}

std::size_t PolicyRegistry::find(std::string_view name) const {
  std::size_t i = 0;
  while (i < infos_.size() && infos_[i].name != name) ++i;
  return i;
}

const PolicyInfo& PolicyRegistry::info(std::string_view name) const {
  const std::size_t i = find(name);
  if (i == infos_.size()) {
    std::string known;
    for (const PolicyInfo& p : infos_) known += (known.empty() ? "" : ", ") + p.name;
    throw InputError(fmt::format("unknown replacement policy '{}'; known: {}", name, known));
  }
  return infos_[i];
}

PolicyParams PolicyRegistry::make(std::string_view name, const PolicyOptions& options) const {
  return factories_[static_cast<std::size_t>(&info(name) - infos_.data())](options);
}

namespace {

PolicyParams plain(PolicyKind kind) { return PolicyParams{kind, 1, 0}; }

PolicyParams bucketed_lru(const PolicyOptions& options) {
  if (options.buckets < 1 || options.buckets > (1u << 24)) {
    throw InputError(
        fmt::format("bucketed-lru: buckets must be in 1..16777216, got {}", options.buckets));
  }
  if (options.bucket_shift > 31) {
    throw InputError(
        fmt::format("bucketed-lru: bucket_shift must be in 0..31, got {}", options.bucket_shift));
  }
  return PolicyParams{PolicyKind::kBucketedLru, options.buckets, options.bucket_shift};
}

}  // namespace

void register_builtin_policies(PolicyRegistry& registry) {
  registry.add({"bucketed-lru",
                "LRU over ages quantised into B buckets; victims from the oldest bucket, lowest "
                "slot first (no sort)",
                false},
               bucketed_lru);
  registry.add({"lru", "exact LRU: victims by oldest (last use, key)", false},
               [](const PolicyOptions&) { return plain(PolicyKind::kExactLru); });
  registry.add({"fifo", "first in, first out: victims by insertion step, lowest slot first", false},
               [](const PolicyOptions&) { return plain(PolicyKind::kFifo); });
  registry.add(
      {"prev-step", "keep exactly the previous step's pages (reuse of one step only)", false},
      [](const PolicyOptions&) { return plain(PolicyKind::kPreviousStep); });
  registry.add({"belady",
                "Belady/OPT: victims by farthest next use; needs each stream's future "
                "(replay and simulator; not the executor)",
                true},
               [](const PolicyOptions&) { return plain(PolicyKind::kBelady); });
}

const PolicyRegistry& policy_registry() {
  static const PolicyRegistry registry = [] {
    PolicyRegistry r;
    register_builtin_policies(r);
    return r;
  }();
  return registry;
}

std::string_view policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kBucketedLru:
      return "bucketed-lru";
    case PolicyKind::kExactLru:
      return "lru";
    case PolicyKind::kFifo:
      return "fifo";
    case PolicyKind::kPreviousStep:
      return "prev-step";
    case PolicyKind::kBelady:
      return "belady";
  }
  throw InvariantError(fmt::format(
      "policy_name: PolicyKind {} has no case here; a new policy adds one, and one in each switch "
      "docs/policy.md lists under \"Adding a policy\"",
      static_cast<std::uint32_t>(kind)));
}

}  // namespace spin::policy
