// The per-step residency rule of one pool (DESIGN.md §4.2) and the replacement policies that
// plug into it. Device-capable (STYLE.md, "one policy, two compilers"): this is the single
// implementation; the simulator calls it on the CPU and a CUDA kernel calls it unchanged, so both
// make identical decisions on the same trace.
//
// The rule, per pool, at step `now` (the request's step counter), for the selection `keys`:
//  1. Lookup: a selected page that is resident is a hit; hits get last_use = now, which pins them
//     for this step (a slot is pinned iff last_use == now).
//  2. Bypass: at most capacity − hits misses can be cached; the excess misses, the highest keys,
//     are bypassed: fetched into scratch for this step only, not cached, counted as misses.
//  3. Victims: if resident + cached misses > capacity, m = the difference (at most the unpinned
//     resident pages) slots are freed among the unpinned resident slots by the policy's order:
//     every slot whose order is below a threshold t*, then the lowest-indexed slots whose order
//     equals t*, until m are freed. t* comes from histograms of order digits (one pass of B bins
//     for bucketed LRU): no sort, O(extent) per pass, deterministic. PreviousStep frees every
//     unpinned slot instead.
//  4. Fetch: cached misses, in ascending key order, go to the free and freed slots in ascending
//     slot order; the fetch list is (key → slot) in that order.
//
// A policy is a struct of static SPIN_HD members (compile-time variation, picked by the switch in
// pool_step):
//   kUsesAux            whether slot_aux carries policy state
//   kEvictsAllUnpinned  frees every unpinned slot instead of m by order (PreviousStep)
//   kTryOldestFirst     victims usually all have order 0: try t* = 0 first (an exact shortcut)
//   kSkipCommonDigits   orders of many bits that mostly agree (the high bits of a step, of an
//                       index): a first pass finds the bits where they differ, and the radix
//                       passes over 8-bit digits where none differ are skipped (exact)
//   kOrderOfLastUse     order depends on (params, now, last_use) alone, through
//                       order_of_last_use(params, now, last_use): a single-pass histogram counts
//                       every slot and corrects for the pinned and empty ones, and the pool may
//                       keep age counts (PoolView::age_count) that replace the histogram pass
//   order(pool, params, now, slot)        smaller is evicted first; ties go to the lowest slot
//   order_bits(params)                    significant bits of order()
//   min_victim_age(params, now, t)        a lower bound on now − last_use of any slot with
//                                         order ≤ t (0 if none), to skip young slots in blocks
//   on_access(pool, slot, index, next_use, inserted, now)  after last_use = now; may change
//                                         only its own slot's aux (never a last use: those pin)
//
//   BucketedLru   order = B − 1 − min((now − last_use) >> shift, B − 1)      (oldest bucket first)
//   ExactLru      order = (last_use, index in that step's sorted selection)  (= (last_use, key))
//   Fifo          order = the step the page was inserted                     (ties: lowest slot)
//   PreviousStep  frees every unpinned slot: the pool keeps exactly the previous step's pages
//   Belady        order = farthest next use first (next_use given per access; host/simulator)
//
// Complexity per step: O(n) lookups and updates (n = selected pages) + one O(extent) pass to
// collect victims and free slots (it stops once all are found and skips blocks of slots that
// cannot be targets: younger than any victim can be, and, once the victims are found, not empty;
// with block floors, PoolView::block_floor, it reads one floor per 8 slots and the last uses of
// only the blocks that may hold a target, and decides only their slots that may be targets,
// O(extent / 8 + 8 · blocks read))
// + up to ceil(order_bits / 8) O(extent) histogram passes when t* is needed (1 for bucketed LRU
// with B ≤ 256, and only when its oldest bucket holds fewer than m slots; 4 for Belady; FIFO's 4
// and exact LRU's 8 less the digits where no candidate differs, after one pass that finds them).
// Bucketed LRU with age counts: no histogram pass; O(W) to find t* (W = (B − 1) << shift) and
// O(min(W, steps since the last step)) to age the counts, plus O(1) per hit, fetch and victim.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "common/hd.h"
#include "common/policy/page_key.h"
#include "common/policy/page_table.h"

