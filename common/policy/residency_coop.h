// The residency rule of one pool (residency.h, DESIGN.md §4.2) as phases over index ranges, so
// that many threads (a CUDA block: exec/residency_kernel.cu) run one pool's step together and
// make pool_step's decisions bit for bit. Device-capable (STYLE.md, "one policy, two
// compilers"); coop_pool_step_with runs the same phases one range after another on one thread,
// which is how the unit tests diff them against pool_step on the CPU.
//
// A phase is a plain function over one range of indices (keys, slots, victims or fetches) given
// by coop_range(count, ranges, r); the ranges of a phase may run at once, and a phase starts
// once every range of the previous one is done (a barrier). What a range writes depends only on
// the phase's inputs and on exclusive prefix sums of per-range counts (the "offsets" below, a
// scan over ranges in ascending order), never on which range ran first, so the decisions are
// those of a single ascending pass:
//
//   1. coop_lookup (keys): page-table lookups; hits get last_use = now (pinned); counts misses.
//      → scan of misses; coop_counts: hits, cached misses, bypassed misses, victims needed.
//   2. coop_list_misses (keys, at its miss offset): the m-th miss in key order is fetch_index[m]
//      if m < cached, else bypass_index[m − cached] (and slot_of = kBypassSlot).
//   3. The threshold t* and ties (how many slots of order t* to free, lowest slots first):
//      - PreviousStep, or no victim needed: t* = 0, nothing to find;
//      - kTryOldestFirst (bucketed LRU): coop_count_targets at t* = 0; if the order-0 candidates
//        (the oldest bucket) number at least `need`, t* = 0 and ties = need (the usual case);
//      - else an MSD radix select: coop_order_span (kSkipCommonDigits: AND and OR of the
//        candidates' orders, so digits where none differ are skipped), then per digit a
//        coop_histogram pass and histogram_select (the first digit whose cumulative count
//        reaches the victims still to find). t* and ties are unique (count(order < t*) + ties ==
//        need, ties ≤ count(order == t*)), so they equal pool_step's whatever the passes.
//   4. coop_count_targets (slots): per range, candidates (resident, unpinned: last_use < now)
//      below t*, at t*, and empty slots. → scan; coop_target_offsets gives each range its first
//      victim index, first target index (targets = empty and freed slots, ascending) and its
//      share of the ties (the lowest-indexed slots of order t* come first). Victims fewer than
//      `need` (a policy that breaks its contract, e.g. an on_access that pins other slots) end
//      the step with kTooFewVictims, as in pool_step: the hits are pinned, nothing else changed.
//   5. coop_collect (slots): writes victim_slot and gives the t-th target (t < cached) to the
//      t-th cached miss: slot_of[fetch_index[t]] = slot.
//   6. coop_evict (victims): victim_key, unmap (two-level: a segment emptied here goes back to
//      the free stack), empty the slot.
//   7. coop_count_new_segments (fetches): a fetch opens a segment iff it is the first of the
//      cached misses in its S-page range (keys ascend, so a range's misses are adjacent) and that
//      range has none. → scan; coop_take_segments pops them in fetch order, as pool_step does.
//   8. coop_insert (fetches): the slot takes the key (last_use = now), the page table maps it.
//   coop_finish: resident and the segment pool's free count.
//
// Equal to pool_step: hits, misses, the fetch list (fetch_index, slot_of), bypasses, victims
// (victim_slot, victim_key), the slot arrays and the pool's resident count; the page table maps
// the same keys to the same slots and the same number of segments is in use. Only segment
// handles may differ: segments emptied in phase 6 are pushed in the order their last pages were
// unmapped, which concurrent ranges do not fix (slots never depend on handles, and the decision
// log does not show them). With one range at a time they equal pool_step's too.
//
// Scope: two-level page tables (the executor's); the engine's hashed tables go through
// pool_step. Phases 6 and 8 update shared words (segment use counts, the free stack's top)
// through `Ops` (SequentialOps here, atomics on the device); nothing else is written by two
// ranges. The histogram of phase 3 is accumulated through the caller's `add(bin)`.
//
// Complexity: as pool_step's, O(n + extent) per histogram pass and otherwise, spread over the
// ranges, plus the scans (O(ranges) each, or O(log ranges) steps on a block).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/hd.h"
#include "common/policy/page_key.h"
#include "common/policy/page_table.h"
#include "common/policy/residency.h"

