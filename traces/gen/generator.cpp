#include "traces/gen/generator.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_* through, which -Wmaybe-uninitialized takes
// for uninitialised reads (GCC bug 105593); the warning's location is the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "common/error.h"
#include "common/policy/partition_map.h"
#include "traces/gen/rng.h"
#include "traces/gen/workload.h"

namespace spin::gen {

namespace detail {

constexpr uint32_t kTableBits = 12;  // quantile tables of 4096 entries
constexpr uint32_t kTableSize = 1u << kTableBits;
constexpr uint32_t kRecallTable = 1024;
constexpr int kTries = 8;  // candidate draws before probing for a free partition

// Quantile tables shared by every stream of a generator.
struct Tables {
  std::vector<uint16_t> slot;      // [kTableSize] Zipf mixture over shared then private slots
  std::vector<int32_t> spread;     // [kTableSize] Laplace offsets in partitions
  std::vector<uint32_t> distance;  // [kRecallTable] reuse distance of a recall, in steps
};

Tables make_tables(const LocalitySection& l, double g) {
  Tables t;
  const uint32_t slots = l.hotspots + l.head_hotspots;
  std::vector<double> cdf(slots);
  const auto zipf_sum = [&](uint32_t n) {
    double s = 0;
    for (uint32_t i = 0; i < n; ++i) s += std::pow(i + 1.0, -l.hotspot_zipf);
    return s;
  };
  const double shared = zipf_sum(l.hotspots), own = zipf_sum(l.head_hotspots);
  double acc = 0;
  for (uint32_t i = 0; i < slots; ++i) {
    acc += i < l.hotspots
               ? l.head_correlation * std::pow(i + 1.0, -l.hotspot_zipf) / shared
               : (1 - l.head_correlation) * std::pow(i - l.hotspots + 1.0, -l.hotspot_zipf) / own;
    cdf[i] = acc;
  }
  t.slot.resize(kTableSize);
  t.spread.resize(kTableSize);
  const double width = l.hotspot_width_tokens / g;
  for (uint32_t i = 0; i < kTableSize; ++i) {
    const double u = (i + 0.5) / kTableSize;
    const auto it = std::lower_bound(cdf.begin(), cdf.end(), u * acc);
    t.slot[i] = static_cast<uint16_t>(std::min<size_t>(it - cdf.begin(), slots - 1));
    const double laplace = u < 0.5 ? std::log(2 * u) : -std::log(2 * (1 - u));
    t.spread[i] = static_cast<int32_t>(std::lround(laplace * width));
  }
  // d - 1 ~ Geometric(mean recall_mean_age_steps) on {1, 2, ...}, cut at d <= W: a partition
  // dropped at step s (last selected at s - 1) is recalled at s + d - 1.
  const double q = 1 - 1 / l.recall_mean_age_steps;
  std::vector<double> weight;
  for (uint32_t d = 2; d <= l.recall_window_steps; ++d) weight.push_back(std::pow(q, d - 2.0));
  std::partial_sum(weight.begin(), weight.end(), weight.begin());
  t.distance.resize(kRecallTable);
  for (uint32_t i = 0; i < kRecallTable; ++i) {
    const double u = (i + 0.5) / kRecallTable * weight.back();
    t.distance[i] = 2 + static_cast<uint32_t>(std::lower_bound(weight.begin(), weight.end(), u) -
                                              weight.begin());
  }
  return t;
}

}  // namespace detail

namespace {

using detail::kTableBits;
using detail::kTableSize;
using detail::Tables;

// Emitting a selection from its bitmap: the positions of the set bits of n words, ascending,
// written to `out`; returns the end of what was written. An emitter may write up to kEmitSlack
// entries past that end. The words are first, first + 1, ..., or with kListed those whose indices
// `ids` lists (ascending): a sparse bitmap's non-empty words.
using EmitBits = uint32_t* (*)(const uint64_t* words, uint32_t first, const uint32_t* ids,
                               uint32_t n, uint32_t* out);
constexpr uint32_t kEmitSlack = 64;  // the VBMI2 emitter stores 16 (or 64) ids a word

template <bool kListed>
uint32_t* emit_bits_portable(const uint64_t* words, uint32_t first, const uint32_t* ids, uint32_t n,
                             uint32_t* out) {
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t w = kListed ? ids[i] : first + i;
    for (uint64_t word = words[w]; word != 0; word &= word - 1) {
      *out++ = w * 64 + static_cast<uint32_t>(std::countr_zero(word));
    }
  }
  return out;
}

#if defined(__x86_64__) && defined(__GNUC__)
// With POPCNT and BMI1: four unconditional writes per word (tzcnt of 0 is 64, so writes past the
// word's bits are junk that the next word overwrites or that lies past the end) and a loop only
// for the rare word with more bits. The portable loop's mispredicted exit once per word was 61%
// of the generator's mispredicted branches (callgrind, shadowkv); the baseline x86-64 target has
// neither instruction, hence the runtime choice.
template <bool kListed>
[[gnu::target("popcnt,bmi")]] uint32_t* emit_bits_bmi(const uint64_t* words, uint32_t first,
                                                      const uint32_t* ids, uint32_t n,
                                                      uint32_t* out) {
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t w = kListed ? ids[j] : first + j;
    uint64_t word = words[w];
    const uint32_t base = w * 64;
    const uint32_t bits = static_cast<uint32_t>(_mm_popcnt_u64(word));
    constexpr uint32_t kWrites = 4;
    for (uint32_t i = 0; i < kWrites; ++i) {
      out[i] = base + static_cast<uint32_t>(_tzcnt_u64(word));
      word = _blsr_u64(word);
    }
    for (uint32_t* o = out + kWrites; word != 0; word = _blsr_u64(word)) {
      *o++ = base + static_cast<uint32_t>(_tzcnt_u64(word));
    }
    out += bits;
  }
  return out;
}

// With AVX-512 VBMI2: a word's set-bit positions packed by one byte compress into a register
// (the register form: a compress store to memory was 0.7-0.8x on AMD Zen 4, docs/benchmarks.md),
// widened to 32 bits and stored 16 at a time; a branch only for words of more than 16 bits.
template <bool kListed>
[[gnu::target("avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]] uint32_t* emit_bits_vbmi2(
    const uint64_t* words, uint32_t first, const uint32_t* ids, uint32_t n, uint32_t* out) {
  const __m512i positions = _mm512_set_epi8(
      63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41,
      40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
      17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t w = kListed ? ids[j] : first + j;
    const uint64_t word = words[w];
    const __m512i packed = _mm512_maskz_compress_epi8(word, positions);
    const __m512i base = _mm512_set1_epi32(static_cast<int>(w * 64));
    _mm512_storeu_si512(
        out, _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm512_castsi512_si128(packed))));
    const uint32_t bits = static_cast<uint32_t>(_mm_popcnt_u64(word));
    if (bits > 16) [[unlikely]] {
      _mm512_storeu_si512(
          out + 16,
          _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(packed, 1))));
      _mm512_storeu_si512(
          out + 32,
          _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(packed, 2))));
      _mm512_storeu_si512(
          out + 48,
          _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(packed, 3))));
    }
    out += bits;
  }
  return out;
}

