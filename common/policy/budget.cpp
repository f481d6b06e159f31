#include "common/policy/budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace spin::policy {

void validate(const BudgetParams& params) {
  if (params.kind == BudgetKind::kRatio && !(params.ratio > 0.0 && params.ratio <= 1.0)) {
    throw InputError(fmt::format("budget ratio: expected a share in (0, 1], got {}", params.ratio));
  }
  if (params.kind == BudgetKind::kTokens && params.tokens == 0) {
    throw InputError("budget tokens: expected a positive token count, got 0");
  }
  if (!(params.cluster_headroom_pages >= 0.0)) {
    throw InputError(fmt::format("cluster_headroom_pages: expected >= 0, got {}",
                                 params.cluster_headroom_pages));
  }
  if (!(params.k_min >= 0.0 && params.k_max >= params.k_min)) {
    throw InputError(fmt::format("buffer ratios: expected 0 <= k_min <= k_max, got {} and {}",
                                 params.k_min, params.k_max));
  }
  if (!(params.watermark >= 0.0 && params.watermark <= 1.0)) {  // 1: buffers never grow
    throw InputError(
        fmt::format("watermark: expected a share in [0, 1], got {}", params.watermark));
  }
}

std::uint32_t budget_tokens(const BudgetParams& params, std::uint32_t context_tokens) {
  double wanted = static_cast<double>(params.tokens);
  if (params.kind == BudgetKind::kRatio) {
    // ceil(ratio · context), where a product that rounds just above an integer (0.07 · 800 =
    // 56.000000000000007) does not add a token: one fewer is enough if it is that share already.
    wanted = std::ceil(params.ratio * context_tokens);
    if (wanted >= 1 && (wanted - 1) / context_tokens >= params.ratio) wanted -= 1;
  }
  return wanted < context_tokens ? static_cast<std::uint32_t>(wanted) : context_tokens;
}

std::uint32_t mandatory_pages_per_stream(const BudgetParams& params,
                                         const PartitionGeometry& geometry,
                                         std::uint32_t context_tokens) {
  validate(geometry);
  const std::uint32_t log2 = log2_exact(geometry.page_tokens);
  const std::uint64_t budget = budget_tokens(params, context_tokens);
  const std::uint64_t g = geometry.partition_tokens;
  const std::uint64_t partitions = (budget + g - 1) / g;
  std::uint64_t pages = 0;
  if (geometry.kind == PartitionKind::kFixed) {
    const std::uint64_t span =
        max_pages_per_partition(geometry.partition_tokens, geometry.page_tokens);
    pages = partitions * span;
  } else {
    pages = pages_for_tokens(budget, log2) +
            static_cast<std::uint64_t>(
                std::ceil(params.cluster_headroom_pages * static_cast<double>(partitions)));
  }
  const std::uint64_t stream_pages = pages_for_tokens(context_tokens, log2);
  return static_cast<std::uint32_t>(pages < stream_pages ? pages : stream_pages);
}

RequestFootprint request_footprint(const BudgetParams& params, const PartitionGeometry& geometry,
                                   const StaticRegionParams& static_region, std::uint64_t streams,
                                   std::uint32_t context_tokens, std::uint64_t summary_pages) {
  const std::uint64_t stream_pages =
      pages_for_tokens(context_tokens, log2_exact(geometry.page_tokens));
  const std::uint64_t static_pages =
      static_page_count(static_region, geometry.page_tokens, context_tokens);
  return RequestFootprint{streams * mandatory_pages_per_stream(params, geometry, context_tokens),
                          streams * static_pages, summary_pages,
                          streams * (stream_pages - std::min(stream_pages, static_pages))};
}

std::uint64_t cache_pages(const RequestFootprint& footprint, double k) {
  const double pages = std::floor((1.0 + k) * static_cast<double>(footprint.mandatory_pages));
  // Compared as doubles first: a huge k must not overflow the conversion.
  return pages >= static_cast<double>(footprint.dynamic_pages) ? footprint.dynamic_pages
                                                               : static_cast<std::uint64_t>(pages);
}

BudgetManager::BudgetManager(const BudgetParams& params, std::uint64_t hbm_pages)
    : params_(params), hbm_pages_(hbm_pages) {
  validate(params);
}

std::uint64_t BudgetManager::admission_pages(const RequestFootprint& footprint) const {
  const auto cache = static_cast<std::uint64_t>(
      std::ceil((1.0 + params_.k_min) * static_cast<double>(footprint.mandatory_pages)));
  return std::min(cache, footprint.dynamic_pages) + footprint.static_pages +
         footprint.summary_pages;
}

bool BudgetManager::can_admit(const RequestFootprint& footprint) const {
  return admission_pages(footprint) + sums_.admission <= hbm_pages_;
}

const BudgetManager::Entry& BudgetManager::entry(std::uint64_t id) const {
  const auto it = entries_.find(id);
  if (it == entries_.end()) throw InvariantError(fmt::format("budget: no request {}", id));
  return it->second;
}

std::uint64_t BudgetManager::pages(const Entry& e, double k) const {
  return policy::cache_pages(e.footprint, k) + e.footprint.static_pages + e.footprint.summary_pages;
}

BudgetManager::Sums& BudgetManager::Sums::operator+=(const Sums& o) {
  used += o.used;
  at_k_max += o.at_k_max;
  admission += o.admission;
  below_k_max += o.below_k_max;
  return *this;
}