namespace spin::policy {

enum class PolicyKind : std::uint32_t {
  kBucketedLru = 0,
  kExactLru = 1,
  kFifo = 2,
  kPreviousStep = 3,
  kBelady = 4,
};

struct PolicyParams {
  PolicyKind kind;
  std::uint32_t buckets;       // B ≥ 1 (bucketed LRU)
  std::uint32_t bucket_shift;  // bucket width = 2^bucket_shift steps, < 32 (bucketed LRU)
};
static_assert(std::is_trivially_copyable_v<PolicyParams>);

inline constexpr std::uint32_t kEmptyStamp = 0xFFFFFFFFu;  // last_use of an empty slot
inline constexpr std::uint32_t kNeverUsed = 0xFFFFFFFFu;  // next use of a page never selected again
inline constexpr std::int32_t kBypassSlot = -2;           // slot_of of a bypassed miss
inline constexpr std::uint32_t kHistogramBins = 256;      // histogram scratch of a step
inline constexpr std::uint32_t kFloorBlockSlots = 8;      // slots per block floor (PoolView)

// One pool's cache state. Slots [0, extent) exist; at most `capacity` hold pages (a capacity
// lowered below the pinned pages is honoured as soon as they unpin). Empty slots have
// slot_key = kNoPage and slot_last_use = kEmptyStamp.
struct PoolView {
  std::uint32_t extent;
  std::uint32_t capacity;
  std::uint32_t resident;
  PageKey* slot_key;             // [extent]
  std::uint32_t* slot_last_use;  // [extent] step of the last access
  std::uint32_t* slot_aux;       // [extent] policy state (policy_uses_aux), else unused
  DirectoryView table;           // the pool's streams in the two-level page table
  // Bucketed LRU's age counts, kept up to date by every step (optional: null where not kept,
  // e.g. by the executor's kernel; decisions are the same either way). With W = age_window =
  // (B − 1) << shift (> 0) and R = age_ring_mask + 1 (a power of two >= W), for the step `now`
  // the counts were last aged to:
  //   age_count[t & age_ring_mask]  resident slots with last_use == t, for now − W < t <= now
  //                                 (other entries 0)
  //   age_count[R]                  resident slots with now − last_use >= W (the oldest bucket)
  //   age_count[R + 1]              that `now` (0 when new, with every count 0)
  // so a step finds its eviction threshold from O(W) counts instead of a pass over the slots.
  std::uint32_t* age_count;  // [age_ring_mask + 3] or null
  std::uint32_t age_window;
  std::uint32_t age_ring_mask;
  // Block floors, kept by pool_step (optional: null where not kept, e.g. by the executor's
  // kernel; decisions are the same either way; residency_coop.h's step does not keep them). For
  // each full block b < extent / kFloorBlockSlots of slots [b · kFloorBlockSlots, (b + 1) ·
  // kFloorBlockSlots):
  //   block_floor[b] <= min over the block's slots of last_use + 1 (mod 2^32)
  // that is 0 where the block may hold an empty slot (kEmptyStamp + 1 wraps to 0), else at most
  // its oldest slot's last_use + 1. Hits and fetches only raise last uses, so they leave the floor
  // a bound (a stale-low one, which only costs a visit). The victim pass skips blocks whose floor
  // rules out a target without reading their slots, sets the exact floor of each block it reads,
  // and zeroes it where it frees a slot that stays empty; the step then sets the exact floor of
  // each block it fetched into (its victims' old last uses would leave it stale). New full blocks
  // (the extent grows) start at 0; whoever else empties a slot must zero its block's floor.
  std::uint32_t* block_floor;  // [extent / kFloorBlockSlots] or null
};
static_assert(std::is_trivially_copyable_v<PoolView>);

struct StepInput {
  const PageKey* keys;            // [n] ascending, distinct; streams < table.streams
  const std::uint32_t* next_use;  // [n] Belady: the `now` keys[i] is next selected, or kNeverUsed
  std::uint32_t n;
  std::uint32_t now;  // greater than the pool's previous `now`, below kEmptyStamp
};
static_assert(std::is_trivially_copyable_v<StepInput>);

// Decisions of one step, in caller-provided arrays. A hit is an i with slot_of[i] >= 0 that is
// not in fetch_index.
struct StepOutput {
  std::int32_t* slot_of;        // [n] slot of keys[i] after the step, or kBypassSlot
  std::uint32_t* fetch_index;   // [n] indices i of cached misses, ascending (the fetch order)
  std::uint32_t* bypass_index;  // [n] indices i of bypassed misses, ascending
  std::int32_t* victim_slot;    // [extent] freed slots, ascending
  PageKey* victim_key;          // [extent] the page each freed slot held
  std::uint32_t hits;
  std::uint32_t fetches;
  std::uint32_t bypassed;
  std::uint32_t victims;
};
static_assert(std::is_trivially_copyable_v<StepOutput>);

enum class StepStatus : std::uint32_t {
  kOk = 0,
  kSegmentPoolExhausted = 1,  // fewer free segments than most_new_segments; nothing was changed
  kUnknownPolicy = 2,
  // The policy freed fewer slots than the step needs: its order, order_bits, min_victim_age or
  // on_access breaks the interface's contract (a new policy's bug). The pool is left
  // part-updated.
  kTooFewVictims = 3,
};

// For messages: what the status says, e.g. "segment pool exhausted".
constexpr const char* step_status_name(StepStatus status) {
  switch (status) {
    case StepStatus::kOk:
      return "ok";
    case StepStatus::kSegmentPoolExhausted:
      return "segment pool exhausted";
    case StepStatus::kUnknownPolicy:
      return "unknown policy";
    case StepStatus::kTooFewVictims:
      return "too few victims (the policy breaks the contract in residency.h)";
  }
  return "unknown status";
}

SPIN_HD constexpr std::uint32_t bit_width(std::uint32_t v) {
  std::uint32_t bits = 0;
  for (; v != 0; v >>= 1) ++bits;
  return bits;
}

struct BucketedLru {
  static constexpr bool kUsesAux = false;
  static constexpr bool kEvictsAllUnpinned = false;
  static constexpr bool kTryOldestFirst = true;     // most victims sit in the oldest bucket
  static constexpr bool kSkipCommonDigits = false;  // one pass anyway
  SPIN_HD static std::uint32_t order_bits(const PolicyParams& p) {
    return bit_width(p.buckets - 1);
  }
  static constexpr bool kOrderOfLastUse = true;
  SPIN_HD static std::uint64_t order_of_last_use(const PolicyParams& p, std::uint32_t now,
                                                 std::uint32_t last_use) {
    const std::uint32_t age = (now - last_use) >> p.bucket_shift;
    const std::uint32_t oldest = p.buckets - 1;
    return oldest - (age < oldest ? age : oldest);
  }
  SPIN_HD static std::uint64_t order(const PoolView& pool, const PolicyParams& p, std::uint32_t now,
                                     std::uint32_t slot) {
    return order_of_last_use(p, now, pool.slot_last_use[slot]);
  }
  // order <= t  ⇔  bucket >= B − 1 − t  ⇒  age >= (B − 1 − t) << shift (saturated: no slot
  // is that old).
  SPIN_HD static std::uint32_t min_victim_age(const PolicyParams& p, std::uint32_t,
                                              std::uint64_t threshold) {
    const std::uint64_t age = static_cast<std::uint64_t>(p.buckets - 1 - threshold)
                              << p.bucket_shift;
    return age > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(age);
  }
  SPIN_HD static void on_access(PoolView&, std::uint32_t, std::uint32_t, std::uint32_t, bool,
                                std::uint32_t) {}
};

struct ExactLru {
  static constexpr bool kUsesAux = true;  // aux = index of the last access in its step's selection
  static constexpr bool kEvictsAllUnpinned = false;
  static constexpr bool kTryOldestFirst = false;
  static constexpr bool kSkipCommonDigits = true;  // recent steps, small indices: ~3 of 8 digits
  static constexpr bool kOrderOfLastUse = false;
  SPIN_HD static std::uint32_t order_bits(const PolicyParams&) { return 64; }
  SPIN_HD static std::uint64_t order(const PoolView& pool, const PolicyParams&, std::uint32_t,
                                     std::uint32_t slot) {
    return (static_cast<std::uint64_t>(pool.slot_last_use[slot]) << 32) | pool.slot_aux[slot];
  }
  // order <= t  ⇒  last_use <= t >> 32.
  SPIN_HD static std::uint32_t min_victim_age(const PolicyParams&, std::uint32_t now,
                                              std::uint64_t threshold) {
    const std::uint64_t newest = threshold >> 32;
    return newest >= now ? 0 : now - static_cast<std::uint32_t>(newest);
  }
  SPIN_HD static void on_access(PoolView& pool, std::uint32_t slot, std::uint32_t index,
                                std::uint32_t, bool, std::uint32_t) {
    pool.slot_aux[slot] = index;
  }
};

struct Fifo {
  static constexpr bool kUsesAux = true;  // aux = the step the page was inserted
  static constexpr bool kEvictsAllUnpinned = false;
  static constexpr bool kTryOldestFirst = false;
  static constexpr bool kSkipCommonDigits = true;  // recent steps: ~2 of 4 digits
  static constexpr bool kOrderOfLastUse = false;
  SPIN_HD static std::uint32_t order_bits(const PolicyParams&) { return 32; }
  SPIN_HD static std::uint64_t order(const PoolView& pool, const PolicyParams&, std::uint32_t,
                                     std::uint32_t slot) {
    return pool.slot_aux[slot];
  }
  // The insertion step does not bound the last use: no block can be skipped.
  SPIN_HD static std::uint32_t min_victim_age(const PolicyParams&, std::uint32_t, std::uint64_t) {
    return 0;
  }
  SPIN_HD static void on_access(PoolView& pool, std::uint32_t slot, std::uint32_t, std::uint32_t,
                                bool inserted, std::uint32_t now) {
    if (inserted) pool.slot_aux[slot] = now;
  }
};

struct PreviousStep {
  static constexpr bool kUsesAux = false;
  static constexpr bool kEvictsAllUnpinned = true;
  static constexpr bool kOrderOfLastUse = false;
  SPIN_HD static void on_access(PoolView&, std::uint32_t, std::uint32_t, std::uint32_t, bool,
                                std::uint32_t) {}
};

struct Belady {
  static constexpr bool kUsesAux = true;  // aux = the step of the page's next use
  static constexpr bool kEvictsAllUnpinned = false;
  static constexpr bool kTryOldestFirst = false;
  static constexpr bool kSkipCommonDigits = false;  // never-used pages (order 0) vs ~2^32
  static constexpr bool kOrderOfLastUse = false;
  SPIN_HD static std::uint32_t order_bits(const PolicyParams&) { return 32; }
  SPIN_HD static std::uint64_t order(const PoolView& pool, const PolicyParams&, std::uint32_t,
                                     std::uint32_t slot) {
    return kNeverUsed - pool.slot_aux[slot];
  }
  SPIN_HD static std::uint32_t min_victim_age(const PolicyParams&, std::uint32_t, std::uint64_t) {
    return 0;
  }
  SPIN_HD static void on_access(PoolView& pool, std::uint32_t slot, std::uint32_t,
                                std::uint32_t next_use, bool, std::uint32_t) {
    pool.slot_aux[slot] = next_use;
  }
};

// The interface above as concepts, asserted where the rule takes a policy (pool_step_with,
// coop_pool_step_with, through assert_residency_policy), so that a new policy's missing or
// mistyped member is named there: every policy, one that evicts by order, and one whose order
// is a function of the last use.
template <class P>
concept PolicyTraits = requires(PoolView& pool, std::uint32_t u) {
  { P::kUsesAux } -> std::convertible_to<bool>;
  { P::kEvictsAllUnpinned } -> std::convertible_to<bool>;
  { P::kOrderOfLastUse } -> std::convertible_to<bool>;
  P::on_access(pool, u, u, u, true, u);
};
template <class P>
concept OrderedPolicy = requires(const PoolView& pool, const PolicyParams& params, std::uint32_t u,
                                 std::uint64_t t) {
  { P::kTryOldestFirst } -> std::convertible_to<bool>;
  { P::kSkipCommonDigits } -> std::convertible_to<bool>;
  { P::order(pool, params, u, u) } -> std::same_as<std::uint64_t>;
  { P::order_bits(params) } -> std::same_as<std::uint32_t>;
  { P::min_victim_age(params, u, t) } -> std::same_as<std::uint32_t>;
};
template <class P>
concept LastUseOrderedPolicy = requires(const PolicyParams& params, std::uint32_t u) {
  { P::order_of_last_use(params, u, u) } -> std::same_as<std::uint64_t>;
};
template <class P>
concept ResidencyPolicy = PolicyTraits<P> &&
    (P::kEvictsAllUnpinned || OrderedPolicy<P>)&&(!P::kOrderOfLastUse || LastUseOrderedPolicy<P>);

// One assertion per concept, so that the compiler's note names the missing member.
template <class Policy>
constexpr bool assert_residency_policy() {
  static_assert(PolicyTraits<Policy>,
                "a policy lacks kUsesAux, kEvictsAllUnpinned, kOrderOfLastUse or on_access "
                "(the interface at the top of residency.h)");
  if constexpr (PolicyTraits<Policy>) {
    if constexpr (!Policy::kEvictsAllUnpinned) {
      static_assert(OrderedPolicy<Policy>,
                    "a policy that evicts by order lacks kTryOldestFirst, kSkipCommonDigits, "
                    "order, order_bits or min_victim_age, or gives one another type (residency.h)");
    }
    if constexpr (Policy::kOrderOfLastUse) {
      static_assert(LastUseOrderedPolicy<Policy>,
                    "a policy with kOrderOfLastUse lacks order_of_last_use (residency.h)");
    }
  }
  return true;
}

SPIN_HD constexpr bool policy_uses_aux(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kBucketedLru:
      return BucketedLru::kUsesAux;
    case PolicyKind::kExactLru:
      return ExactLru::kUsesAux;
    case PolicyKind::kFifo:
      return Fifo::kUsesAux;
    case PolicyKind::kPreviousStep:
      return PreviousStep::kUsesAux;
    case PolicyKind::kBelady:
      return Belady::kUsesAux;
  }
  return false;
}