// The indices of the non-zero words among words[first, first + n), ascending, written to `out`;
// returns how many.
using ListWords = uint32_t (*)(const uint64_t* words, uint32_t first, uint32_t n, uint32_t* out);

uint32_t list_words_portable(const uint64_t* words, uint32_t first, uint32_t n, uint32_t* out) {
  uint32_t listed = 0;
  for (uint32_t w = first; w < first + n; ++w) {
    out[listed] = w;
    listed += words[w] != 0;
  }
  return listed;
}

// Eight words a step: one test, one compress of their indices (register form) and a store.
[[gnu::target("avx512f,avx512vl,popcnt")]] uint32_t list_words_avx512(const uint64_t* words,
                                                                      uint32_t first, uint32_t n,
                                                                      uint32_t* out) {
  uint32_t listed = 0;
  __m256i index = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first)),
                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i eight = _mm256_set1_epi32(8);
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __mmask8 m =
        _mm512_test_epi64_mask(_mm512_loadu_si512(words + first + i), _mm512_set1_epi64(-1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + listed),
                        _mm256_maskz_compress_epi32(m, index));
    listed += static_cast<uint32_t>(_mm_popcnt_u32(m));
    index = _mm256_add_epi32(index, eight);
  }
  if (i < n) {
    const __mmask8 tail = static_cast<__mmask8>((1u << (n - i)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi64(tail, words + first + i);
    const __mmask8 m = _mm512_test_epi64_mask(v, v);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + listed),
                        _mm256_maskz_compress_epi32(m, index));
    listed += static_cast<uint32_t>(_mm_popcnt_u32(m));
  }
  return listed;
}

ListWords choose_list_words() {
  static const ListWords chosen =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? list_words_avx512
                                                                              : list_words_portable;
  return chosen;
}

template <bool kListed>
EmitBits choose_emit_bits() {
  static const EmitBits chosen =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2")
          ? emit_bits_vbmi2<kListed>
      : __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi")
          ? emit_bits_bmi<kListed>
          : emit_bits_portable<kListed>;
  return chosen;
}
#else
template <bool kListed>
EmitBits choose_emit_bits() {
  return emit_bits_portable<kListed>;
}
ListWords choose_list_words() { return list_words_portable; }
#endif

// Persistence: entry i of sel[0, n) is dropped if the low (even i) or high (odd i) half of draw
// i / 2 of `rng` is >= keep; the dropped entries are written to `drop` in order, their number
// returned (`drop` has room for n). Branch-free.
using Persist = size_t (*)(const uint32_t* sel, size_t n, uint32_t keep, Rng& rng, uint32_t* drop);

size_t persist_portable(const uint32_t* sel, size_t n, uint32_t keep, Rng& rng, uint32_t* drop) {
  size_t drops = 0;
  size_t i = 0;
  for (; i + 1 < n; i += 2) {
    const uint64_t r = rng.next();
    drop[drops] = sel[i];
    drops += static_cast<uint32_t>(r) >= keep;
    drop[drops] = sel[i + 1];
    drops += static_cast<uint32_t>(r >> 32) >= keep;
  }
  if (i < n) {
    drop[drops] = sel[i];
    drops += static_cast<uint32_t>(rng.next()) >= keep;
  }
  return drops;
}

// Cluster ends of a variable partition map: from `end`, clusters of min + uniform_below(draw >> 32,
// span) tokens, one draw of `rng` each, while target - end >= max = min + span - 1 (so that no
// cluster is clipped); their ends written to `out`, their number returned, `end` updated.
using ClusterRun = size_t (*)(Rng& rng, uint32_t min, uint32_t span, uint32_t target, uint32_t& end,
                              uint32_t* out);

size_t cluster_run_portable(Rng& rng, uint32_t min, uint32_t span, uint32_t target, uint32_t& end,
                            uint32_t* out) {
  const uint32_t max = min + span - 1;
  size_t n = 0;
  uint32_t e = end;
  while (target - e >= max) {
    e += min + uniform_below(static_cast<uint32_t>(rng.next() >> 32), span);
    out[n++] = e;
  }
  end = e;
  return n;
}

#if defined(__x86_64__) && defined(__GNUC__)
// Rng::output of eight states: the 64x64 -> 128-bit product from four 32-bit ones per lane.
[[gnu::target("avx512f"), gnu::always_inline]] inline __m512i wyrand_output8(__m512i state) {
  const __m512i low32 = _mm512_set1_epi64(0xffffffff);
  // a * b = (a1 2^32 + a0)(b1 2^32 + b0), four 32x32 -> 64-bit products per lane.
  const __m512i a = state,
                b = _mm512_xor_si512(state, _mm512_set1_epi64(static_cast<int64_t>(Rng::kXor)));
  const __m512i a1 = _mm512_srli_epi64(a, 32), b1 = _mm512_srli_epi64(b, 32);
  const __m512i p00 = _mm512_mul_epu32(a, b), p01 = _mm512_mul_epu32(a, b1);
  const __m512i p10 = _mm512_mul_epu32(a1, b), p11 = _mm512_mul_epu32(a1, b1);
  const __m512i mid =
      _mm512_add_epi64(_mm512_add_epi64(_mm512_srli_epi64(p00, 32), _mm512_and_si512(p01, low32)),
                       _mm512_and_si512(p10, low32));
  const __m512i lo = _mm512_or_si512(_mm512_and_si512(p00, low32), _mm512_slli_epi64(mid, 32));
  const __m512i hi =
      _mm512_add_epi64(_mm512_add_epi64(p11, _mm512_srli_epi64(p01, 32)),
                       _mm512_add_epi64(_mm512_srli_epi64(p10, 32), _mm512_srli_epi64(mid, 32)));
  return _mm512_xor_si512(hi, lo);
}

// The next eight states of a generator at `s`: lane j is s + (j + 1) kIncrement.
[[gnu::target("avx512f"), gnu::always_inline]] inline __m512i wyrand_states8(uint64_t s) {
  return _mm512_setr_epi64(
      static_cast<int64_t>(s + 1 * Rng::kIncrement), static_cast<int64_t>(s + 2 * Rng::kIncrement),
      static_cast<int64_t>(s + 3 * Rng::kIncrement), static_cast<int64_t>(s + 4 * Rng::kIncrement),
      static_cast<int64_t>(s + 5 * Rng::kIncrement), static_cast<int64_t>(s + 6 * Rng::kIncrement),
      static_cast<int64_t>(s + 7 * Rng::kIncrement), static_cast<int64_t>(s + 8 * Rng::kIncrement));
}

