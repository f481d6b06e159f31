// Generator: a synthetic trace source for one algorithm and workload (docs/trace-generators.md).
//
// It implements trace::TraceSource, so the simulator and `spin trace stats` pull selections
// straight from it, and copy_to_file() writes the same records through TraceWriter.
//
// Semantics (DESIGN.md §4.1, common/trace/trace.h). Decode step s of a request sees
// context = prompt + s tokens. Each KV head selects k(s) = min(ceil((budget_tokens + budget_ratio
// · context) / g), dynamic) partitions, g = partition_tokens (the nominal cluster size for
// variable partitions), where `dynamic` counts the partitions outside the static region: a
// selection never contains a partition that touches a static page (attention sinks, local window,
// unfinished last page, as policy::make_static_region computes them), because the policy core
// keeps those pages resident outside the cache; the budget counts only dynamic partitions.
// Variable partitions (RetroInfer): each stream clusters its prompt into runs of
// cluster_min..max tokens (uniform), and every reindex_interval generated tokens appends the new
// tokens as further clusters of the same lengths; tokens not yet clustered belong to the
// local window (the algorithm's default window covers them).
//
// The locality model, per stream (request, layer, KV head), step s → s + 1:
//   1. Persistence: each selected partition stays selected with probability p_l, the layer's
//      persistence: 1 - (1 - persistence) · g^-granularity_exponent, plus a per-layer offset in
//      ±layer_jitter, times poor_layer_scale in the poorly-local layers.
//   2. Replacements fill the selection back to k(s+1), none of them in the previous selection:
//      - recall (recall_prob): a partition last selected d <= W = recall_window_steps steps ago,
//        d - 1 geometric with mean recall_mean_age_steps, cut at W (the working set);
//      - revisit (revisit_prob): one last selected W < d <= revisit_window_steps ago (uniform);
//      - re-emergence (reemerge_prob): a partition from the archive, a bounded sample of
//        partitions that left the recall ring long ago (reuse distances of thousands of steps);
//      - otherwise a fresh draw from the importance distribution: with background_prob uniform
//        over the context, else a Laplace(hotspot_width_tokens) spread around a hotspot chosen by
//        Zipf(hotspot_zipf) popularity among `hotspots` slots shared by the layer's heads (picked
//        with probability head_correlation) and `head_hotspots` slots of the head's own.
//      Recalls and revisits read a ring of dropped partitions in blocks by drop step and pick
//      uniformly among the block's live entries; every entry picked leaves its block (taken, or
//      rejected because the partition was selected again since), so each drop is recalled at
//      most once. A source with nothing valid to offer (an empty block, an empty archive, a
//      selected candidate) is redrawn, then fresh draws are tried (8 tries each), then the next
//      free partition is probed.
//   3. Hotspots move: each slot keeps its position for a lifetime around
//      hotspot_lifetime_steps, then jumps to a uniform position in the context (slow drift,
//      generated tokens included). A shared slot of layer l takes layer l-1's position with
//      probability layer_correlation (adjacent-layer correlation).
//   The first dense_layers layers select every dynamic partition.
//
// Randomness: every choice comes from hashes of (seed, request id, layer, head, slot, epoch) and
// per-stream generators seeded the same way, so open_layer may be called for any request and
// layer, in any order, from any thread, and yields identical records.
//
// Cost per step and head: O(k) for persistence and replacements (expected O(1) per replacement)
// plus O(dynamic partitions / 64) to emit the ascending selection from a bitmap. Memory per open
// stream: one bit per partition, the ring (O(k · revisit window)) and the archive (O(k)). Large
// arrays (32 KiB or more) that a closed stream frees are kept for the next one opened on the same
// thread, up to 16 MiB a thread, so opening a layer rarely touches fresh memory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/trace/source.h"
#include "common/trace/writer.h"
#include "traces/gen/config.h"

namespace spin::gen {

namespace detail {
struct Tables;
// Hash tags, so that different choices never share a hash (a stream's cluster map is drawn from
// Rng(kMap ^ mix(seed, request id, layer, head))).
enum Tag : uint64_t { kHead = 1, kMap, kLife, kShared, kLink, kPrivate, kPoor, kJitter };
}  // namespace detail

// The per-layer part of the locality model.
struct LayerModel {
  bool dense = false;
  bool poor = false;
  double persistence = 0;  // p_l
  double recall_prob = 0;
};

class Generator final : public trace::TraceSource {
 public:
  // Validates the config against the model (InputError naming the key under "generator") and
  // draws the workload's requests. The trace header records the model's shape, named by its
  // preset ("custom" without one). O(layers + requests).
  Generator(GeneratorConfig config, config::ModelConfig model);
  // The generator and model of a `spin trace gen` config.
  explicit Generator(const TraceGenConfig& config) : Generator(config.generator, config.model) {}
  ~Generator() override;

  const trace::TraceHeader& header() const override { return header_; }
  std::span<const trace::RequestInfo> requests() const override { return requests_; }
  std::unique_ptr<trace::StepStream> open_layer(
      size_t request, uint32_t layer, std::span<const uint32_t> heads = {}) const override;

  const GeneratorConfig& config() const { return config_; }
  const config::ModelConfig& model() const { return model_; }
  const AlgorithmSpec& algorithm() const { return spec_; }
  const LayerModel& layer_model(uint32_t layer) const { return layers_[layer]; }
  // Partitions one head selects over `context` tokens before clipping to the dynamic ones.
  uint32_t budget_partitions(uint64_t context_tokens) const;

 private:
  GeneratorConfig config_;
  config::ModelConfig model_;
  AlgorithmSpec spec_;
  trace::TraceHeader header_;
  std::vector<trace::RequestInfo> requests_;
  std::vector<LayerModel> layers_;
  std::unique_ptr<const detail::Tables> tables_;
};

// Writes every request of `source` to `path` through TraceWriter, layer by layer; variable
// partition maps and their growth are taken from partition_offsets(). `progress` (may be null)
// is called after each request with the number of requests written.
void copy_to_file(const trace::TraceSource& source, const std::filesystem::path& path,
                  const trace::WriterOptions& options = {},
                  const std::function<void(size_t)>& progress = {});

}  // namespace spin::gen