// Age counts (PoolView::age_count, kept for policies with kOrderOfLastUse). The slot entry of a
// last use `stamp` at step `now`: its ring entry while now − stamp < W, else the oldest bucket's.
SPIN_HD std::uint32_t age_count_entry(const PoolView& pool, std::uint32_t now,
                                      std::uint32_t stamp) {
  return now - stamp < pool.age_window ? (stamp & pool.age_ring_mask) : pool.age_ring_mask + 1;
}

// Ages the counts to `now` (>= the step they were aged to): the stamps that leave the window,
// (previous − W, now − W], move to the oldest bucket. O(min(now − previous, W)).
SPIN_HD void age_counts_advance(const PoolView& pool, std::uint32_t now) {
  std::uint32_t* const count = pool.age_count;
  const std::uint32_t oldest = pool.age_ring_mask + 1;
  const std::uint32_t previous = count[oldest + 1];
  const std::uint32_t elapsed = now - previous;
  const std::uint32_t leaving = elapsed < pool.age_window ? elapsed : pool.age_window;
  const std::uint32_t first = previous - pool.age_window + 1;  // may wrap: such stamps count 0
  for (std::uint32_t j = 0; j < leaving; ++j) {
    const std::uint32_t e = (first + j) & pool.age_ring_mask;
    count[oldest] += count[e];
    count[e] = 0;
  }
  count[oldest + 1] = now;
}