// Eight clusters a step while eight longest ones fit: their draws at once, a prefix sum of their
// lengths, one store; the rest with the portable loop.
[[gnu::target("avx512f,avx512vl")]] size_t cluster_run_avx512(Rng& rng, uint32_t min, uint32_t span,
                                                              uint32_t target, uint32_t& end,
                                                              uint32_t* out) {
  const uint32_t max = min + span - 1;
  size_t n = 0;
  if (target - end >= 8 * uint64_t{max}) {
    uint64_t groups = 0;
    __m512i state = wyrand_states8(rng.state());
    const __m512i eight = _mm512_set1_epi64(static_cast<int64_t>(8 * Rng::kIncrement));
    const __m512i span_all = _mm512_set1_epi64(span);
    const __m256i min_all = _mm256_set1_epi32(static_cast<int>(min));
    const __m256i zero = _mm256_setzero_si256();
    const __m256i last = _mm256_set1_epi32(7);
    __m256i ends = _mm256_set1_epi32(static_cast<int>(end));
    do {
      // uniform_below(draw >> 32, span) = ((draw >> 32) span) >> 32, per 64-bit lane.
      const __m512i below = _mm512_srli_epi64(
          _mm512_mul_epu32(_mm512_srli_epi64(wyrand_output8(state), 32), span_all), 32);
      __m256i sum = _mm256_add_epi32(_mm512_cvtepi64_epi32(below), min_all);
      sum = _mm256_add_epi32(sum, _mm256_alignr_epi32(sum, zero, 7));
      sum = _mm256_add_epi32(sum, _mm256_alignr_epi32(sum, zero, 6));
      sum = _mm256_add_epi32(sum, _mm256_alignr_epi32(sum, zero, 4));
      const __m256i group_ends = _mm256_add_epi32(ends, sum);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + n), group_ends);
      n += 8;
      ends = _mm256_permutexvar_epi32(last, group_ends);
      state = _mm512_add_epi64(state, eight);
      ++groups;
      end = static_cast<uint32_t>(_mm256_extract_epi32(ends, 0));
    } while (target - end >= 8 * uint64_t{max});
    rng.skip(8 * groups);
  }
  return n + cluster_run_portable(rng, min, span, target, end, out + n);
}

ClusterRun choose_cluster_run() {
  static const ClusterRun chosen =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
          ? cluster_run_avx512
          : cluster_run_portable;
  return chosen;
}

// Sixteen entries a step: their eight draws at once (Rng::output's 64x64 -> 128-bit product from
// four 32-bit ones per lane), one unsigned compare of the sixteen halves against `keep`, and a
// compress (register form) of the dropped ones; each group's store ends at or before its last
// entry's index, so `drop` needs no slack. The rest with the portable loop.
[[gnu::target("avx512f,popcnt")]] size_t persist_avx512(const uint32_t* sel, size_t n,
                                                        uint32_t keep, Rng& rng, uint32_t* drop) {
  const size_t groups = n / 16;
  size_t drops = 0;
  if (groups > 0) {
    __m512i state = wyrand_states8(rng.state());
    const __m512i eight = _mm512_set1_epi64(static_cast<int64_t>(8 * Rng::kIncrement));
    const __m512i keep_all = _mm512_set1_epi32(static_cast<int>(keep));
    for (size_t g = 0; g < groups; ++g) {
      // Lane j holds draw j: as 32-bit lanes, 2j its low half and 2j + 1 its high one.
      const __mmask16 dropped = _mm512_cmpge_epu32_mask(wyrand_output8(state), keep_all);
      _mm512_storeu_si512(drop + drops,
                          _mm512_maskz_compress_epi32(dropped, _mm512_loadu_si512(sel + 16 * g)));
      drops += static_cast<uint32_t>(_mm_popcnt_u32(dropped));
      state = _mm512_add_epi64(state, eight);
    }
    rng.skip(8 * groups);
  }
  return drops + persist_portable(sel + groups * 16, n - groups * 16, keep, rng, drop + drops);
}

Persist choose_persist() {
  static const Persist chosen =
      __builtin_cpu_supports("avx512f") ? persist_avx512 : persist_portable;
  return chosen;
}
#else
Persist choose_persist() { return persist_portable; }
ClusterRun choose_cluster_run() { return cluster_run_portable; }
#endif

// Memory for the large arrays of a HeadState (token's ring is 256 KiB a head): blocks of 32 KiB
// or more that a stream frees are kept per thread, up to kMaxBytes, and handed to the next
// stream that asks for the same size. Fresh memory costs a page fault for every 4 KiB on its
// first touch (on `spin bench gen`'s token at 512 steps, faults and the kernel's page clearing
// were most of opening a layer), and freed blocks of that size go back to the system at once.
class BlockCache {
 public:
  static constexpr size_t kMinBytes = size_t{32} << 10;
  static constexpr size_t kMaxBytes = size_t{16} << 20;
  ~BlockCache() {
    for (const Block& b : free_) ::operator delete(b.data);
    gone() = true;
  }
  // A block of `bytes`; O(blocks kept).
  void* acquire(size_t bytes) {
    for (size_t i = free_.size(); i-- > 0;) {
      if (free_[i].bytes == bytes) {
        void* data = free_[i].data;
        free_[i] = free_.back();
        free_.pop_back();
        kept_bytes_ -= bytes;
        return data;
      }
    }
    return ::operator new(bytes);
  }
  void release(void* data, size_t bytes) {
    if (kept_bytes_ + bytes > kMaxBytes) {
      ::operator delete(data);
      return;
    }
    free_.push_back({data, bytes});
    kept_bytes_ += bytes;
  }
  // The calling thread's cache; null once it was destroyed (a stream freed at thread exit).
  static BlockCache* of_thread() {
    thread_local BlockCache cache;
    return gone() ? nullptr : &cache;
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  static bool& gone() {
    thread_local bool destroyed = false;
    return destroyed;
  }
  std::vector<Block> free_;
  size_t kept_bytes_ = 0;
};

// A vector allocator that takes large blocks from BlockCache and leaves elements that resize()
// adds uninitialised (the arrays it serves are written before they are read; assign() and
// value-taking constructors still set every element).
template <class T>
struct CachedAllocator {
  using value_type = T;
  CachedAllocator() = default;
  template <class U>
  CachedAllocator(const CachedAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes >= BlockCache::kMinBytes) {
      if (BlockCache* cache = BlockCache::of_thread())
        return static_cast<T*>(cache->acquire(bytes));
    }
    return static_cast<T*>(::operator new(bytes));
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes >= BlockCache::kMinBytes) {
      if (BlockCache* cache = BlockCache::of_thread()) return cache->release(p, bytes);
    }
    ::operator delete(p);
  }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const CachedAllocator<U>&) const noexcept {
    return true;
  }
};
template <class T>
using Buffer = std::vector<T, CachedAllocator<T>>;

