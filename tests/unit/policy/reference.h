// Obviously-correct reference models of the residency rule and its policies, written
// independently of common/policy (std::map, std::sort), for the property tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/policy/residency.h"

namespace spin::policy::test {

using Key = std::uint64_t;  // (stream << 32) | page, as PageKey

struct RefDecision {
  std::vector<std::pair<Key, int>> hits;     // ascending key
  std::vector<std::pair<Key, int>> victims;  // ascending slot
  std::vector<std::pair<Key, int>> fetches;  // fetch order
  std::vector<Key> bypassed;                 // ascending key
  bool operator==(const RefDecision&) const = default;
};

// One pool. Slots exist up to the largest capacity ever set; the lowest empty slots are used.
class RefPool {
 public:
  RefPool(PolicyKind kind, std::uint32_t buckets, std::uint32_t shift)
      : kind_(kind), buckets_(buckets), shift_(shift) {}

  void set_capacity(std::uint32_t capacity) {
    capacity_ = capacity;
    if (slots_.size() < capacity) slots_.resize(capacity);
  }

  // keys ascending; next_use[k] for Belady.
  RefDecision step(std::uint32_t now, const std::vector<Key>& keys,
                   const std::map<Key, std::uint32_t>& next_use = {}) {
    RefDecision d;
    std::set<int> pinned;
    std::vector<Key> misses;
    for (const Key k : keys) {
      const auto it = where_.find(k);
      if (it == where_.end()) {
        misses.push_back(k);
        continue;
      }
      Slot& s = slots_[it->second];
      s.last_use = now;
      if (next_use.count(k)) s.next_use = next_use.at(k);
      pinned.insert(it->second);
      d.hits.push_back({k, it->second});
    }
    const std::size_t room = capacity_ > d.hits.size() ? capacity_ - d.hits.size() : 0;
    const std::size_t cached = std::min(room, misses.size());
    d.bypassed.assign(misses.begin() + static_cast<long>(cached), misses.end());
    misses.resize(cached);

    std::vector<int> candidates;
    std::size_t resident = 0;
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      if (!slots_[i].valid) continue;
      ++resident;
      if (!pinned.count(i)) candidates.push_back(i);
    }
    std::size_t need = resident + cached > capacity_ ? resident + cached - capacity_ : 0;
    need = std::min(need, candidates.size());
    if (kind_ == PolicyKind::kPreviousStep) need = candidates.size();
    std::stable_sort(candidates.begin(), candidates.end(), [&](int a, int b) {
      const Slot& x = slots_[a];
      const Slot& y = slots_[b];
      switch (kind_) {
        case PolicyKind::kBucketedLru:
          return bucket(now, x) > bucket(now, y);
        case PolicyKind::kExactLru:
          return std::pair(x.last_use, x.key) < std::pair(y.last_use, y.key);
        case PolicyKind::kFifo:
          return x.inserted < y.inserted;
        case PolicyKind::kBelady:
          return x.next_use > y.next_use;
        case PolicyKind::kPreviousStep:
          return false;
      }
      throw std::logic_error(
          "reference policy: no order for this PolicyKind; a new policy adds "
          "its case here");
    });
    candidates.resize(need);  // stable sort on ascending slots: ties keep the lowest slot first
    std::sort(candidates.begin(), candidates.end());
    for (const int v : candidates) {
      d.victims.push_back({slots_[v].key, v});
      where_.erase(slots_[v].key);
      slots_[v] = Slot{};
    }
    std::size_t m = 0;
    for (int i = 0; i < static_cast<int>(slots_.size()) && m < misses.size(); ++i) {
      if (slots_[i].valid) continue;
      const Key k = misses[m++];
      slots_[i] = Slot{true, k, now, now, next_use.count(k) ? next_use.at(k) : kNeverUsed};
      where_[k] = i;
      d.fetches.push_back({k, i});
    }
    return d;
  }

  std::size_t resident() const { return where_.size(); }

 private:
  struct Slot {
    bool valid = false;
    Key key = 0;
    std::uint32_t last_use = 0;
    std::uint32_t inserted = 0;
    std::uint32_t next_use = kNeverUsed;
  };
  std::uint32_t bucket(std::uint32_t now, const Slot& s) const {
    return std::min<std::uint32_t>((now - s.last_use) >> shift_, buckets_ - 1);
  }

  PolicyKind kind_;
  std::uint32_t buckets_;
  std::uint32_t shift_;
  std::size_t capacity_ = 0;
  std::vector<Slot> slots_;
  std::map<Key, int> where_;
};

// Misses of exact LRU at every capacity from a one-pass stack-distance computation: each step's
// accesses are measured against the stack at the end of the previous step, then pushed in
// ascending key order (the highest key ends on top). misses[c] for c < max_capacity.
inline std::vector<std::uint64_t> stack_distance_misses(const std::vector<std::vector<Key>>& steps,
                                                        std::size_t max_capacity) {
  std::vector<Key> stack;  // top at the back
  std::vector<std::uint64_t> misses(max_capacity, 0);
  for (const auto& step : steps) {
    for (const Key k : step) {
      const auto it = std::find(stack.begin(), stack.end(), k);
      const std::size_t depth =
          it == stack.end() ? ~std::size_t{0} : static_cast<std::size_t>(stack.end() - it - 1);
      for (std::size_t c = 0; c < max_capacity; ++c) misses[c] += depth >= c ? 1 : 0;
    }
    for (const Key k : step) stack.erase(std::remove(stack.begin(), stack.end(), k), stack.end());
    for (const Key k : step) stack.push_back(k);
  }
  return misses;
}

// Random selection sequences: sizes vary, steps overlap, bursts exceed any cache.
struct SequenceShape {
  std::uint32_t pages = 64;         // logical pages per stream
  std::uint32_t max_select = 12;    // usual selection size per stream
  std::uint32_t burst_select = 48;  // occasional burst size
  double keep = 0.6;                // share of the previous selection kept
  double burst = 0.05;              // probability of a burst step
};

inline std::vector<std::vector<std::uint32_t>> random_stream_sequence(std::mt19937_64& rng,
                                                                      std::uint32_t steps,
                                                                      const SequenceShape& shape) {
  std::vector<std::vector<std::uint32_t>> seq;
  std::vector<std::uint32_t> prev;
  std::uniform_real_distribution<double> unit(0, 1);
  for (std::uint32_t s = 0; s < steps; ++s) {
    const bool burst = unit(rng) < shape.burst;
    const std::uint32_t size = std::uniform_int_distribution<std::uint32_t>(
        0, burst ? shape.burst_select : shape.max_select)(rng);
    std::set<std::uint32_t> sel;
    for (const std::uint32_t p : prev) {
      if (sel.size() < size && unit(rng) < shape.keep) sel.insert(p);
    }
    while (sel.size() < std::min(size, shape.pages)) {
      sel.insert(std::uniform_int_distribution<std::uint32_t>(0, shape.pages - 1)(rng));
    }
    prev.assign(sel.begin(), sel.end());
    seq.push_back(prev);
  }
  return seq;
}

}  // namespace spin::policy::test