namespace spin::policy {

struct IndexRange {
  std::uint32_t begin;
  std::uint32_t end;
};
static_assert(std::is_trivially_copyable_v<IndexRange>);

// Range r of `ranges` contiguous parts of [0, count), in ascending order: chunks of
// ceil(count / ranges) (one 32-bit division), the last ones possibly short or empty.
SPIN_HD IndexRange coop_range(std::uint32_t count, std::uint32_t ranges, std::uint32_t r) {
  const std::uint32_t quotient = count / ranges;
  const std::uint64_t chunk = quotient + (quotient * ranges != count ? 1u : 0u);
  const std::uint64_t begin = chunk * r;
  const std::uint64_t end = begin + chunk;
  return IndexRange{static_cast<std::uint32_t>(begin < count ? begin : count),
                    static_cast<std::uint32_t>(end < count ? end : count)};
}

// Read-modify-writes of words that several ranges of a phase may update, one range at a time.
struct SequentialOps {
  SPIN_HD static std::uint32_t fetch_add(std::uint32_t* word, std::uint32_t v) {
    const std::uint32_t old = *word;
    *word = old + v;
    return old;
  }
  SPIN_HD static std::uint32_t fetch_sub(std::uint32_t* word, std::uint32_t v) {
    const std::uint32_t old = *word;
    *word = old - v;
    return old;
  }
};

// Whether the policy first tries t* = 0 (residency.h's kTryOldestFirst; PreviousStep needs no t*).
template <class Policy>
SPIN_HD constexpr bool coop_try_oldest_first() {
  if constexpr (Policy::kEvictsAllUnpinned) {
    return false;
  } else {
    return Policy::kTryOldestFirst;
  }
}

// What a step does besides per-slot choices (pool_step's steps 2 and 3).
struct CoopCounts {
  std::uint32_t hits;
  std::uint32_t misses;
  std::uint32_t cached;    // misses that get a slot (the fetches)
  std::uint32_t bypassed;  // misses beyond capacity − hits
  std::uint32_t need;      // unpinned slots to free
};
static_assert(std::is_trivially_copyable_v<CoopCounts>);

// Whether the segment pool can take every segment the step may open (pool_step returns
// kSegmentPoolExhausted otherwise, before changing anything).
SPIN_HD bool coop_segments_suffice(const PoolView& pool, const SegmentPoolView& segments,
                                   std::uint32_t n) {
  return page_table_hashed(pool.table) ||
         segments.free_count >= most_new_segments(pool.table, pool.capacity, n);
}

// Phase 1 (keys): looks up keys[keys.begin, keys.end), pins the hits; returns the misses.
template <class Policy>
SPIN_HD std::uint32_t coop_lookup(const PoolView& pool_in, const SegmentPoolView& segments,
                                  const StepInput& in, IndexRange keys, std::int32_t* slot_of) {
  PoolView pool = pool_in;
  std::uint32_t misses = 0;
  for (std::uint32_t i = keys.begin; i < keys.end; ++i) {
    const std::int32_t slot = page_table_lookup(pool.table, segments, in.keys[i]);
    slot_of[i] = slot;
    if (slot >= 0) {
      pool.slot_last_use[slot] = in.now;
      Policy::on_access(pool, static_cast<std::uint32_t>(slot), i,
                        in.next_use != nullptr ? in.next_use[i] : kNeverUsed, false, in.now);
    } else {
      ++misses;
    }
  }
  return misses;
}

// After phase 1, from the total misses of the n keys.
template <class Policy>
SPIN_HD CoopCounts coop_counts(const PoolView& pool, std::uint32_t n, std::uint32_t misses) {
  CoopCounts c{};
  c.misses = misses;
  c.hits = n - misses;
  const std::uint32_t room = pool.capacity > c.hits ? pool.capacity - c.hits : 0;
  c.cached = misses < room ? misses : room;
  c.bypassed = misses - c.cached;
  const std::uint32_t unpinned = pool.resident - c.hits;
  c.need = unpinned;
  if constexpr (!Policy::kEvictsAllUnpinned) {
    c.need =
        pool.resident + c.cached > pool.capacity ? pool.resident + c.cached - pool.capacity : 0;
    if (c.need > unpinned) c.need = unpinned;
  }
  return c;
}

// Phase 2 (keys): lists the range's misses from `miss_at`, the misses of the ranges before it.
SPIN_HD void coop_list_misses(const CoopCounts& counts, IndexRange keys, std::uint32_t miss_at,
                              std::int32_t* slot_of, std::uint32_t* fetch_index,
                              std::uint32_t* bypass_index) {
  for (std::uint32_t i = keys.begin; i < keys.end; ++i) {
    if (slot_of[i] >= 0) continue;
    if (miss_at < counts.cached) {
      fetch_index[miss_at] = i;
    } else {
      bypass_index[miss_at - counts.cached] = i;
      slot_of[i] = kBypassSlot;
    }
    ++miss_at;
  }
}

// Phase 3: the radix select of t* over the candidates' orders, most significant digit first.
struct OrderSpan {
  std::uint64_t all_and;  // AND of the candidates' orders (~0 if none)
  std::uint64_t any_or;   // OR of them (0 if none)
};
static_assert(std::is_trivially_copyable_v<OrderSpan>);

SPIN_HD OrderSpan combine(const OrderSpan& a, const OrderSpan& b) {
  return OrderSpan{a.all_and & b.all_and, a.any_or | b.any_or};
}

// (slots) The span of the candidates' orders in the range.
template <class Policy>
SPIN_HD OrderSpan coop_order_span(const PoolView& pool, const PolicyParams& params,
                                  std::uint32_t now, IndexRange slots) {
  OrderSpan span{~std::uint64_t{0}, 0};
  for (std::uint32_t s = slots.begin; s < slots.end; ++s) {
    if (pool.slot_last_use[s] >= now) continue;
    const std::uint64_t order = Policy::order(pool, params, now, s);
    span.all_and &= order;
    span.any_or |= order;
  }
  return span;
}

struct RadixSelect {
  std::uint64_t prefix;      // the digits of t* found so far
  std::uint64_t common;      // bits every candidate shares where `differ` is 0
  std::uint64_t differ;      // bits where candidates differ (~0: unknown)
  std::uint32_t unresolved;  // low order bits not yet fixed
  std::uint32_t remaining;   // victims still to find at or above `prefix`; the ties at the end
  std::uint32_t width;       // bits of the digit of the next pass
};
static_assert(std::is_trivially_copyable_v<RadixSelect>);

// span: of all candidates (kSkipCommonDigits), or null to run every digit's pass.
template <class Policy>
SPIN_HD RadixSelect radix_begin(const PolicyParams& params, std::uint32_t need,
                                const OrderSpan* span) {
  RadixSelect r{0, 0, ~std::uint64_t{0}, Policy::order_bits(params), need, 0};
  if (span != nullptr) {
    r.common = span->all_and;
    r.differ = span->all_and ^ span->any_or;
  }
  return r;
}

// Skips the digits where no candidate differs; returns whether the next digit needs a
// histogram pass (of 1 << r.width bins), false once t* = r.prefix and ties = r.remaining.
SPIN_HD bool radix_next_pass(RadixSelect& r) {
  while (r.unresolved > 0) {
    const std::uint32_t width = r.unresolved % 8 == 0 ? 8 : r.unresolved % 8;
    const std::uint32_t mask = (1u << width) - 1;
    if (((r.differ >> (r.unresolved - width)) & mask) != 0) {
      r.width = width;
      return true;
    }
    r.unresolved -= width;
    r.prefix = (r.prefix << width) | ((r.common >> r.unresolved) & mask);
  }
  return false;
}

// (slots) Calls add(digit) for every candidate of the range whose higher digits are r.prefix.
template <class Policy, class Add>
SPIN_HD void coop_histogram(const PoolView& pool, const PolicyParams& params, std::uint32_t now,
                            const RadixSelect& r, IndexRange slots, Add&& add) {
  const std::uint32_t shift = r.unresolved - r.width;
  const std::uint32_t mask = (1u << r.width) - 1;
  for (std::uint32_t s = slots.begin; s < slots.end; ++s) {
    if (pool.slot_last_use[s] >= now) continue;
    const std::uint64_t digits = Policy::order(pool, params, now, s) >> shift;
    if ((digits >> r.width) == r.prefix) add(static_cast<std::uint32_t>(digits & mask));
  }
}

// The first digit whose cumulative count reaches `remaining` (it exists for a policy that keeps
// its contract: the candidates with the prefix are at least `remaining`; else the last digit);
// *before = the count of the digits below it.
// histogram: [bins]
SPIN_HD std::uint32_t histogram_select(const std::uint32_t* histogram, std::uint32_t bins,
                                       std::uint32_t remaining, std::uint32_t* before) {
  std::uint32_t digit = 0;
  std::uint32_t below = 0;
  // Bounded by the last bin, as in find_threshold (a broken policy: kTooFewVictims).
  while (digit + 1 < bins && histogram[digit] < remaining - below) below += histogram[digit++];
  *before = below;
  return digit;
}

SPIN_HD void radix_take(RadixSelect& r, std::uint32_t digit, std::uint32_t before) {
  r.unresolved -= r.width;
  r.prefix = (r.prefix << r.width) | digit;
  r.remaining -= before;
}

// Phase 4 (slots): candidates below and at the threshold, and empty slots. PreviousStep counts
// every candidate as below.
struct TargetCounts {
  std::uint32_t below;
  std::uint32_t at;
  std::uint32_t empty;
};
static_assert(std::is_trivially_copyable_v<TargetCounts>);

template <class Policy>
SPIN_HD TargetCounts coop_count_targets(const PoolView& pool, const PolicyParams& params,
                                        std::uint32_t now, std::uint64_t threshold,
                                        IndexRange slots) {
  TargetCounts c{0, 0, 0};
  for (std::uint32_t s = slots.begin; s < slots.end; ++s) {
    const std::uint32_t last_use = pool.slot_last_use[s];
    if (last_use == kEmptyStamp) {
      ++c.empty;
    } else if (last_use < now) {
      if constexpr (Policy::kEvictsAllUnpinned) {
        ++c.below;
      } else {
        const std::uint64_t order = Policy::order(pool, params, now, s);
        c.below += static_cast<std::uint32_t>(order < threshold);
        c.at += static_cast<std::uint32_t>(order == threshold);
      }
    }
  }
  return c;
}

// Where a range's victims and targets start, and how many of the ties are its own, from the
// exclusive prefix sums of TargetCounts over the ranges before it (`before`) and its own counts.
struct TargetOffsets {
  std::uint32_t victim_at;
  std::uint32_t target_at;
  std::uint32_t ties;
};
static_assert(std::is_trivially_copyable_v<TargetOffsets>);

SPIN_HD TargetOffsets coop_target_offsets(const TargetCounts& before, const TargetCounts& mine,
                                          std::uint32_t ties) {
  const std::uint32_t ties_before = before.at < ties ? before.at : ties;
  const std::uint32_t ties_through = before.at + mine.at < ties ? before.at + mine.at : ties;
  const std::uint32_t victim_at = before.below + ties_before;
  return TargetOffsets{victim_at, before.empty + victim_at, ties_through - ties_before};
}

// The victims of the whole pool, from the sums over all ranges.
SPIN_HD std::uint32_t coop_victims(const TargetCounts& total, std::uint32_t ties) {
  return total.below + (total.at < ties ? total.at : ties);
}

// Phase 5 (slots): picks the range's victims and gives its targets to cached misses.
template <class Policy>
SPIN_HD void coop_collect(const PoolView& pool, const PolicyParams& params, std::uint32_t now,
                          std::uint64_t threshold, IndexRange slots, const TargetCounts& mine,
                          TargetOffsets at, std::uint32_t cached, const std::uint32_t* fetch_index,
                          std::int32_t* slot_of, std::int32_t* victim_slot) {
  std::uint32_t victims_left = mine.below + at.ties;
  for (std::uint32_t s = slots.begin; s < slots.end && (victims_left > 0 || at.target_at < cached);
       ++s) {
    const std::uint32_t last_use = pool.slot_last_use[s];
    bool target = last_use == kEmptyStamp;
    if (!target && last_use < now) {
      if constexpr (Policy::kEvictsAllUnpinned) {
        target = true;
      } else {
        const std::uint64_t order = Policy::order(pool, params, now, s);
        if (order < threshold) {
          target = true;
        } else if (order == threshold && at.ties > 0) {
          --at.ties;
          target = true;
        }
      }
      if (target) {
        victim_slot[at.victim_at++] = static_cast<std::int32_t>(s);
        --victims_left;
      }
    }
    if (target) {
      if (at.target_at < cached) slot_of[fetch_index[at.target_at]] = static_cast<std::int32_t>(s);
      ++at.target_at;
    }
  }
}

// Phase 6 (victims): unmaps victim_slot[victims.begin, victims.end) and empties their slots.
// free_count: the segment pool's free count (read-modify-written through Ops).
template <class Ops>
SPIN_HD void coop_evict(const PoolView& pool, const SegmentPoolView& segments,
                        std::uint32_t* free_count, IndexRange victims,
                        const std::int32_t* victim_slot, PageKey* victim_key) {
  for (std::uint32_t v = victims.begin; v < victims.end; ++v) {
    const std::int32_t s = victim_slot[v];
    const PageKey key = pool.slot_key[s];
    victim_key[v] = key;
    std::uint32_t* handle = directory_entry(pool.table, segments, key);
    const std::uint32_t h = *handle;
    *segment_entry(segments, h, key) = kAbsentSlot;
    // The count's address depends on h: this range read the handle before another range can
    // see the count reach 0 and release the segment.
    if (Ops::fetch_sub(segments.used + h, 1) == 1) {
      segments.free_stack[Ops::fetch_add(free_count, 1)] = h;
      *handle = kNoSegment;
    }
    pool.slot_key[s] = kNoPage;
    pool.slot_last_use[s] = kEmptyStamp;
  }
}

// Phase 7 (fetches): whether the f-th cached miss opens a segment (the first miss of its S-page
// range, which has no segment after phase 6).
SPIN_HD bool coop_opens_segment(const PoolView& pool, const SegmentPoolView& segments,
                                const PageKey* keys, const std::uint32_t* fetch_index,
                                std::uint32_t f) {
  const PageKey key = keys[fetch_index[f]];
  if (f > 0) {
    const PageKey previous = keys[fetch_index[f - 1]];
    if (key_stream(previous) == key_stream(key) &&
        (key_page(previous) >> segments.segment_pages_log2) ==
            (key_page(key) >> segments.segment_pages_log2)) {
      return false;
    }
  }
  return *directory_entry(pool.table, segments, key) == kNoSegment;
}

SPIN_HD std::uint32_t coop_count_new_segments(const PoolView& pool, const SegmentPoolView& segments,
                                              const PageKey* keys, const std::uint32_t* fetch_index,
                                              IndexRange fetches) {
  std::uint32_t count = 0;
  for (std::uint32_t f = fetches.begin; f < fetches.end; ++f) {
    count += static_cast<std::uint32_t>(coop_opens_segment(pool, segments, keys, fetch_index, f));
  }
  return count;
}

// Gives the range's opening fetches the free segments from the stack's top down, the first
// from position free_count − 1 − new_at (new_at: segments opened by the ranges before it).
// free_count: after phase 6.
SPIN_HD void coop_take_segments(const PoolView& pool, const SegmentPoolView& segments,
                                const PageKey* keys, const std::uint32_t* fetch_index,
                                IndexRange fetches, std::uint32_t new_at,
                                std::uint32_t free_count) {
  for (std::uint32_t f = fetches.begin; f < fetches.end; ++f) {
    if (!coop_opens_segment(pool, segments, keys, fetch_index, f)) continue;
    const std::uint32_t h = segments.free_stack[free_count - 1 - new_at++];
    *directory_entry(pool.table, segments, keys[fetch_index[f]]) = h;
    segments.used[h] = 0;  // its entries are all kAbsentSlot already (page_table.h)
  }
}

// Phase 8 (fetches): the cached misses take their slots and enter the page table.
template <class Policy, class Ops>
SPIN_HD void coop_insert(const PoolView& pool_in, const SegmentPoolView& segments,
                         const StepInput& in, const std::uint32_t* fetch_index,
                         const std::int32_t* slot_of, IndexRange fetches) {
  PoolView pool = pool_in;
  for (std::uint32_t f = fetches.begin; f < fetches.end; ++f) {
    const std::uint32_t i = fetch_index[f];
    const std::int32_t s = slot_of[i];
    const PageKey key = in.keys[i];
    pool.slot_key[s] = key;
    pool.slot_last_use[s] = in.now;
    Policy::on_access(pool, static_cast<std::uint32_t>(s), i,
                      in.next_use != nullptr ? in.next_use[i] : kNeverUsed, true, in.now);
    const std::uint32_t h = *directory_entry(pool.table, segments, key);
    *segment_entry(segments, h, key) = s;
    Ops::fetch_add(segments.used + h, 1);
  }
}

// The cooperative step on one thread, its ranges one after another: the phases' reference order
// (the CUDA kernel runs the same phases with a barrier between them). Two-level page tables.
// histogram: [kHistogramBins]; offsets, counts: [ranges] scratch
template <class Policy>
SPIN_HD StepStatus coop_pool_step_with(PoolView& pool, const PolicyParams& params,
                                       SegmentPoolView& segments, const StepInput& in,
                                       std::uint32_t* histogram, StepOutput& out,
                                       std::uint32_t ranges, std::uint32_t* offsets,
                                       TargetCounts* counts) {
  static_assert(assert_residency_policy<Policy>());
  if (!coop_segments_suffice(pool, segments, in.n)) return StepStatus::kSegmentPoolExhausted;
  std::uint32_t* const r_misses = offsets;  // per range, then its exclusive prefix sum
  std::uint32_t misses = 0;
  for (std::uint32_t r = 0; r < ranges; ++r) {
    r_misses[r] = coop_lookup<Policy>(pool, segments, in, coop_range(in.n, ranges, r), out.slot_of);
  }
  for (std::uint32_t r = 0; r < ranges; ++r) {
    const std::uint32_t m = r_misses[r];
    r_misses[r] = misses;
    misses += m;
  }
  const CoopCounts c = coop_counts<Policy>(pool, in.n, misses);
  for (std::uint32_t r = 0; r < ranges; ++r) {
    coop_list_misses(c, coop_range(in.n, ranges, r), r_misses[r], out.slot_of, out.fetch_index,
                     out.bypass_index);
  }

  // The threshold, and the per-range target counts at it.
  const auto count_at = [&](std::uint64_t threshold) {
    TargetCounts total{0, 0, 0};
    for (std::uint32_t r = 0; r < ranges; ++r) {
      counts[r] = coop_count_targets<Policy>(pool, params, in.now, threshold,
                                             coop_range(pool.extent, ranges, r));
      total.below += counts[r].below;
      total.at += counts[r].at;
      total.empty += counts[r].empty;
    }
    return total;
  };
  std::uint64_t threshold = 0;
  std::uint32_t ties = c.need;
  bool resolved = Policy::kEvictsAllUnpinned || c.need == 0;
  TargetCounts total{0, 0, 0};
  if (resolved || coop_try_oldest_first<Policy>()) {
    total = count_at(0);
    resolved = resolved || total.at >= c.need;
  }
  if constexpr (!Policy::kEvictsAllUnpinned) {
    if (!resolved) {
      OrderSpan span{~std::uint64_t{0}, 0};
      if constexpr (Policy::kSkipCommonDigits) {
        for (std::uint32_t r = 0; r < ranges; ++r) {
          span = combine(span, coop_order_span<Policy>(pool, params, in.now,
                                                       coop_range(pool.extent, ranges, r)));
        }
      }
      RadixSelect radix =
          radix_begin<Policy>(params, c.need, Policy::kSkipCommonDigits ? &span : nullptr);
      while (radix_next_pass(radix)) {
        for (std::uint32_t b = 0; b < (1u << radix.width); ++b) histogram[b] = 0;
        for (std::uint32_t r = 0; r < ranges; ++r) {
          coop_histogram<Policy>(pool, params, in.now, radix, coop_range(pool.extent, ranges, r),
                                 [&](std::uint32_t bin) { ++histogram[bin]; });
        }
        std::uint32_t before = 0;
        const std::uint32_t digit =
            histogram_select(histogram, 1u << radix.width, radix.remaining, &before);
        radix_take(radix, digit, before);
      }
      threshold = radix.prefix;
      ties = radix.remaining;
      total = count_at(threshold);
    }
  }

  const std::uint32_t victims = coop_victims(total, ties);
  if (victims < c.need) return StepStatus::kTooFewVictims;  // the fetches would lack slots

  TargetCounts before{0, 0, 0};
  for (std::uint32_t r = 0; r < ranges; ++r) {
    coop_collect<Policy>(pool, params, in.now, threshold, coop_range(pool.extent, ranges, r),
                         counts[r], coop_target_offsets(before, counts[r], ties), c.cached,
                         out.fetch_index, out.slot_of, out.victim_slot);
    before.below += counts[r].below;
    before.at += counts[r].at;
    before.empty += counts[r].empty;
  }

  std::uint32_t free_count = segments.free_count;
  for (std::uint32_t r = 0; r < ranges; ++r) {
    coop_evict<SequentialOps>(pool, segments, &free_count, coop_range(victims, ranges, r),
                              out.victim_slot, out.victim_key);
  }
  std::uint32_t opened = 0;
  for (std::uint32_t r = 0; r < ranges; ++r) {
    const IndexRange f = coop_range(c.cached, ranges, r);
    const std::uint32_t here = coop_count_new_segments(pool, segments, in.keys, out.fetch_index, f);
    r_misses[r] = opened;  // reused: the segments opened before range r
    opened += here;
  }
  for (std::uint32_t r = 0; r < ranges; ++r) {
    coop_take_segments(pool, segments, in.keys, out.fetch_index, coop_range(c.cached, ranges, r),
                       r_misses[r], free_count);
  }
  for (std::uint32_t r = 0; r < ranges; ++r) {
    coop_insert<Policy, SequentialOps>(pool, segments, in, out.fetch_index, out.slot_of,
                                       coop_range(c.cached, ranges, r));
  }
  pool.resident = pool.resident - victims + c.cached;
  segments.free_count = free_count - opened;
  out.hits = c.hits;
  out.fetches = c.cached;
  out.bypassed = c.bypassed;
  out.victims = victims;
  return StepStatus::kOk;
}

// The cooperative step with the policy named by params.kind (on one thread; see above).
SPIN_HD StepStatus coop_pool_step(PoolView& pool, const PolicyParams& params,
                                  SegmentPoolView& segments, const StepInput& in,
                                  std::uint32_t* histogram, StepOutput& out, std::uint32_t ranges,
                                  std::uint32_t* offsets, TargetCounts* counts) {
  switch (params.kind) {
    case PolicyKind::kBucketedLru:
      return coop_pool_step_with<BucketedLru>(pool, params, segments, in, histogram, out, ranges,
                                              offsets, counts);
    case PolicyKind::kExactLru:
      return coop_pool_step_with<ExactLru>(pool, params, segments, in, histogram, out, ranges,
                                           offsets, counts);
    case PolicyKind::kFifo:
      return coop_pool_step_with<Fifo>(pool, params, segments, in, histogram, out, ranges, offsets,
                                       counts);
    case PolicyKind::kPreviousStep:
      return coop_pool_step_with<PreviousStep>(pool, params, segments, in, histogram, out, ranges,
                                               offsets, counts);
    case PolicyKind::kBelady:
      return coop_pool_step_with<Belady>(pool, params, segments, in, histogram, out, ranges,
                                         offsets, counts);
  }
  return StepStatus::kUnknownPolicy;
}

}  // namespace spin::policy