uint32_t threshold(double p) { return static_cast<uint32_t>(std::min(p, 1.0) * 4294967295.0); }

// The dynamic partitions [lo, hi) of a stream and the same range in storage tokens.
struct Range {
  uint32_t lo = 0, hi = 0;
  uint64_t lo_token = 0, hi_token = 0;
};

// One KV head of an open layer: its selection and the state of the locality model.
class HeadState {
 public:
  HeadState(const Generator& gen, const Tables& tables, const trace::RequestInfo& request,
            uint32_t layer, uint32_t head);

  // Advances to `step` (0, 1, ... in order); `budget` = gen.budget_partitions(context), the
  // same for every head of a step.
  void advance(uint32_t step, uint32_t budget);
  // Asks the caches for what advance(step) will read and write: the bitmap, the selection, the
  // ring's block table, the ring entries of the recall window (where recalls read and drops are
  // pushed) and the archive. Changes nothing. O(that state / 64 bytes).
  void prefetch(uint32_t step) const;
  std::span<const uint32_t> selection() const { return {sel_.data(), count_}; }
  std::span<const uint32_t> offsets() const {
    if (!variable_) return {};
    return std::span<const uint32_t>(offsets_).first(clusters_ + 1);
  }

 private:
  // Steps only forward (the context grows): variable partitions walk on from the last bounds.
  Range dynamic_range(uint64_t context);
  uint32_t partition_at(uint64_t token) const;
  void build_map(const Generator& gen, const trace::RequestInfo& request, uint32_t layer,
                 uint32_t head);
  void move_hotspots(uint32_t step, const Range& range);
  // A re-emergence (from the low 48 bits of `r`) or, without `reemerge`, a fresh candidate (from
  // a draw of `rng` of its own); -1 if the archive is empty.
  int64_t candidate(bool reemerge, uint64_t r, const Range& range, Rng& rng) const;
  bool valid(int64_t c, const Range& range) const {
    return c >= range.lo && c < range.hi && !test(static_cast<uint32_t>(c));
  }
  void draw(uint32_t step, const Range& range, uint32_t count);
  uint32_t probe(int64_t from, const Range& range) const;
  bool test(uint32_t id) const { return (bits_[id >> 6] >> (id & 63)) & 1; }
  void clear(uint32_t id) { bits_[id >> 6] &= ~(uint64_t{1} << (id & 63)); }
  // Pushes a step's drops to the ring (clearing their bits first if `clear_bits`).
  void remember(std::span<const uint32_t> dropped, bool clear_bits);
  // Writes the selection, ascending, from the bitmap (exactly `count` bits are set).
  void emit(const Range& range, uint32_t count);

  const Generator& gen_;
  const Tables& tables_;
  const LocalitySection& loc_;
  const trace::AlgorithmInfo& info_;
  uint64_t seed_, request_id_;
  uint32_t layer_, head_, prompt_;
  bool variable_, dense_;
  uint32_t page_log2_;
  Rng rng_;
  uint32_t keep_;                         // threshold of a 32-bit draw
  uint32_t recall_, revisit_, reemerge_;  // thresholds of 16-bit draws
  uint32_t background_;                   // threshold of a 20-bit draw

  // Variable partitions only: the stream's map over the whole request (trace::PartitionMap's
  // offsets and growth events, built directly; build_map).
  Buffer<uint32_t> offsets_;
  std::vector<trace::PartitionMap::Growth> growth_events_;
  uint32_t initial_clusters_ = 0;
  uint32_t clusters_ = 0;  // clusters in force
  size_t growth_ = 0;      // next growth event
  // The last dynamic clusters [cluster_lo_, cluster_hi_), before clipping hi to lo.
  uint32_t cluster_lo_ = 0, cluster_hi_ = 0;

  Buffer<uint64_t> bits_;  // the selection, as a bitmap over partition ids
  // The selection, ascending: the first count_ entries; emit() may write a few entries past them.
  Buffer<uint32_t> sel_;
  uint32_t count_ = 0;
  EmitBits emit_bits_ = choose_emit_bits<false>(), emit_listed_bits_ = choose_emit_bits<true>();
  ListWords list_words_ = choose_list_words();
  Persist persist_ = choose_persist();
  Buffer<uint32_t> nonempty_;  // [bits_.size() + 8] the non-empty words of a sparse emit
  Buffer<uint32_t> dropped_;

  // Partitions dropped recently, in blocks by drop step; oldest overwritten. Block s holds
  // positions [step_begin_[s], step_begin_[s + 1]), its live entries (not taken since) first:
  // [step_begin_[s], live_end_[s]).
  Buffer<uint32_t> ring_;
  uint64_t ring_count_ = 0;  // partitions ever pushed
  uint64_t ring_mask_ = 0;
  std::vector<uint64_t> step_begin_;  // [power of two > revisit window] by step s
  std::vector<uint64_t> live_end_;    // [same]
  uint64_t step_mask_ = 0;
  uint32_t revisit_base_ = 0, revisit_span_ = 0;  // revisit distances: base + [0, span)
  Buffer<uint32_t> archive_;
  size_t archive_fill_ = 0;
  uint32_t archive_step_ = 0;    // archive_prob as a 32-bit fraction
  uint32_t archive_credit_ = 0;  // every carry out of it archives one leaving entry

  std::vector<int64_t> center_;                  // [slots] partition id of each hotspot
  std::vector<uint32_t> life_, phase_, change_;  // [slots] lifetime, phase, next change step
  uint32_t next_change_ = 0;
};

