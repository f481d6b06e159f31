#include "common/trace/trace.h"

#include <bit>

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <set>

#include "common/error.h"

namespace spin::trace {
namespace {

void require(bool ok, std::string_view field, std::string_view expected) {
  if (!ok) throw InputError(fmt::format("{}: {}", field, expected));
}

}  // namespace

void validate_header(const TraceHeader& h) {
  const ModelShape& m = h.model;
  require(m.layers >= 1 && m.layers <= 65535, "model.layers",
          fmt::format("must be in [1, 65535], got {}", m.layers));
  require(m.kv_heads >= 1 && m.kv_heads <= 65535, "model.kv_heads",
          fmt::format("must be in [1, 65535], got {}", m.kv_heads));
  require(m.query_heads >= m.kv_heads && m.query_heads % m.kv_heads == 0, "model.query_heads",
          fmt::format("must be a multiple of kv_heads ({}), got {}", m.kv_heads, m.query_heads));
  require(m.head_dim >= 1, "model.head_dim", "must be >= 1, got 0");
  require(m.dtype_bytes >= 1 && m.dtype_bytes <= 8, "model.dtype_bytes",
          fmt::format("must be in [1, 8], got {}", m.dtype_bytes));
  require(!h.algorithms.empty(), "algorithms", "at least one algorithm is needed");
  std::set<std::string> names;
  for (size_t i = 0; i < h.algorithms.size(); ++i) {
    const AlgorithmInfo& a = h.algorithms[i];
    const std::string at = fmt::format("algorithms[{}]", i);
    require(!a.name.empty(), at + ".name", "must not be empty");
    require(names.insert(a.name).second, at + ".name", fmt::format("'{}' appears twice", a.name));
    require(
        a.partition_kind == PartitionKind::kFixed || a.partition_kind == PartitionKind::kVariable,
        at + ".partition_kind", "must be fixed or variable");
    require(a.partition_kind == PartitionKind::kVariable || a.partition_tokens >= 1,
            at + ".partition_tokens", "must be >= 1 for fixed partitions, got 0");
    require(a.page_tokens >= 1 && std::has_single_bit(a.page_tokens), at + ".page_tokens",
            fmt::format("must be a power of two (pages are addressed by shifts), got {}",
                        a.page_tokens));
    require(std::isfinite(a.budget_ratio) && a.budget_ratio >= 0 && a.budget_ratio <= 1,
            at + ".budget_ratio", fmt::format("must be in [0, 1], got {}", a.budget_ratio));
  }
}

void validate_request(const TraceHeader& h, const RequestInfo& r) {
  const std::string at = fmt::format("request id {}", r.id);
  require(r.algorithm < h.algorithms.size(), at + ": algorithm",
          fmt::format("index {} out of range (the trace has {} algorithms)", r.algorithm,
                      h.algorithms.size()));
  require(r.prompt_tokens >= 1, at + ": prompt_tokens", "must be >= 1, got 0");
  // 10^15 us (31 years): the simulator's clock counts ns in 64 bits.
  require(r.arrival_us <= kMaxArrivalUs, at + ": arrival_us",
          fmt::format("{} exceeds {} (31 years)", r.arrival_us, kMaxArrivalUs));
  require(r.decode_steps <= r.output_tokens, at + ": decode_steps",
          fmt::format("{} exceeds output_tokens ({})", r.decode_steps, r.output_tokens));
  require(uint64_t{r.prompt_tokens} + r.output_tokens < std::numeric_limits<uint32_t>::max(),
          at + ": prompt_tokens + output_tokens",
          fmt::format("must be < 2^32 - 1, got {}", uint64_t{r.prompt_tokens} + r.output_tokens));
}

PartitionMap::PartitionMap(std::span<const uint32_t> cluster_tokens, uint32_t prompt_tokens)
    : prompt_tokens_(prompt_tokens) {
  append(cluster_tokens, prompt_tokens);
  initial_clusters_ = clusters();
}

void PartitionMap::grow(uint32_t step, std::span<const uint32_t> cluster_tokens) {
  if (!growth_.empty() && step <= growth_.back().step) {
    throw InputError(fmt::format(
        "map growth at step {} does not follow the previous growth at step {} (growth steps must "
        "be strictly ascending)",
        step, growth_.back().step));
  }
  if (cluster_tokens.empty()) {
    throw InputError(fmt::format("map growth at step {} appends no cluster", step));
  }
  append(cluster_tokens, uint64_t{prompt_tokens_} + step);
  growth_.push_back({step, clusters()});
}

void PartitionMap::append(std::span<const uint32_t> cluster_tokens, uint64_t context_tokens) {
  uint64_t end = offsets_.back();
  offsets_.reserve(offsets_.size() + cluster_tokens.size());
  for (size_t i = 0; i < cluster_tokens.size(); ++i) {
    if (cluster_tokens[i] == 0) {
      throw InputError(
          fmt::format("cluster {} has 0 tokens (every cluster holds >= 1 token)", clusters()));
    }
    end += cluster_tokens[i];
    if (end > context_tokens) {
      throw InputError(fmt::format(
          "clusters cover {} tokens by cluster {}, more than the {} tokens of the context", end,
          clusters(), context_tokens));
    }
    offsets_.push_back(static_cast<uint32_t>(end));
  }
}

uint32_t PartitionMap::clusters_at(uint32_t step) const {
  uint32_t n = initial_clusters_;
  for (const Growth& g : growth_) {
    if (g.step > step) break;
    n = g.clusters;
  }
  return n;
}

std::vector<uint32_t> PartitionMap::cluster_tokens(uint32_t first, uint32_t last) const {
  std::vector<uint32_t> out(last - first);
  for (uint32_t i = first; i < last; ++i) out[i - first] = offsets_[i + 1] - offsets_[i];
  return out;
}

SelectionProblem check_selection(std::span<const uint32_t> ids, uint32_t partition_count) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0 && ids[i] <= ids[i - 1]) return {SelectionProblem::Kind::kNotAscending, i};
    if (ids[i] >= partition_count) return {SelectionProblem::Kind::kOutOfRange, i};
  }
  return {};
}

std::string describe(const SelectionProblem& p, std::span<const uint32_t> ids,
                     uint32_t partition_count) {
  switch (p.kind) {
    case SelectionProblem::Kind::kNone:
      return "selection is valid";
    case SelectionProblem::Kind::kNotAscending:
      return fmt::format(
          "partition id {} at position {} is not greater than the previous id {} (ids must be "
          "strictly ascending, without duplicates)",
          ids[p.position], p.position, ids[p.position - 1]);
    case SelectionProblem::Kind::kOutOfRange:
      return fmt::format(
          "partition id {} at position {} is out of range: {} partitions exist at this step",
          ids[p.position], p.position, partition_count);
  }
  return {};
}

}  // namespace spin::trace