// The eviction threshold from the age counts (the same t* and ties as find_threshold's
// histogram): orders ascend from the oldest bucket (order 0: now − last_use >= W) to bucket 0
// (order B − 1: ages below 2^shift, less the pinned slots of age 0).
SPIN_HD void age_counts_threshold(const PoolView& pool, const PolicyParams& params,
                                  std::uint32_t now, std::uint32_t need, std::uint64_t* threshold,
                                  std::uint32_t* ties) {
  const std::uint32_t* const count = pool.age_count;
  std::uint32_t remaining = need;
  std::uint32_t order = 0;
  std::uint32_t found = count[pool.age_ring_mask + 1];
  // Bucket b = B − 1 − order holds the ages [b << shift, (b + 1) << shift).
  for (std::uint32_t end_age = pool.age_window; found < remaining && end_age > 0;) {
    remaining -= found;
    ++order;
    const std::uint32_t begin_age = end_age - (1u << params.bucket_shift);
    found = 0;
    for (std::uint32_t age = begin_age > 0 ? begin_age : 1; age < end_age; ++age) {
      found += count[(now - age) & pool.age_ring_mask];
    }
    end_age = begin_age;
  }
  *threshold = order;
  *ties = remaining;
}

// find_threshold's single-pass histogram for a policy whose order is one digit and a function of
// last_use alone (kOrderOfLastUse: bucketed LRU with B <= 256): histogram[d], d < bins, becomes
// the number of unpinned resident slots of order d. Every slot is counted, and then the pinned
// and the empty ones are taken out again: their orders are those of last_use = now and of
// kEmptyStamp, their counts the step's hits (pinned) and extent − resident. Exact, and cheaper
// than a mask per slot. With bins <= 64, 4 copies of the bins (one per slot mod 4, summed at the
// end) so that neighbouring slots of one order do not wait on each other's increments.
// histogram: [kHistogramBins] scratch; bins: 1 << order_bits, <= kHistogramBins
template <class Policy>
SPIN_HD void count_last_use_orders(const PoolView& pool, const PolicyParams& params_in,
                                   std::uint32_t now, std::uint32_t pinned, std::uint32_t bins,
                                   std::uint32_t* histogram) {
  // Local copies: the histogram stores cannot alias them, so they stay in registers.
  const PolicyParams params = params_in;
  const std::uint32_t* const last_use = pool.slot_last_use;
  const std::uint32_t extent = pool.extent;
  const auto order = [&](std::uint32_t stamp) {
    return static_cast<std::uint32_t>(Policy::order_of_last_use(params, now, stamp));
  };
  std::uint32_t s = 0;
  if (4 * bins <= kHistogramBins) {
    std::uint32_t* const h1 = histogram + bins;
    std::uint32_t* const h2 = histogram + 2 * bins;
    std::uint32_t* const h3 = histogram + 3 * bins;
    for (std::uint32_t b = 0; b < 4 * bins; ++b) histogram[b] = 0;
    for (; s + 4 <= extent; s += 4) {
      ++histogram[order(last_use[s])];
      ++h1[order(last_use[s + 1])];
      ++h2[order(last_use[s + 2])];
      ++h3[order(last_use[s + 3])];
    }
    for (std::uint32_t b = 0; b < bins; ++b) histogram[b] += h1[b] + h2[b] + h3[b];
  } else {
    for (std::uint32_t b = 0; b < bins; ++b) histogram[b] = 0;
  }
  for (; s < extent; ++s) ++histogram[order(last_use[s])];
  histogram[order(now)] -= pinned;
  histogram[order(kEmptyStamp)] -= extent - pool.resident;
}