HeadState::HeadState(const Generator& gen, const Tables& tables, const trace::RequestInfo& request,
                     uint32_t layer, uint32_t head)
    : gen_(gen),
      tables_(tables),
      loc_(gen.config().locality),
      info_(gen.algorithm().info),
      seed_(gen.config().seed),
      request_id_(request.id),
      layer_(layer),
      head_(head),
      prompt_(request.prompt_tokens),
      variable_(info_.partition_kind == trace::PartitionKind::kVariable),
      dense_(gen.layer_model(layer).dense),
      page_log2_(static_cast<uint32_t>(std::countr_zero(info_.page_tokens))),
      rng_(detail::Tag::kHead ^ mix(seed_, request_id_, layer, head)) {
  const LayerModel& model = gen.layer_model(layer);
  keep_ = threshold(model.persistence);
  recall_ = threshold(model.recall_prob) >> 16;
  revisit_ = threshold(model.recall_prob + loc_.revisit_prob) >> 16;
  reemerge_ = threshold(model.recall_prob + loc_.revisit_prob + loc_.reemerge_prob) >> 16;
  archive_step_ = threshold(loc_.archive_prob);
  background_ = static_cast<uint32_t>(loc_.background_prob * (1u << 20));
  uint64_t partitions = 0;
  const uint64_t final_context = uint64_t{request.prompt_tokens} + request.decode_steps;
  if (variable_) {
    build_map(gen, request, layer, head);
    partitions = offsets_.size() - 1;
  } else {
    partitions = (final_context + info_.partition_tokens - 1) / info_.partition_tokens;
  }
  bits_.assign(partitions / 64 + 2, 0);
  nonempty_.resize(bits_.size() + 8);

  const uint32_t k = gen.budget_partitions(final_context);
  const double drops = std::max(1.0, k * (1 - model.persistence));
  // Room for 1.5 times the expected drops of the revisit window; older entries are overwritten.
  const uint64_t ring = std::bit_ceil(
      std::max<uint64_t>(64, static_cast<uint64_t>(1.5 * drops * (loc_.revisit_window_steps + 1))));
  ring_.resize(ring);
  ring_mask_ = ring - 1;
  step_begin_.resize(std::bit_ceil(uint64_t{loc_.revisit_window_steps} + 2));
  live_end_.resize(step_begin_.size());
  step_mask_ = step_begin_.size() - 1;
  revisit_base_ = loc_.recall_window_steps + 1;
  revisit_span_ = loc_.revisit_window_steps - loc_.recall_window_steps;
  archive_.resize(std::max<size_t>(64, static_cast<size_t>(loc_.archive_ratio * k)));

  const uint32_t slots = loc_.hotspots + loc_.head_hotspots;
  center_.resize(slots);
  life_.resize(slots);
  phase_.resize(slots);
  change_.assign(slots, 0);
  for (uint32_t i = 0; i < slots; ++i) {
    // Shared slots have the same timing in every layer and head of the request.
    const uint64_t h = i < loc_.hotspots ? mix(seed_, request_id_, detail::kLife, i)
                                         : mix(seed_, request_id_, detail::kLife, i, layer, head);
    life_[i] = std::max<uint32_t>(
        1, static_cast<uint32_t>(loc_.hotspot_lifetime_steps * (0.5 + unit_interval(h))));
    phase_[i] = static_cast<uint32_t>(unit_interval(mix(h)) * life_[i]);
  }
}

void HeadState::build_map(const Generator& gen, const trace::RequestInfo& request, uint32_t layer,
                          uint32_t head) {
  // Clusters of min + uniform_below(draw >> 32, span) tokens, clipped to what is left, cover the
  // prompt and then each re-index interval exactly, one draw each in order. The offsets are
  // written directly (a vector of lengths and trace::PartitionMap's per-cluster checks were 44%
  // of opening a retroinfer layer): every length is in [1, max] and each cover sums to exactly
  // its tokens, so those checks hold. The unit tests compare the offsets with a plain reference.
  Rng rng(detail::kMap ^ mix(seed_, request.id, layer, head));
  const uint32_t min = gen.algorithm().cluster_min_tokens;
  const uint32_t span = gen.algorithm().cluster_max_tokens - min + 1;
  const uint32_t interval = info_.reindex_interval_tokens;
  const uint64_t covers =
      interval > 0 && request.decode_steps > interval ? (request.decode_steps - 1) / interval : 0;
  // At most ceil(tokens / min) clusters a cover.
  offsets_.resize(2 + request.prompt_tokens / min + covers * (interval / min + 1));
  uint32_t* const out = offsets_.data();
  size_t n = 0;
  out[n++] = 0;
  uint32_t end = 0;
  const ClusterRun run = choose_cluster_run();
  const auto cover = [&](uint32_t tokens) {
    const uint32_t target = end + tokens;
    // While a longest cluster fits, no length is clipped: a loop that carries only `end`
    // (vectorised with AVX-512); then the clipped tail.
    n += run(rng, min, span, target, end, out + n);
    while (end < target) {
      end += std::min(min + uniform_below(static_cast<uint32_t>(rng.next() >> 32), span),
                      target - end);
      out[n++] = end;
    }
  };
  cover(request.prompt_tokens);
  initial_clusters_ = static_cast<uint32_t>(n - 1);
  for (uint64_t step = interval; step < request.decode_steps; step += interval) {
    cover(interval);
    growth_events_.push_back({static_cast<uint32_t>(step), static_cast<uint32_t>(n - 1)});
  }
  offsets_.resize(n);
}

Range HeadState::dynamic_range(uint64_t context) {
  const policy::StaticRegion region = policy::make_static_region(
      info_.sink_tokens, info_.local_window_tokens, static_cast<uint32_t>(context), page_log2_);
  Range r;
  r.lo_token = uint64_t{region.sink_end_page} << page_log2_;
  r.hi_token = std::max(r.lo_token, uint64_t{region.local_begin_page} << page_log2_);
  if (variable_) {
    // A cluster is dynamic iff it starts at or after lo_token and ends at or before hi_token.
    // Both tokens and the clusters in force only grow, and growth appends clusters, so the
    // bounds only move forward: a walk from the last ones (O(1) a step; binary searches were 4%
    // of retroinfer's time).
    const std::span<const uint32_t> in_force = offsets();
    while (cluster_lo_ < clusters_ && in_force[cluster_lo_] < r.lo_token) ++cluster_lo_;
    if (cluster_hi_ == 0) {
      // The first step's walk would cross the whole prompt (a third of opening a retroinfer
      // layer): a binary search finds the same bound.
      cluster_hi_ =
          static_cast<uint32_t>(std::upper_bound(in_force.begin() + 1, in_force.end(), r.hi_token) -
                                in_force.begin() - 1);
    }
    while (cluster_hi_ < clusters_ && in_force[cluster_hi_ + 1] <= r.hi_token) ++cluster_hi_;
    r.lo = cluster_lo_;
    r.hi = cluster_hi_;
  } else {
    const uint64_t g = info_.partition_tokens;
    r.lo = static_cast<uint32_t>((r.lo_token + g - 1) / g);
    r.hi = static_cast<uint32_t>(r.hi_token / g);
  }
  r.hi = std::max(r.hi, r.lo);
  return r;
}

uint32_t HeadState::partition_at(uint64_t token) const {
  if (!variable_) return static_cast<uint32_t>(token / info_.partition_tokens);
  // The last offset <= token (offsets_[0] = 0), by a branch-free binary search: at the first
  // step every hotspot is placed, and the branches of std::upper_bound mispredicted.
  const uint32_t* base = offsets_.data();
  for (size_t n = offsets_.size(); n > 1;) {
    const size_t half = n / 2;
    base = base[half] <= token ? base + half : base;
    n -= half;
  }
  return static_cast<uint32_t>(base - offsets_.data());
}

