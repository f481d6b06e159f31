// The `cache` section of a run's config: which replacement policy manages the HBM page cache, its
// parameters, the pool scope and the buffer ratio (DESIGN.md §4.2–4.4; docs/policy.md).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <ranges>
#include <span>
#include <string>

#include "common/config/schema.h"
#include "common/policy/engine.h"
#include "common/policy/policy_registry.h"
#include "common/text.h"

namespace spin::policy {

inline constexpr std::array<config::EnumName<PoolScope>, 3> kPoolScopeNames{{
    {PoolScope::kStream, "stream"},
    {PoolScope::kRequestLayer, "request-layer"},
    {PoolScope::kRequest, "request"},
}};
inline std::span<const config::EnumName<PoolScope>> enum_names(PoolScope) {
  return kPoolScopeNames;
}

inline constexpr std::array<config::EnumName<PageTableLayout>, 2> kPageTableLayoutNames{{
    {PageTableLayout::kTwoLevel, "two-level"},
    {PageTableLayout::kHashed, "hashed"},
}};
inline std::span<const config::EnumName<PageTableLayout>> enum_names(PageTableLayout) {
  return kPageTableLayoutNames;
}

struct CacheConfig {
  std::string policy = "bucketed-lru";
  std::uint32_t buckets = 64;
  std::uint32_t bucket_width_steps = 1;
  PoolScope pool_scope = PoolScope::kRequestLayer;
  double buffer_ratio = 4.0;
  double cluster_headroom_pages = 1.0;
  std::uint32_t segment_pages = 512;
  PageTableLayout page_table = PageTableLayout::kTwoLevel;

  // The registry's parameters for `policy`; throws InputError for an unknown name.
  PolicyParams policy_params() const {
    return policy_registry().make(
        policy,
        PolicyOptions{buckets, static_cast<std::uint32_t>(std::countr_zero(bucket_width_steps))});
  }

  template <class V>
  void visit(V& v) {
    v.field("policy", policy, "replacement policy of the HBM page cache (spin --list policies)");
    const auto policies = policy_registry().list() | std::views::transform(&PolicyInfo::name);
    v.check(
        "policy",
        [&] {
          return "a registered replacement policy, " +
                 expected_name(policy, policies, "spin --list policies");
        },
        [&] { return std::ranges::find(policies, policy) != policies.end(); });
    v.field("buckets", buckets, "bucketed LRU: number of age buckets B",
            config::at_least(1).at_most(1 << 24));
    v.field("bucket_width_steps", bucket_width_steps,
            "bucketed LRU: decode steps per age bucket, a power of two", config::at_least(1));
    v.check("bucket_width_steps", "a power of two",
            [&] { return std::has_single_bit(bucket_width_steps); });
    v.field("pool_scope", pool_scope,
            "which pages compete for one pool of HBM slots: stream (one KV head of one layer), "
            "request-layer (all KV heads of a layer of a request) or request");
    v.field("buffer_ratio", buffer_ratio,
            "k: buffering pages per mandatory page; a request caches floor((1 + k)·M_r) pages",
            config::at_least(0).at_most(1024));
    v.field("cluster_headroom_pages", cluster_headroom_pages,
            "variable clusters: extra mandatory pages per selected cluster (a cluster may straddle "
            "page boundaries)",
            config::at_least(0));
    v.field("segment_pages", segment_pages,
            "two-level page table: logical pages per segment S, a power of two",
            config::at_least(1).at_most(1 << 20));
    v.check("segment_pages", "a power of two", [&] { return std::has_single_bit(segment_pages); });
    v.field("page_table", page_table,
            "GPU page table layout: two-level (directory of S-page segments; grows with the "
            "context and the selections' spread) or hashed (one table per pool; grows with the "
            "cache only)");
  }
};

}  // namespace spin::policy
