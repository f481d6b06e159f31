// The policy engine: the driver API that `spin replay` (simulator) calls per request step.
//
// It owns, per request, the streams (one per (layer, KV head)), their partition maps, and the
// pools (HBM slots the request's pages compete for), plus one segment pool of the two-level page
// table shared by every request. Per step it maps each stream's selected partitions to pages
// (dedup, static-region split), runs the residency rule of residency.h on every pool, and keeps
// statistics per layer, per request and overall, the metadata footprint, and optionally the
// decision log.
//
// Call order per request:
//   add_request → [set_cache_pages] [append_clusters] [set_future]
//   → { begin_step(now, context) → select(layer, head, ids)* → end_step }* → remove_request
// select may be called in any (layer, head) order, at most once per stream and step; a stream
// not selected in a step selected nothing. `now` strictly increases per request; all layers of
// a step share it. Capacity changes (set_cache_pages) take effect at the next end_step: a pool
// over its new capacity evicts there (counted as victims).
//
// Pools (DESIGN.md §2): kRequestLayer (default) pools one (request, layer), streams = KV heads;
// kStream pools one stream; kRequest pools all layers × KV heads of a request. Streams in a pool
// are numbered in (layer, head) order. A request's cache pages are split among its pools in
// proportion to their streams (split_pages: cumulative floors).
//
// Complexity per step: O(selected partitions + selected pages) mapping, plus per pool the
// residency rule (residency.h). No allocation once buffers reached their high-water marks; page
// table lookups are array indexing. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/policy/decision_log.h"
#include "common/policy/future.h"
#include "common/policy/metadata.h"
#include "common/policy/partition.h"
#include "common/policy/residency.h"

namespace spin::policy {

struct ModelShape {
  std::uint32_t layers = 1;
  std::uint32_t kv_heads = 1;
  std::uint32_t head_dim = 128;
  std::uint32_t dtype_bytes = 2;
};

// page_bytes = 2 · page_tokens · head_dim · dtype_bytes (K and V of one stream).
std::uint64_t page_bytes(const ModelShape& model, std::uint32_t page_tokens);

enum class PoolScope { kStream, kRequestLayer, kRequest };

struct RequestSpec {
  ModelShape model;
  PartitionGeometry geometry;
  StaticRegionParams static_region;
  std::uint32_t max_context_tokens = 131072;  // sizes the top-level directories
  PoolScope scope = PoolScope::kRequestLayer;
  PolicyParams policy{PolicyKind::kBucketedLru, 64, 0};  // from policy_registry().make(...)
  std::uint64_t cache_pages = 0;  // the request's cache, e.g. BudgetManager::cache_pages
};

// Where a pool's page table keeps its resident pages (page_table.h, docs/policy.md §7).
enum class PageTableLayout {
  kTwoLevel,  // per stream a directory of S-page segments (DESIGN.md §4.4): 1/S of a flat table
              // plus the segments holding a resident page
  kHashed,    // per pool an open-addressing table of its slots: bytes follow the cache, not the
              // context or the selections' spread
};

struct EngineOptions {
  std::uint32_t segment_pages = 512;  // S: logical pages per segment, a power of two (two-level)
  bool decision_log = false;          // keep the decision log (decision_log.h)
  PageTableLayout page_table = PageTableLayout::kTwoLevel;
  // Bucketed LRU: keep each pool's age counts (PoolView::age_count) where its window
  // (B − 1) << shift is at most kMaxAgeWindow steps, so that a step finds its eviction threshold
  // without a histogram pass over the slots. Decisions are the same either way (off: the path the
  // executor's kernel takes).
  bool age_counts = true;
};
inline constexpr std::uint32_t kMaxAgeWindow = 4096;

// Counts over selected pages. accesses = hits + misses; misses = fetched + bypassed.
struct PolicyStats {
  std::uint64_t steps = 0;     // pool steps
  std::uint64_t accesses = 0;  // selected cacheable pages
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t bypassed = 0;         // misses served from scratch, not cached
  std::uint64_t static_accesses = 0;  // selected static-region pages: neither hits nor misses
  std::uint64_t victims = 0;
  std::uint64_t fetched_bytes = 0;  // misses × page_bytes

  double hit_ratio() const {
    return accesses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(accesses);
  }
  PolicyStats& operator+=(const PolicyStats& other);
  PolicyStats& operator-=(const PolicyStats& other);  // other's counts are part of these
  bool operator==(const PolicyStats&) const = default;
};

using RequestId = std::uint64_t;

class Engine {
  struct State;

 public:
  explicit Engine(const EngineOptions& options = {});
  ~Engine();
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;

  // A saved state of an engine, to go back to (running ahead, sim/request_policy.h).
  class Checkpoint {
   public:
    Checkpoint();
    ~Checkpoint();
    Checkpoint(Checkpoint&&) noexcept;
    Checkpoint& operator=(Checkpoint&&) noexcept;

   private:
    friend class Engine;
    std::unique_ptr<State> state_;
  };
  // Saves every request's state (Belady futures, immutable, are shared) except the two-level page
  // tables' segments, most of an engine's bytes at long contexts, and the last step's decisions.
  // Saving into the same checkpoint again reuses its buffers, so it stops allocating.
  void save(Checkpoint& checkpoint) const;
  // Goes back to a state this engine saved. The segments are rebuilt from the slots: their
  // handles may differ from those at the save, the lookups, decisions and metadata bytes do not.
  // decisions() are empty until the next end_step. InvariantError if the checkpoint is empty or
  // from an engine of another segment size.
  void restore(const Checkpoint& checkpoint);

  // Validates the spec (InputError) and creates the request's streams and pools. Ids count up
  // from 0 and are never reused.
  RequestId add_request(const RequestSpec& spec);
  // Releases the request's slots, segments and buffers.
  void remove_request(RequestId id);
  void set_cache_pages(RequestId id, std::uint64_t cache_pages);
  // Variable clusters: see PartitionMap::append_clusters.
  void append_clusters(RequestId id, std::uint32_t layer, std::uint32_t head,
                       std::uint32_t start_token, std::span<const std::uint32_t> lengths);
  // Belady: the stream's whole future (future.h); required for every stream of a Belady request
  // before its first step.
  void set_future(RequestId id, std::uint32_t layer, std::uint32_t head, StreamFuture future);

  void begin_step(RequestId id, std::uint32_t now, std::uint32_t context_tokens);
  // partition_ids: ascending (duplicates allowed) ids of the stream's partitions.
  void select(RequestId id, std::uint32_t layer, std::uint32_t head,
              std::span<const std::uint32_t> partition_ids);
  // Runs every pool of the request; returns this step's counts.
  PolicyStats end_step(RequestId id);

  std::uint32_t pool_count(RequestId id) const;
  // The decisions of the pool's last step (valid until the request's next end_step).
  PoolDecisions decisions(RequestId id, std::uint32_t pool) const;

  const PolicyStats& request_stats(RequestId id) const;
  // Indexed by layer, summed over requests.
  std::span<const PolicyStats> layer_stats() const;
  const PolicyStats& total_stats() const;
  MetadataReport metadata() const;
  // The header line and every pool step so far, if EngineOptions::decision_log.
  const std::string& decision_log() const;
  // Moves the log out, e.g. to append it to a file; later calls return what was added since.
  std::string take_decision_log();

  // Throws InvariantError naming the first broken invariant: every slot owned once, page table
  // and slots agree, segments owned once and counted right, capacity honoured, the last step's
  // victims not selected in it (pinned pages never evicted).
  void check_invariants() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spin::policy