void HeadState::move_hotspots(uint32_t step, const Range& range) {
  if (step < next_change_) return;
  next_change_ = UINT32_MAX;
  for (uint32_t i = 0; i < center_.size(); ++i) {
    if (step >= change_[i]) {
      const uint32_t epoch = (step + phase_[i]) / life_[i];
      change_[i] = (epoch + 1) * life_[i] - phase_[i];
      uint64_t h = 0;
      if (i < loc_.hotspots) {
        // Walk down the layers while each link says "same position as the layer below".
        uint32_t origin = layer_;
        while (origin > 0 && unit_interval(mix(seed_, request_id_, detail::kLink, origin, i,
                                               epoch)) < loc_.layer_correlation) {
          --origin;
        }
        h = mix(seed_, request_id_, detail::kShared, origin, i, epoch);
      } else {
        h = mix(seed_, request_id_, detail::kPrivate, layer_, head_, i, epoch);
      }
      const uint64_t token =
          range.lo_token +
          static_cast<uint64_t>(unit_interval(h) *
                                static_cast<double>(range.hi_token - range.lo_token));
      center_[i] = partition_at(token);
    }
    next_change_ = std::min(next_change_, change_[i]);
  }
}

int64_t HeadState::candidate(bool reemerge, uint64_t r, const Range& range, Rng& rng) const {
  if (reemerge) {
    if (archive_fill_ == 0) return -1;
    return archive_[uniform_below(static_cast<uint32_t>(r >> 16),
                                  static_cast<uint32_t>(archive_fill_))];
  }
  const uint64_t f = rng.next();
  if (((f >> 24) & 0xfffff) < background_) {
    return range.lo + uniform_below(static_cast<uint32_t>(f >> 44 << 12), range.hi - range.lo);
  }
  return center_[tables_.slot[f & (kTableSize - 1)]] +
         tables_.spread[(f >> kTableBits) & (kTableSize - 1)];
}

uint32_t HeadState::probe(int64_t from, const Range& range) const {
  uint32_t id = static_cast<uint32_t>(std::clamp<int64_t>(from, range.lo, range.hi - 1));
  for (uint32_t n = range.hi - range.lo; n > 0; --n) {
    if (!test(id)) return id;
    id = id + 1 == range.hi ? range.lo : id + 1;
  }
  throw InvariantError("trace generator: no free partition left for a replacement");
}

void HeadState::draw(uint32_t step, const Range& range, uint32_t count) {
  // Each replacement in turn: a candidate from a drawn source, redrawn from the same source
  // while it has nothing valid to offer, then from fresh draws (kTries each), then the next free
  // partition is probed.
  //
  // The state the loop touches is in locals: as members, every store to the bitmap or the ring
  // might alias them, and each replacement reloaded a dozen of them and the generator's state.
  Rng rng = rng_;
  uint64_t* const bits = bits_.data();
  uint32_t* const ring = ring_.data();
  const uint64_t* const step_begin = step_begin_.data();
  uint64_t* const live_end = live_end_.data();
  const uint32_t* const distances = tables_.distance.data();
  const uint64_t ring_mask = ring_mask_;
  const uint64_t oldest = ring_count_ > ring_mask ? ring_count_ - ring_mask - 1 : 0;
  const uint32_t step_mask = static_cast<uint32_t>(step_mask_);
  const uint32_t recall_below = recall_, ring_below = revisit_, reemerge_below = reemerge_;
  const uint32_t revisit_base = revisit_base_, revisit_span = revisit_span_;
  // A recall (if u < recall_below) or a revisit drawn from `r`: the block of the partitions
  // dropped at step + 1 - distance, then a uniform live entry of it (the first pick from bits
  // 16..47 of `r`, later ones from further draws) that is not selected. Every entry looked at
  // leaves the live part of the block (swapped to its end): a taken one is selected now, and a
  // rejected one was selected again since it was dropped, so both will be pushed again when next
  // dropped. -1 if the block runs out or is older than the first step.
  const auto take = [&](uint32_t u, uint64_t r) -> int64_t {
    // Both distances, then a select. (GCC 12 makes the select a branch, mispredicted about once
    // in six ring picks; a cmov in asm instead measured the same.)
    const uint32_t recall = distances[r & (detail::kRecallTable - 1)];
    const uint32_t revisit =
        revisit_base + static_cast<uint32_t>(((r & 0xffff) * revisit_span) >> 16);
    const uint32_t distance = u < recall_below ? recall : revisit;
    if (distance > step) return -1;
    const uint32_t block = (step + 1 - distance) & step_mask;
    const uint64_t begin = std::max(step_begin[block], oldest);
    uint64_t end = live_end[block];
    if (begin >= end) return -1;
    int64_t found = -1;
    for (uint32_t pick = static_cast<uint32_t>(r >> 16); begin < end;
         pick = static_cast<uint32_t>(rng.next())) {
      const uint64_t at =
          (begin + uniform_below(pick, static_cast<uint32_t>(end - begin))) & ring_mask;
      const uint32_t id = ring[at];
      --end;
      ring[at] = ring[end & ring_mask];
      ring[end & ring_mask] = id;
      // No range check: the entry was selected once, and the dynamic range never shrinks while
      // anything is selected (its start is fixed, its end only grows).
      if (!((bits[id >> 6] >> (id & 63)) & 1)) {
        found = id;
        break;
      }
    }
    live_end[block] = end;
    return found;
  };
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t r = rng.next();
    // The source, by u: below recall_below a recall, then a revisit (both from the ring), a
    // re-emergence below reemerge_below, else a fresh draw.
    const uint32_t u = static_cast<uint32_t>(r >> 48);
    int64_t c = -1;
    bool ok = false;
    if (u < ring_below) {
      for (int t = 0; t < detail::kTries && !ok; ++t) {
        if (t > 0) r = rng.next();
        ok = (c = take(u, r)) >= 0;
      }
    } else {
      for (int t = 0; t < detail::kTries && !ok; ++t) {
        if (t > 0) r = rng.next();
        ok = valid(c = candidate(u < reemerge_below, r, range, rng), range);
      }
    }
    if (!ok) [[unlikely]] {
      for (int t = 0; t < detail::kTries && !ok; ++t) {
        ok = valid(c = candidate(false, 0, range, rng), range);
      }
      if (!ok) c = probe(c, range);
    }
    const uint32_t id = static_cast<uint32_t>(c);
    bits[id >> 6] |= uint64_t{1} << (id & 63);
  }
  rng_ = rng;
}