// The eviction threshold: t* and how many slots of order t* to free (the lowest-indexed ones),
// so that count(order < t*) + ties == need. MSD radix select over unpinned resident slots.
// histogram: [kHistogramBins] scratch
// pinned: the slots with last_use == now (this step's hits).
template <class Policy>
SPIN_HD void find_threshold(const PoolView& pool_in, const PolicyParams& params_in,
                            std::uint32_t now, std::uint32_t need, std::uint32_t pinned,
                            std::uint32_t* histogram, std::uint64_t* threshold,
                            std::uint32_t* ties) {
  // Local copies: the histogram stores cannot alias them, so their fields stay in registers.
  const PoolView pool = pool_in;
  const PolicyParams params = params_in;
  std::uint32_t unresolved = Policy::order_bits(params);  // low order bits not yet fixed
  std::uint64_t prefix = 0;
  std::uint32_t remaining = need;  // victims still to find at or above `prefix`
  const bool single_pass = unresolved <= 8;
  // The bits where the candidates' orders differ (any candidate's order as the reference): a
  // digit without such bits is the reference's digit for every candidate, so its pass would
  // find all of them in that one bin and leave `remaining` as it is.
  std::uint64_t reference = 0;
  std::uint64_t differ = ~std::uint64_t{0};
  if constexpr (Policy::kSkipCommonDigits) {
    std::uint32_t first = 0;
    while (first < pool.extent && pool.slot_last_use[first] >= now) ++first;
    if (first < pool.extent) {
      reference = Policy::order(pool, params, now, first);
      differ = 0;
      for (std::uint32_t s = first + 1; s < pool.extent; ++s) {
        const std::uint64_t counts = pool.slot_last_use[s] < now ? ~std::uint64_t{0} : 0;
        differ |= (Policy::order(pool, params, now, s) ^ reference) & counts;
      }
    }
  }
  while (unresolved > 0) {
    const std::uint32_t width = unresolved % 8 == 0 ? 8 : unresolved % 8;
    unresolved -= width;
    const std::uint32_t bins = 1u << width;
    if (((differ >> unresolved) & (bins - 1)) == 0) {
      prefix = (prefix << width) | ((reference >> unresolved) & (bins - 1));
      continue;
    }
    bool counted = false;
    if constexpr (Policy::kOrderOfLastUse) {
      if (single_pass) {
        count_last_use_orders<Policy>(pool, params, now, pinned, bins, histogram);
        counted = true;
      }
    }
    if (!counted) {
      // Up to 4 interleaved copies of the histogram (as many as the scratch holds), so that
      // neighbouring slots of one digit do not wait on each other's increments; branch-free:
      // slots that do not count (empty: kEmptyStamp, pinned: == now, another prefix) add 0.
      const std::uint32_t copies_log2 = width <= 6 ? 2 : width == 7 ? 1 : 0;
      const std::uint32_t copy_mask = (1u << copies_log2) - 1;
      for (std::uint32_t b = 0; b < (bins << copies_log2); ++b) histogram[b] = 0;
      if (single_pass) {
        // order_bits <= 8 (e.g. bucketed LRU with B <= 256): every order is a digit.
        for (std::uint32_t s = 0; s < pool.extent; ++s) {
          const auto digit = static_cast<std::uint32_t>(Policy::order(pool, params, now, s));
          histogram[(digit << copies_log2) | (s & copy_mask)] +=
              static_cast<std::uint32_t>(pool.slot_last_use[s] < now);
        }
      } else {
        for (std::uint32_t s = 0; s < pool.extent; ++s) {
          const std::uint64_t digits = Policy::order(pool, params, now, s) >> unresolved;
          const std::uint32_t counts = static_cast<std::uint32_t>(pool.slot_last_use[s] < now) &
                                       static_cast<std::uint32_t>((digits >> width) == prefix);
          histogram[(static_cast<std::uint32_t>(digits & (bins - 1)) << copies_log2) |
                    (s & copy_mask)] += counts;
        }
      }
      for (std::uint32_t b = 0; b < bins; ++b) {
        std::uint32_t sum = 0;
        for (std::uint32_t c = 0; c <= copy_mask; ++c) sum += histogram[(b << copies_log2) | c];
        histogram[b] = sum;  // b <= (b << copies_log2): read before any later b overwrites it
      }
    }
    // Bounded by the last bin: a policy that breaks its contract (too few candidates, e.g. an
    // on_access that pins other slots) would scan past the histogram; its step then ends with
    // kTooFewVictims.
    std::uint32_t digit = 0;
    while (digit + 1 < bins && histogram[digit] < remaining) remaining -= histogram[digit++];
    prefix = (prefix << width) | digit;
  }
  *threshold = prefix;
  *ties = remaining;
}

