#include "common/policy/future.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/policy/partition.h"
#include "common/policy/residency.h"

namespace spin::policy {

void StreamFuture::push_step(std::uint32_t now, std::span<const std::uint32_t> pages) {
  if (!now_.empty() && now <= now_.back()) {
    throw InputError(fmt::format("future: step {} does not follow step {}", now, now_.back()));
  }
  for (std::size_t i = 1; i < pages.size(); ++i) {
    if (pages[i] <= pages[i - 1]) {
      throw InputError(
          fmt::format("future: the pages of step {} are not ascending and distinct", now));
    }
  }
  now_.push_back(now);
  pages_.insert(pages_.end(), pages.begin(), pages.end());
  begin_.push_back(pages_.size());
  next_use_.clear();
}

void StreamFuture::push_selection(std::uint32_t now, const PartitionMapView& map,
                                  const StaticRegion& region,
                                  std::span<const std::uint32_t> partition_ids) {
  const MappedSelection mapped = map_selection_into(map, region, partition_ids, scratch_, "future");
  push_step(now, std::span<const std::uint32_t>(scratch_.data(), mapped.cacheable_pages));
}

void StreamFuture::finalize() {
  std::uint32_t highest = 0;
  for (const std::uint32_t p : pages_) highest = std::max(highest, p);
  std::vector<std::uint32_t> next(std::size_t{highest} + 1, kNeverUsed);  // by page, going back
  next_use_.assign(pages_.size(), kNeverUsed);
  for (std::size_t s = now_.size(); s-- > 0;) {
    for (std::uint64_t a = begin_[s]; a < begin_[s + 1]; ++a) {
      next_use_[a] = next[pages_[a]];
      next[pages_[a]] = now_[s];
    }
  }
}

std::span<const std::uint32_t> StreamFuture::pages(std::size_t step) const {
  return std::span<const std::uint32_t>(pages_).subspan(begin_[step],
                                                        begin_[step + 1] - begin_[step]);
}

std::span<const std::uint32_t> StreamFuture::next_uses(std::size_t step) const {
  if (next_use_.size() != pages_.size()) throw InvariantError("StreamFuture: not finalized");
  return std::span<const std::uint32_t>(next_use_).subspan(begin_[step],
                                                           begin_[step + 1] - begin_[step]);
}

}  // namespace spin::policy