void HeadState::remember(std::span<const uint32_t> dropped, bool clear_bits) {
  // The counters and the arrays' addresses live in locals: as members, the bitmap's and the
  // ring's stores might alias them, and each push would reload them.
  uint64_t count = ring_count_;
  uint32_t credit = archive_credit_;
  size_t fill = archive_fill_;
  uint64_t* const bits = bits_.data();
  uint32_t* const ring = ring_.data();
  uint32_t* const archive = archive_.data();
  const uint64_t ring_mask = ring_mask_;
  const size_t archive_size = archive_.size();
  const uint32_t archive_step = archive_step_;
  for (uint32_t id : dropped) {
    if (clear_bits) bits[id >> 6] &= ~(uint64_t{1} << (id & 63));
    const uint64_t at = count & ring_mask;
    if (count > ring_mask) {
      // The oldest entry leaves the ring; a share archive_prob of those (evenly thinned) is kept
      // for re-emergence much later, replacing a pseudo-random archived entry once full.
      const uint32_t before = credit;
      credit += archive_step;
      if (credit < before) {
        if (fill < archive_size) {
          archive[fill++] = ring[at];
        } else {
          const uint32_t h = static_cast<uint32_t>((count * 0x9e3779b97f4a7c15ull) >> 32);
          archive[uniform_below(h, static_cast<uint32_t>(archive_size))] = ring[at];
        }
      }
    }
    ring[at] = id;
    ++count;
  }
  ring_count_ = count;
  archive_credit_ = credit;
  archive_fill_ = fill;
}

void HeadState::emit(const Range& range, uint32_t count) {
  if (sel_.size() < count + kEmitSlack) sel_.resize(count + kEmitSlack);
  count_ = count;
  if (count == 0) return;
  const uint32_t first = range.lo >> 6, words = ((range.hi - 1) >> 6) - first + 1;
  if (count >= 2 * words) {
    emit_bits_(bits_.data(), first, nullptr, words, sel_.data());
    return;
  }
  // Sparse (under two partitions a word, about one for shadowkv and retroinfer): many words are
  // empty, and listing the others first (one instruction a word with AVX-512, a few without; no
  // branch) saves the emitter's work for each empty one (~16 instructions with VBMI2, ~30 with
  // BMI). Denser selections (2.4 a word for seer, quest and token) keep the plain scan: the list
  // gained them nothing measurable.
  const uint32_t n = list_words_(bits_.data(), first, words, nonempty_.data());
  emit_listed_bits_(bits_.data(), first, nonempty_.data(), n, sel_.data());
}

// A software prefetch of the cache line at `p`. GCC (12, -O3) deletes a loop whose body is only
// __builtin_prefetch (it assumes such a loop finite and without effect), hence the asm on x86-64.
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

// Software prefetches of every cache line of [data, data + n).
template <class T>
void prefetch_lines(const T* data, size_t n) {
  const char* p = reinterpret_cast<const char*>(data);
  for (size_t offset = 0; offset < n * sizeof(T); offset += 64) prefetch_line(p + offset);
}

void HeadState::prefetch(uint32_t step) const {
  if (dense_) return;
  prefetch_lines(bits_.data(), bits_.size());
  prefetch_lines(sel_.data(), count_);
  prefetch_lines(step_begin_.data(), step_begin_.size());
  prefetch_lines(live_end_.data(), live_end_.size());
  prefetch_lines(archive_.data(), archive_fill_);
  // The ring from the oldest block a recall may read to past where this step's drops (at most
  // the current selection) will be pushed, wrapping around the ring. Not the older blocks of the
  // revisit window: revisits read a few entries of each, and prefetching all of them (4 times
  // as many lines) gained less in `spin bench sim` (1.04x instead of 1.07x).
  uint64_t begin = ring_count_ > ring_mask_ ? ring_count_ - ring_mask_ - 1 : 0;
  const uint32_t window = loc_.recall_window_steps;
  if (step + 1 >= window) begin = std::max(begin, step_begin_[(step + 1 - window) & step_mask_]);
  const uint64_t end = std::min(ring_count_ + count_, begin + ring_mask_ + 1);
  constexpr uint64_t kLineEntries = 64 / sizeof(uint32_t);
  for (uint64_t p = begin & ~(kLineEntries - 1); p < end; p += kLineEntries) {
    prefetch_line(&ring_[p & ring_mask_]);
  }
}

void HeadState::advance(uint32_t step, uint32_t budget) {
  if (variable_) {
    if (step == 0) clusters_ = initial_clusters_;
    if (growth_ < growth_events_.size() && growth_events_[growth_].step == step)
      clusters_ = growth_events_[growth_++].clusters;
  }
  const uint64_t context = uint64_t{prompt_} + step;
  const Range range = dynamic_range(context);
  const uint32_t k = std::min(budget, range.hi - range.lo);
  if (dense_) {
    count_ = range.hi - range.lo;
    sel_.resize(count_);
    std::iota(sel_.begin(), sel_.end(), range.lo);
    return;
  }
  move_hotspots(step, range);
  step_begin_[step & step_mask_] = ring_count_;
  const size_t n = count_;
  if (dropped_.size() < n + 1) dropped_.resize(n + 1);
  uint32_t* drop = dropped_.data();
  const size_t drops = persist_(sel_.data(), n, keep_, rng_, drop);
  const std::span<const uint32_t> dropped(drop, drops);
  const uint32_t kept = static_cast<uint32_t>(n - drops);
  // k never falls (the context and the dynamic range only grow), so kept <= k. Replacements
  // avoid the previous selection, unless too few partitions are left for that.
  const uint32_t need = k - kept;
  const bool early = range.hi - range.lo - n < need;
  if (early) {
    for (uint32_t id : dropped) clear(id);
  }
  draw(step, range, need);
  remember(dropped, !early);
  live_end_[step & step_mask_] = ring_count_;
  emit(range, k);
}

class LayerStream final : public trace::StepStream {
 public:
  LayerStream(const Generator& gen, const Tables& tables, size_t request, uint32_t layer,
              std::span<const uint32_t> heads)
      : gen_(gen),
        prompt_tokens_(gen.requests()[request].prompt_tokens),
        steps_(gen.requests()[request].decode_steps),
        slot_of_head_(gen.header().model.kv_heads, -1) {
    const trace::RequestInfo& info = gen.requests()[request];
    heads_.reserve(heads.size());
    for (uint32_t h : heads) {
      slot_of_head_[h] = static_cast<int32_t>(heads_.size());
      heads_.emplace_back(gen, tables, info, layer, h);
    }
  }
  bool next() override {
    if (step_ + 1 >= static_cast<int64_t>(steps_)) {
      step_ = steps_;
      return false;
    }
    ++step_;
    const uint32_t step = static_cast<uint32_t>(step_);
    const uint32_t budget = gen_.budget_partitions(uint64_t{prompt_tokens_} + step);
    // A layer stepped right after itself (a file being written, `spin bench gen`) finds its state
    // in the caches, and prefetching it costs 5-8% there. Between two steps of one layer the
    // simulator steps every other layer of the batch and the policy core, which evicts it: cache
    // misses on the ring, its block table and the bitmap took about two thirds of advance()'s
    // time. There each head's state is prefetched while the head before it advances.
    // (`last_stepped` is only compared, never followed.)
    thread_local const LayerStream* last_stepped = nullptr;
    const bool cold = last_stepped != this;
    last_stepped = this;
    if (cold && !heads_.empty()) heads_[0].prefetch(step);
    for (size_t i = 0; i < heads_.size(); ++i) {
      if (cold && i + 1 < heads_.size()) heads_[i + 1].prefetch(step);
      heads_[i].advance(step, budget);
    }
    return true;
  }
  uint32_t step() const override { return static_cast<uint32_t>(step_); }
  std::span<const uint32_t> selection(uint32_t head) const override {
    return heads_[slot(head)].selection();
  }
  std::span<const uint32_t> partition_offsets(uint32_t head) const override {
    return heads_[slot(head)].offsets();
  }