// Whether any of `count` slots is empty or at least min_age steps old. One unsigned compare
// per slot: a resident slot has last_use <= now, so now − last_use is its age (<= now), and an
// empty slot's now − kEmptyStamp wraps to now + 1, above every age.
// last_use: [count]
template <std::uint32_t count>
SPIN_HD bool may_hold_target(const std::uint32_t* last_use, std::uint32_t now,
                             std::uint32_t min_age) {
  const std::uint32_t bound = min_age < now + 1 ? min_age : now + 1;
  std::uint32_t maybe = 0;
  for (std::uint32_t j = 0; j < count; ++j) {
    maybe |= static_cast<std::uint32_t>(now - last_use[j] >= bound);
  }
  return maybe != 0;
}

// The block floors' form of may_hold_target's test: a slot may be a target (empty, or at least
// min_age steps old) iff last_use + 1 (mod 2^32) <= the returned limit.
SPIN_HD std::uint32_t target_floor_limit(std::uint32_t now, std::uint32_t min_age) {
  const std::uint32_t bound = min_age < now + 1 ? min_age : now + 1;
  return now + 1 - bound;
}

// The block floors' scan of collect_victims, kFloorChunkBlocks floors at a time: `next` returns
// the first block at or after b whose floor is <= limit (a target may be there), or `blocks`.
// A chunk of floors is read once into a mask of the blocks at or below the limit of that read,
// branch-free, and its blocks come from the mask in order. Exact for a pass whose limits never
// rise (min_age only rises) and that changes only floors of blocks before the b it asks for
// (it sets the floor of each block it reads): a clear bit stays right, a set bit is checked
// against the current limit.
inline constexpr std::uint32_t kFloorChunkBlocks = 16;

// Bit k set iff floors[k] <= limit, for k < count <= 32; branch-free. floors: [count]
SPIN_HD std::uint32_t floor_mask(const std::uint32_t* floors, std::size_t count,
                                 std::uint32_t limit) {
  std::uint32_t mask = 0;
  for (std::size_t k = 0; k < count; ++k) {
    mask |= static_cast<std::uint32_t>(floors[k] <= limit) << k;
  }
  return mask;
}

struct FloorScan {
  const std::uint32_t* floors;
  std::uint32_t blocks;
  std::uint32_t chunk_begin = 0;
  std::uint32_t chunk_end = 0;  // no chunk read yet
  std::uint32_t chunk = 0;      // bit k: floors[chunk_begin + k] <= the limit when read

  SPIN_HD std::uint32_t next(std::uint32_t b, std::uint32_t limit) {
    for (;;) {
      if (b >= chunk_end) {
        if (b >= blocks) return blocks;
        chunk_begin = b;
        if (blocks - b >= kFloorChunkBlocks) {
          chunk_end = b + kFloorChunkBlocks;
          chunk = floor_mask(floors + b, kFloorChunkBlocks, limit);
        } else {
          chunk_end = blocks;
          chunk = floor_mask(floors + b, blocks - b, limit);
        }
      }
      std::uint32_t left = chunk >> (b - chunk_begin);  // the chunk's blocks from b on
      while (left != 0) {
        const std::uint32_t k = lowest_bit(left);
        if (floors[b + k] <= limit) return b + k;
        left &= left - 1;
      }
      b = chunk_end;
    }
  }
};

// One read of a block's last uses: returns its exact floor (PoolView::block_floor), the least
// last_use + 1 (mod 2^32), and sets bit j of *maybe for each slot j whose last_use + 1 <= limit
// (target_floor_limit: the slots that may be targets). last_use: [kFloorBlockSlots]
SPIN_HD std::uint32_t read_block(const std::uint32_t* last_use, std::uint32_t limit,
                                 std::uint32_t* maybe) {
  std::uint32_t floor = kEmptyStamp;
  std::uint32_t bits = 0;
  for (std::uint32_t j = 0; j < kFloorBlockSlots; ++j) {
    const std::uint32_t key = last_use[j] + 1;
    floor = key < floor ? key : floor;
    bits |= static_cast<std::uint32_t>(key <= limit) << j;
  }
  *maybe = bits;
  return floor;
}

// The exact floor of one block. last_use: [kFloorBlockSlots]
SPIN_HD std::uint32_t exact_block_floor(const std::uint32_t* last_use) {
  std::uint32_t unused = 0;
  return read_block(last_use, 0, &unused);
}

