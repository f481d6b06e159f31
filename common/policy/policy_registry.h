// The replacement-policy family: names, one-line descriptions and factories (STYLE.md, "Plugins").
//
// A policy's behaviour lives in residency.h as a struct of static device-capable functions, picked
// by PolicyParams::kind; this registry turns a user-facing name plus options into PolicyParams.
// Registration is by explicit calls in register_builtin_policies (policy_registry.cpp), never by
// static initialisers. An unknown name is an InputError that lists the known ones.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/policy/residency.h"

namespace spin::policy {

// Options a policy may read; each factory validates the ones it uses.
struct PolicyOptions {
  std::uint32_t buckets = 64;      // bucketed LRU: bucket count B (1..2^24)
  std::uint32_t bucket_shift = 0;  // bucketed LRU: bucket width 2^bucket_shift steps (0..31)
};

struct PolicyInfo {
  std::string name;
  std::string description;  // one line, for `spin --list policies`
  bool needs_future;        // needs each stream's future selections (host only: not the executor)
};

class PolicyRegistry {
 public:
  using Factory = std::function<PolicyParams(const PolicyOptions&)>;

  // Throws InvariantError if the name is taken.
  void add(PolicyInfo info, Factory factory);
  // Throws InputError for an unknown name (listing the known ones) or invalid options.
  PolicyParams make(std::string_view name, const PolicyOptions& options = {}) const;
  const PolicyInfo& info(std::string_view name) const;
  // In registration order.
  const std::vector<PolicyInfo>& list() const { return infos_; }

 private:
  std::size_t find(std::string_view name) const;

  std::vector<PolicyInfo> infos_;
  std::vector<Factory> factories_;
};

// bucketed-lru, lru, fifo, prev-step, belady.
void register_builtin_policies(PolicyRegistry& registry);

// The registry of the built-in policies, built on first use.
const PolicyRegistry& policy_registry();

// The registered name of a kind (for logs and reports).
std::string_view policy_name(PolicyKind kind);

}  // namespace spin::policy