 private:
  size_t slot(uint32_t head) const {
    if (head >= slot_of_head_.size() || slot_of_head_[head] < 0) {
      throw InputError(fmt::format("trace generator: KV head {} was not opened", head));
    }
    return static_cast<size_t>(slot_of_head_[head]);
  }
  const Generator& gen_;
  uint32_t prompt_tokens_;
  uint32_t steps_;
  int64_t step_ = -1;
  std::vector<int32_t> slot_of_head_;
  std::vector<HeadState> heads_;
};

}  // namespace

Generator::Generator(GeneratorConfig config, config::ModelConfig model)
    : config_(std::move(config)), model_(std::move(model)) {
  validate(config_, model_);
  spec_ = resolve_algorithm(config_);
  const config::ModelConfig& m = model_;
  header_.model = {m.preset.empty() ? "custom" : m.preset,
                   m.layers,
                   m.query_heads,
                   m.kv_heads,
                   m.head_dim,
                   m.dtype_bytes()};
  header_.algorithms = {spec_.info};
  header_.source =
      fmt::format("spin trace gen: algorithm {}, workload {}", spec_.name, config_.workload.name);
  header_.seed = config_.seed;
  trace::validate_header(header_);
  requests_ = make_requests(config_.workload, config_.seed);

  const LocalitySection& l = config_.locality;
  const double g = spec_.info.partition_tokens;
  const double base = 1 - (1 - l.persistence) * std::pow(g, -l.granularity_exponent);
  // Poorly-local layers: the sparse layers with the smallest hashes.
  std::vector<uint32_t> sparse(m.layers - l.dense_layers);
  std::iota(sparse.begin(), sparse.end(), l.dense_layers);
  std::sort(sparse.begin(), sparse.end(), [&](uint32_t a, uint32_t b) {
    return mix(config_.seed, detail::kPoor, a) < mix(config_.seed, detail::kPoor, b);
  });
  layers_.resize(m.layers);
  for (uint32_t i = 0; i < m.layers; ++i) {
    LayerModel& layer = layers_[i];
    layer.dense = i < l.dense_layers;
    layer.poor = std::find(sparse.begin(), sparse.begin() + l.poor_layers, i) !=
                 sparse.begin() + l.poor_layers;
    const double jitter =
        l.layer_jitter * (2 * unit_interval(mix(config_.seed, detail::kJitter, i)) - 1);
    const double scale = layer.poor ? l.poor_layer_scale : 1.0;
    layer.persistence = std::clamp(base + jitter, 0.0, 0.995) * scale;
    layer.recall_prob = l.recall_prob * scale;
  }
  tables_ = std::make_unique<const Tables>(detail::make_tables(l, g));
}

Generator::~Generator() = default;

uint32_t Generator::budget_partitions(uint64_t context_tokens) const {
  const trace::AlgorithmInfo& a = spec_.info;
  const double tokens = a.budget_tokens + a.budget_ratio * static_cast<double>(context_tokens);
  return static_cast<uint32_t>(std::ceil(tokens / a.partition_tokens));
}

std::unique_ptr<trace::StepStream> Generator::open_layer(size_t request, uint32_t layer,
                                                         std::span<const uint32_t> heads) const {
  if (request >= requests_.size()) {
    throw InputError(
        fmt::format("trace generator: request index {} is out of range (the trace "
                    "has {} requests)",
                    request, requests_.size()));
  }
  if (layer >= header_.model.layers) {
    throw InputError(fmt::format("trace generator: layer {} is out of range (the model has {})",
                                 layer, header_.model.layers));
  }
  std::vector<uint32_t> all;
  if (heads.empty()) {
    all.resize(header_.model.kv_heads);
    std::iota(all.begin(), all.end(), 0u);
    heads = all;
  }
  std::vector<bool> seen(header_.model.kv_heads);
  for (uint32_t h : heads) {
    if (h >= header_.model.kv_heads || seen[h]) {
      throw InputError(
          fmt::format("trace generator: KV head {} is out of range or repeated (the "
                      "model has {} KV heads)",
                      h, header_.model.kv_heads));
    }
    seen[h] = true;
  }
  return std::make_unique<LayerStream>(*this, *tables_, request, layer, heads);
}

void copy_to_file(const trace::TraceSource& source, const std::filesystem::path& path,
                  const trace::WriterOptions& options,
                  const std::function<void(size_t)>& progress) {
  trace::TraceWriter writer(path, source.header(), options);
  const uint32_t layers = source.header().model.layers;
  const uint32_t heads = source.header().model.kv_heads;
  std::vector<uint32_t> head_offsets(heads + 1);
  std::vector<uint32_t> ids;
  std::vector<uint32_t> clusters(heads);
  std::vector<uint32_t> lengths;
  // Cluster lengths of offsets[first, last].
  const auto lengths_of = [&](std::span<const uint32_t> offsets, size_t first) {
    lengths.clear();
    for (size_t i = first; i + 1 < offsets.size(); ++i)
      lengths.push_back(offsets[i + 1] - offsets[i]);
    return std::span<const uint32_t>(lengths);
  };
  for (size_t r = 0; r < source.requests().size(); ++r) {
    writer.begin_request(source.requests()[r]);
    const bool variable = source.algorithm_of(r).partition_kind == trace::PartitionKind::kVariable;
    for (uint32_t layer = 0; layer < layers; ++layer) {
      const auto stream = source.open_layer(r, layer);
      while (stream->next()) {
        const uint32_t step = stream->step();
        ids.clear();
        for (uint32_t h = 0; h < heads; ++h) {
          if (variable) {
            const auto offsets = stream->partition_offsets(h);
            const uint32_t n = static_cast<uint32_t>(offsets.size() - 1);
            if (step == 0) {
              writer.set_partition_map(layer, h, lengths_of(offsets, 0));
            } else if (n > clusters[h]) {
              writer.grow_partition_map(step, layer, h, lengths_of(offsets, clusters[h]));
            }
            clusters[h] = n;
          }
          const auto sel = stream->selection(h);
          head_offsets[h] = static_cast<uint32_t>(ids.size());
          ids.insert(ids.end(), sel.begin(), sel.end());
        }
        head_offsets[heads] = static_cast<uint32_t>(ids.size());
        writer.add_step(layer, step, head_offsets, ids);
      }
    }
    writer.end_request();
    if (progress) progress(r + 1);
  }
  writer.finish();
}

}  // namespace spin::gen