// One ascending pass over the slots: picks `need` unpinned slots to free (every slot with order
// below `threshold`, then the lowest-indexed `ties` slots of order `threshold`; PreviousStep: every
// unpinned slot) and gives the misses in fetch order the lowest `cached` free-or-freed slots.
// Returns the victims found (fewer than `need` only if the threshold undercounts them). Writes
// out's arrays and lowers or sets exact block floors (valid whatever the step then does), so a
// pass may be redone.
template <class Policy>
SPIN_HD std::uint32_t collect_victims(const PoolView& pool_in, const PolicyParams& params_in,
                                      std::uint32_t now, std::uint32_t need,
                                      std::uint64_t threshold, std::uint32_t ties,
                                      std::uint32_t cached, const StepOutput& out_in) {
  const PoolView pool = pool_in;  // local copies: the stores below cannot alias them
  const PolicyParams params = params_in;
  const StepOutput out = out_in;
  // A slot younger than min_age cannot be a victim: blocks of such slots (and no empty slot)
  // are skipped. Once every victim is found only empty slots can be targets: min_age becomes
  // kEmptyStamp, which no resident slot reaches. Exact: only non-targets are skipped. With block
  // floors (the engine) a block of 8 is judged by its floor, 4 bytes instead of 32 of last uses,
  // so a step reads the floors and the few blocks that may hold a victim or an empty slot (or
  // whose floor went stale by a hit), not the whole extent. Without them (the kernel) the slots
  // are tested 32 and then 8 at a time, by a loop the compiler vectorises.
  std::uint32_t min_age = 0;
  if (need == 0) {
    min_age = kEmptyStamp;
  } else if constexpr (!Policy::kEvictsAllUnpinned) {
    min_age = Policy::min_victim_age(params, now, threshold);
  }
  std::uint32_t* const floors = pool.block_floor;
  const std::uint32_t floor_blocks = floors != nullptr ? pool.extent / kFloorBlockSlots : 0;
  const std::uint32_t floor_end = floor_blocks * kFloorBlockSlots;  // slots below have floors
  FloorScan scan{floors, floor_blocks};
  std::uint32_t victims = 0;
  std::uint32_t targets = 0;
  // Decides one slot: a target if empty or picked as a victim; targets take the fetches in order.
  const auto visit = [&](std::uint32_t s) {
    const std::uint32_t last_use = pool.slot_last_use[s];
    bool target = last_use == kEmptyStamp;
    if (!target && victims < need && last_use < now) {
      if constexpr (Policy::kEvictsAllUnpinned) {
        target = true;
      } else {
        const std::uint64_t order = Policy::order(pool, params, now, s);
        if (order < threshold) {
          target = true;
        } else if (order == threshold && ties > 0) {
          target = true;
          if (--ties == 0 && min_age > 0) {
            // The remaining victims have order < threshold: they are older still.
            min_age =
                threshold > 0 ? Policy::min_victim_age(params, now, threshold - 1) : kEmptyStamp;
          }
        }
      }
      if (target) {
        out.victim_slot[victims++] = static_cast<std::int32_t>(s);
        if (victims == need) min_age = kEmptyStamp;
        // Every fetch has its slot: this one stays empty after the step.
        if (targets == cached && s < floor_end) floors[s / kFloorBlockSlots] = 0;
      }
    }
    if (target && targets < cached) {
      out.slot_of[out.fetch_index[targets++]] = static_cast<std::int32_t>(s);
    }
  };
  for (std::uint32_t s = 0; s < pool.extent && (victims < need || targets < cached); ++s) {
    if (min_age > 0 && s % kFloorBlockSlots == 0 && s < floor_end) {
      // Skip the blocks whose floors rule out a target, then read the next one: one pass over
      // its last uses sets its exact floor and marks the slots that may be targets, and only
      // those are visited. Past the last full block, the tail is read slot by slot.
      std::uint32_t limit = target_floor_limit(now, min_age);
      const std::uint32_t b = scan.next(s / kFloorBlockSlots, limit);
      s = b * kFloorBlockSlots;
      if (b == floor_blocks) {
        if (s == pool.extent) break;
      } else {
        const std::uint32_t* const last_use = pool.slot_last_use + s;
        std::uint32_t maybe = 0;  // bit j: slot s + j may be a target
        floors[b] = read_block(last_use, limit, &maybe);
        while (maybe != 0 && (victims < need || targets < cached)) {
          const std::uint32_t j = lowest_bit(maybe);
          maybe &= maybe - 1;
          visit(s + j);
          if (const std::uint32_t lower = target_floor_limit(now, min_age); lower != limit) {
            limit = lower;  // min_age rose: fewer slots may be targets
            for (std::uint32_t k = j + 1; k < kFloorBlockSlots; ++k) {
              if (last_use[k] + 1 > limit) maybe &= ~(1u << k);
            }
          }
        }
        s += kFloorBlockSlots - 1;
        continue;
      }
    } else if (min_age > 0 && s % 8 == 0) {
      if (s % 32 == 0 && s + 32 <= pool.extent &&
          !may_hold_target<32>(pool.slot_last_use + s, now, min_age)) {
        s += 31;
        continue;
      }
      if (s + 8 <= pool.extent && !may_hold_target<8>(pool.slot_last_use + s, now, min_age)) {
        s += 7;
        continue;
      }
    }
    visit(s);
  }
  return victims;
}