BudgetManager::Sums& BudgetManager::Sums::operator-=(const Sums& o) {
  used -= o.used;
  at_k_max -= o.at_k_max;
  admission -= o.admission;
  below_k_max -= o.below_k_max;
  return *this;
}

BudgetManager::Sums BudgetManager::share(const Entry& e) const {
  return {pages(e, e.k), pages(e, params_.k_max), admission_pages(e.footprint),
          e.k < params_.k_max ? std::size_t{1} : 0};
}

void BudgetManager::set_k(Entry& e, double k) {
  sums_ -= share(e);
  e.k = k;
  sums_ += share(e);
}

void BudgetManager::admit(std::uint64_t id, const RequestFootprint& footprint) {
  if (entries_.count(id) != 0) throw InvariantError(fmt::format("budget: request {} twice", id));
  if (!can_admit(footprint)) {
    throw InvariantError(fmt::format("budget: request {} admitted without room", id));
  }
  sums_ += share(entries_.emplace(id, Entry{footprint, params_.k_min}).first->second);
  shrink_to_fit();
}

bool BudgetManager::update(std::uint64_t id, const RequestFootprint& footprint) {
  entry(id);  // throws for an unknown id
  Entry& e = entries_.find(id)->second;
  sums_ -= share(e);
  e.footprint = footprint;
  sums_ += share(e);
  shrink_to_fit();
  return sums_.used <= hbm_pages_;
}

void BudgetManager::release(std::uint64_t id) {
  sums_ -= share(entry(id));
  entries_.erase(id);
}

// Pages in use if every k were clamped to `level`: from above (shrink) or from below (grow).
std::uint64_t BudgetManager::usage(double level, bool grow) const {
  std::uint64_t used = 0;
  for (const auto& [id, e] : entries_)
    used += pages(e, grow ? std::max(e.k, level) : std::min(e.k, level));
  return used;
}

// As every k ≤ k_max, the pages at k clamped from above to k_max are those in use.
void BudgetManager::shrink_to_fit() {
  if (sums_.used <= hbm_pages_) return;
  // The highest level in [k_min, k_max] at which everything fits (k_min if none does).
  double low = params_.k_min;
  double high = params_.k_max;
  for (int i = 0; i < 64; ++i) {
    const double mid = 0.5 * (low + high);
    (usage(mid, false) <= hbm_pages_ ? low : high) = mid;
  }
  for (auto& [id, e] : entries_)
    if (low < e.k) set_k(e, low);
}

// As every k ≥ k_min, the pages at k clamped from below to k_min are those in use, and clamped
// to k_max they are the sum at k_max.
void BudgetManager::rebalance() {
  const auto limit = static_cast<std::uint64_t>(
      std::floor((1.0 - params_.watermark) * static_cast<double>(hbm_pages_)));
  if (sums_.used > limit) return;
  // The highest level in [k_min, k_max] that keeps the pool `watermark` free.
  double low = params_.k_min;
  double high = params_.k_max;
  if (sums_.at_k_max <= limit) {
    if (sums_.below_k_max == 0) return;  // every buffer is at k_max already
    low = high;
  } else {
    for (int i = 0; i < 64; ++i) {
      const double mid = 0.5 * (low + high);
      (usage(mid, true) <= limit ? low : high) = mid;
    }
  }
  for (auto& [id, e] : entries_)
    if (e.k < low) set_k(e, low);
}

double BudgetManager::buffer_ratio(std::uint64_t id) const { return entry(id).k; }

const RequestFootprint& BudgetManager::footprint(std::uint64_t id) const {
  return entry(id).footprint;
}

std::uint64_t BudgetManager::cache_pages(std::uint64_t id) const {
  const Entry& e = entry(id);
  return policy::cache_pages(e.footprint, e.k);
}

std::uint64_t BudgetManager::used_pages() const { return sums_.used; }

void BudgetManager::check_invariants() const {
  Sums sums;
  for (const auto& [id, e] : entries_) {
    if (!(e.k >= params_.k_min && e.k <= params_.k_max)) {
      throw InvariantError(fmt::format("budget: request {} has k = {} outside [{}, {}]", id, e.k,
                                       params_.k_min, params_.k_max));
    }
    sums += share(e);
  }
  if (!(sums == sums_)) {
    throw InvariantError(fmt::format(
        "budget: kept sums (used {}, at k_max {}, admission {}, {} below k_max) differ from the "
        "entries' ({}, {}, {}, {})",
        sums_.used, sums_.at_k_max, sums_.admission, sums_.below_k_max, sums.used, sums.at_k_max,
        sums.admission, sums.below_k_max));
  }
  if (sums_.used > hbm_pages_ && usage(params_.k_min, false) <= hbm_pages_) {
    throw InvariantError(fmt::format("budget: {} pages used of {} although k_min would fit",
                                     sums_.used, hbm_pages_));
  }
}

std::vector<std::uint64_t> split_pages(std::uint64_t total,
                                       const std::vector<std::uint64_t>& weights) {
  std::uint64_t sum = 0;
  for (const std::uint64_t w : weights) sum += w;
  if (sum == 0) throw InvariantError("split_pages: the weights sum to 0");
  std::vector<std::uint64_t> parts(weights.size());
  unsigned __int128 cumulative = 0;
  std::uint64_t given = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    cumulative += weights[i];
    const auto upto = static_cast<std::uint64_t>(cumulative * total / sum);
    parts[i] = upto - given;
    given = upto;
  }
  return parts;
}

}  // namespace spin::policy