// One step of the residency rule for one policy. histogram: [kHistogramBins] scratch.
template <class Policy>
SPIN_HD StepStatus pool_step_with(PoolView& pool_io, const PolicyParams& params,
                                  SegmentPoolView& segments_io, const StepInput& in_io,
                                  std::uint32_t* histogram, StepOutput& out_io) {
  static_assert(assert_residency_policy<Policy>());
  // The segments the misses may take (two-level page table; a hashed one takes none).
  if (!page_table_hashed(pool_io.table) &&
      segments_io.free_count < most_new_segments(pool_io.table, pool_io.capacity, in_io.n)) {
    return StepStatus::kSegmentPoolExhausted;
  }
  // Work on local copies of the views and the input: stores through the arrays cannot alias
  // them, so their fields stay in registers. The views are written back at the end.
  const StepInput in = in_io;
  PoolView pool = pool_io;
  SegmentPoolView segments = segments_io;
  StepOutput out = out_io;

  // 1. Lookup (a loop of independent loads, so that many are in flight), then hits are pinned
  //    (last_use = now) and misses listed in ascending key order.
  const std::uint32_t n = in.n;
  page_table_lookup_many(pool.table, segments, in.keys, n, out.slot_of);
  // Age counts (optional; bucketed LRU): aged to this step, then every change of a last use
  // moves a count.
  bool counts = false;
  if constexpr (Policy::kOrderOfLastUse) counts = pool.age_count != nullptr;
  if (counts) age_counts_advance(pool, in.now);
  std::uint32_t hits = 0;
  std::uint32_t misses = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::int32_t slot = out.slot_of[i];
    if (slot >= 0) {
      ++hits;
      if (counts) --pool.age_count[age_count_entry(pool, in.now, pool.slot_last_use[slot])];
      pool.slot_last_use[slot] = in.now;
      Policy::on_access(pool, static_cast<std::uint32_t>(slot), i,
                        in.next_use != nullptr ? in.next_use[i] : kNeverUsed, false, in.now);
    } else {
      out.fetch_index[misses++] = i;
    }
  }
  if (counts) pool.age_count[in.now & pool.age_ring_mask] += hits;

  // 2. Bypass: the highest-keyed misses beyond capacity − hits.
  const std::uint32_t room = pool.capacity > hits ? pool.capacity - hits : 0;
  const std::uint32_t cached = misses < room ? misses : room;
  out.hits = hits;
  out.fetches = cached;
  out.bypassed = misses - cached;
  for (std::uint32_t b = 0; b < out.bypassed; ++b) {
    const std::uint32_t i = out.fetch_index[cached + b];
    out.bypass_index[b] = i;
    out.slot_of[i] = kBypassSlot;
  }

  // 3. How many unpinned slots to free.
  const std::uint32_t unpinned = pool.resident - hits;
  std::uint32_t need = unpinned;
  if constexpr (!Policy::kEvictsAllUnpinned) {
    need = pool.resident + cached > pool.capacity ? pool.resident + cached - pool.capacity : 0;
    if (need > unpinned) need = unpinned;
  }

  // 4. Victims and targets. When the policy's victims usually all have order 0 (bucketed LRU:
  //    the oldest bucket), first try t* = 0; that pass stops early and is exact whenever it
  //    finds `need` such slots. Otherwise compute t* and collect.
  std::uint32_t victims = 0;
  if constexpr (Policy::kEvictsAllUnpinned) {
    victims = collect_victims<Policy>(pool, params, in.now, need, 0, 0, cached, out);
  } else if (need == 0) {
    collect_victims<Policy>(pool, params, in.now, 0, 0, 0, cached, out);
  } else if (counts) {
    std::uint64_t threshold = 0;
    std::uint32_t ties = 0;
    age_counts_threshold(pool, params, in.now, need, &threshold, &ties);
    victims = collect_victims<Policy>(pool, params, in.now, need, threshold, ties, cached, out);
  } else {
    if constexpr (Policy::kTryOldestFirst) {
      victims = collect_victims<Policy>(pool, params, in.now, need, 0, need, cached, out);
    }
    if (victims < need) {
      std::uint64_t threshold = 0;
      std::uint32_t ties = 0;
      find_threshold<Policy>(pool, params, in.now, need, hits, histogram, &threshold, &ties);
      victims = collect_victims<Policy>(pool, params, in.now, need, threshold, ties, cached, out);
    }
  }
  out.victims = victims;
  if (victims < need) return StepStatus::kTooFewVictims;  // the fetches would lack slots

  // 5. Apply: unmap the victims, then map the fetched pages.
  for (std::uint32_t v = 0; v < victims; ++v) {
    const std::int32_t s = out.victim_slot[v];
    out.victim_key[v] = pool.slot_key[s];
    if (counts) --pool.age_count[age_count_entry(pool, in.now, pool.slot_last_use[s])];
    page_table_erase(pool.table, segments, out.victim_key[v]);
    pool.slot_key[s] = kNoPage;
    pool.slot_last_use[s] = kEmptyStamp;
  }
  pool.resident -= victims;
  for (std::uint32_t f = 0; f < out.fetches; ++f) {
    const std::uint32_t i = out.fetch_index[f];
    const std::int32_t s = out.slot_of[i];
    pool.slot_key[s] = in.keys[i];
    pool.slot_last_use[s] = in.now;
    Policy::on_access(pool, static_cast<std::uint32_t>(s), i,
                      in.next_use != nullptr ? in.next_use[i] : kNeverUsed, true, in.now);
    page_table_insert(pool.table, segments, in.keys[i], s);
  }
  if (pool.block_floor != nullptr) {
    const std::uint32_t floor_blocks = pool.extent / kFloorBlockSlots;
    for (std::uint32_t f = 0; f < out.fetches; ++f) {
      const std::uint32_t b =
          static_cast<std::uint32_t>(out.slot_of[out.fetch_index[f]]) / kFloorBlockSlots;
      if (b < floor_blocks) {
        pool.block_floor[b] = exact_block_floor(pool.slot_last_use + b * kFloorBlockSlots);
      }
    }
  }
  pool.resident += out.fetches;
  if (counts) pool.age_count[in.now & pool.age_ring_mask] += out.fetches;
  pool_io = pool;
  segments_io = segments;
  out_io = out;
  return StepStatus::kOk;
}

// One step of the residency rule with the policy named by params.kind.
SPIN_HD StepStatus pool_step(PoolView& pool, const PolicyParams& params, SegmentPoolView& segments,
                             const StepInput& in, std::uint32_t* histogram, StepOutput& out) {
  switch (params.kind) {
    case PolicyKind::kBucketedLru:
      return pool_step_with<BucketedLru>(pool, params, segments, in, histogram, out);
    case PolicyKind::kExactLru:
      return pool_step_with<ExactLru>(pool, params, segments, in, histogram, out);
    case PolicyKind::kFifo:
      return pool_step_with<Fifo>(pool, params, segments, in, histogram, out);
    case PolicyKind::kPreviousStep:
      return pool_step_with<PreviousStep>(pool, params, segments, in, histogram, out);
    case PolicyKind::kBelady:
      return pool_step_with<Belady>(pool, params, segments, in, histogram, out);
  }
  return StepStatus::kUnknownPolicy;
}

}  // namespace spin::policy
