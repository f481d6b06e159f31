#include "common/trace/codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "common/error.h"

namespace spin::trace::codec {
namespace {

// The delta merge works on ids + 1 between the sentinels 0 and kHigh: ids are < 2^32 - 2
// (validate_request bounds the context), so id + 1 < kHigh.
constexpr uint32_t kHigh = std::numeric_limits<uint32_t>::max();

// Reads one varint at p and advances p past it. Needs 4 readable bytes past `end`. When the
// varint runs past `end` or is not a valid 32-bit LEB128, p ends up past `end`; the caller checks
// `p > end` once.
inline uint32_t read_varint(const uint8_t*& p, const uint8_t* end) {
  uint32_t b = *p++;
  if (b < 0x80) [[likely]]
    return b;
  uint32_t r = b & 0x7f;
  for (int shift = 7; shift <= 21; shift += 7) {
    b = *p++;
    r |= (b & 0x7f) << shift;
    if (b < 0x80) return r;
  }
  b = *p++;
  if (b > 0x0f) p = end + 1;  // more than 32 bits, or a sixth byte
  return r | (b << 28);
}

// Appends n ids (first absolute, then gap - 1) to `out`; returns the last id + 1 (0 if n == 0).
inline uint64_t put_ids(std::span<const uint32_t> ids, std::vector<uint8_t>& out) {
  uint64_t next = 0;
  for (uint32_t id : ids) {
    put_varint(out, static_cast<uint32_t>(id - next));
    next = uint64_t{id} + 1;
  }
  return next;
}

inline size_t ids_bytes(std::span<const uint32_t> ids) {
  size_t n = 0;
  uint64_t next = 0;
  for (uint32_t id : ids) {
    n += varint_bytes(static_cast<uint32_t>(id - next));
    next = uint64_t{id} + 1;
  }
  return n;
}

// Reports a decoding error at position p of the segment that starts at `begin`.
[[noreturn]] void fail(const uint8_t* begin, const uint8_t* p, uint32_t step,
                       std::string_view what) {
  throw InputError(fmt::format("step {}, segment byte {}: {}", step, p - begin, what));
}

// Decodes n ids coded by put_ids into out[i] = id + kBias. Returns the position after them; ids
// are strictly ascending by construction, and the returned `next` is the last id + 1.
template <uint32_t kBias>
inline const uint8_t* get_ids(const uint8_t* p, const uint8_t* begin, const uint8_t* end,
                              uint32_t step, uint32_t n, uint32_t* out, uint64_t& next) {
  uint64_t cur = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t g = read_varint(p, end);
    if (p > end) [[unlikely]] {
      fail(begin, std::min(p, end), step,
           fmt::format("id {} of {} is a malformed varint or runs past the segment end", i, n));
    }
    cur += g;
    out[i] = static_cast<uint32_t>(cur) + kBias;
    ++cur;
  }
  next = cur;
  return p;
}

template <typename T>
inline void grow_to(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(std::max(n, v.size() * 2));
}

}  // namespace

void SelectionEncoder::encode(std::span<const uint32_t> ids, std::vector<uint8_t>& out) {
  const uint32_t n = static_cast<uint32_t>(ids.size());
  const size_t key_bytes = varint_bytes(n << 1) + ids_bytes(ids);
  bool delta = false;
  if (has_previous_) {
    const size_t m = previous_.size();
    bitmap_.assign((m + 7) / 8, 0);
    added_.clear();
    size_t j = 0;
    for (size_t i = 0; i < m; ++i) {
      while (j < ids.size() && ids[j] < previous_[i]) added_.push_back(ids[j++]);
      if (j < ids.size() && ids[j] == previous_[i]) {
        bitmap_[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
        ++j;
      }
    }
    added_.insert(added_.end(), ids.begin() + static_cast<std::ptrdiff_t>(j), ids.end());
    const uint32_t a = static_cast<uint32_t>(added_.size());
    const size_t delta_bytes = varint_bytes((a << 1) | 1) + bitmap_.size() + ids_bytes(added_);
    delta = delta_bytes < key_bytes;
    if (delta) {
      put_varint(out, (a << 1) | 1);
      out.insert(out.end(), bitmap_.begin(), bitmap_.end());
      put_ids(added_, out);
    }
  }
  if (!delta) {
    put_varint(out, n << 1);
    put_ids(ids, out);
  }
  previous_.assign(ids.begin(), ids.end());
  has_previous_ = true;
}

void SelectionDecoder::decode(std::span<const uint8_t> raw, uint32_t first_step,
                              std::span<const uint32_t> limits, StepSelections& out) {
  const uint8_t* const begin = raw.data();
  const uint8_t* const end = begin + raw.size();
  const uint8_t* p = begin;
  out.begin_.resize(limits.size() + 1);
  out.begin_[0] = 0;
  size_t used = 0;
  for (size_t s = 0; s < limits.size(); ++s) {
    const uint32_t step = first_step + static_cast<uint32_t>(s);
    const uint32_t limit = limits[s];
    if (p == end) fail(begin, p, step, fmt::format("the segment ends before step {}", step));
    const uint32_t h = read_varint(p, end);
    if (p > end) fail(begin, end, step, "the step header is a malformed varint");
    const uint32_t count = h >> 1;
    // Every id takes at least one byte, so a count beyond the remaining bytes is corrupt; this
    // also bounds every allocation by the segment size.
    if (count > static_cast<size_t>(end - p)) {
      fail(begin, p, step,
           fmt::format("the step claims {} ids but only {} bytes remain", count, end - p));
    }
    if ((h & 1) == 0) {
      grow_to(out.ids_, used + count);
      uint64_t next;
      p = get_ids<0>(p, begin, end, step, count, out.ids_.data() + used, next);
      if (next > limit) {
        fail(begin, p, step,
             fmt::format("partition id {} is out of range: {} partitions exist at this step",
                         next - 1, limit));
      }
      used += count;
    } else {
      if (s == 0) fail(begin, begin, step, "the first step of a segment must be a keyframe");
      const size_t m = out.begin_[s] - out.begin_[s - 1];
      const size_t bitmap_bytes = (m + 7) / 8;
      if (bitmap_bytes > static_cast<size_t>(end - p)) {
        fail(begin, p, step,
             fmt::format("the keep bitmap needs {} bytes but only {} remain", bitmap_bytes,
                         end - p));
      }
      const uint8_t* bitmap = p;
      if (m % 8 != 0 && (bitmap[bitmap_bytes - 1] >> (m % 8)) != 0) {
        fail(begin, p + bitmap_bytes - 1, step, "the keep bitmap has bits set past its last id");
      }
      p += bitmap_bytes;
      grow_to(kept_, m + 2);
      grow_to(added_, size_t{count} + 2);
      grow_to(out.ids_, used + m + count);
      // kept[1, k] and add[1, count] hold ids + 1, with sentinels 0 before and kHigh after.
      const uint32_t* prev = out.ids_.data() + out.begin_[s - 1];
      uint32_t* kept = kept_.data();
      kept[0] = 0;
      size_t k = 0;
      for (size_t b = 0; b < m / 8; ++b) {
        const uint32_t bits = bitmap[b];
        const uint32_t* p8 = prev + 8 * b;
        for (int u = 0; u < 8; ++u) {
          kept[k + 1] = p8[u] + 1;
          k += (bits >> u) & 1;
        }
      }
      for (size_t i = m & ~size_t{7}; i < m; ++i) {
        kept[k + 1] = prev[i] + 1;
        k += (bitmap[i >> 3] >> (i & 7)) & 1;
      }
      uint32_t* add = added_.data();
      add[0] = 0;
      uint64_t next;
      p = get_ids<1>(p, begin, end, step, count, add + 1, next);
      if (next > limit) {
        fail(begin, p, step,
             fmt::format("added partition id {} is out of range: {} partitions exist at this step",
                         next - 1, limit));
      }
      kept[k + 1] = kHigh;
      add[count + 1] = kHigh;
      // Branch-free merge from both ends at once: the two chains are independent, which halves
      // the load-compare-advance latency that bounds a one-sided merge.
      uint32_t* o = out.ids_.data() + used;
      const size_t total = k + count;
      const uint32_t *fk = kept + 1, *fa = add + 1, *bk = kept + k, *ba = add + count;
      uint32_t *fo = o, *bo = o + total;
      for (size_t t = total / 2; t > 0; --t) {
        const uint32_t fx = *fk, fy = *fa;
        const bool f_added = fy < fx;
        *fo++ = (f_added ? fy : fx) - 1;
        fk += !f_added;
        fa += f_added;
        const uint32_t bx = *bk, by = *ba;
        const bool b_added = by > bx;
        *--bo = (b_added ? by : bx) - 1;
        bk -= !b_added;
        ba -= b_added;
      }
      if (total % 2 == 1) *fo = std::min(*fk, *fa) - 1;
      // An added id that is also kept shows up as two equal neighbours.
      uint32_t not_ascending = 0;
      for (size_t t = 1; t < total; ++t) not_ascending |= o[t] <= o[t - 1];
      if (not_ascending) fail(begin, p, step, "an added partition id is also a kept one");
      used += total;
    }
    if (used > std::numeric_limits<uint32_t>::max()) {
      fail(begin, p, step, "more than 2^32 - 1 ids in one segment");
    }
    out.begin_[s + 1] = static_cast<uint32_t>(used);
  }
  if (p != end) {
    fail(begin, p, first_step + static_cast<uint32_t>(limits.size()) - 1,
         fmt::format("{} bytes follow the last step of the segment", end - p));
  }
}

void encode_partition_map(const PartitionMap& map, std::vector<uint8_t>& out) {
  const auto put_lengths = [&](uint32_t first, uint32_t last) {
    put_varint(out, last - first);
    for (uint32_t len : map.cluster_tokens(first, last)) put_varint(out, len);
  };
  put_lengths(0, map.initial_clusters());
  put_varint(out, static_cast<uint32_t>(map.growth().size()));
  uint32_t first = map.initial_clusters();
  for (const PartitionMap::Growth& g : map.growth()) {
    put_varint(out, g.step);
    put_lengths(first, g.clusters);
    first = g.clusters;
  }
}

PartitionMap decode_partition_map(std::span<const uint8_t> raw, uint32_t prompt_tokens,
                                  uint32_t decode_steps) {
  const uint8_t* const begin = raw.data();
  const uint8_t* const end = begin + raw.size();
  const uint8_t* p = begin;
  std::vector<uint32_t> lengths;
  const auto fail_at = [&](const uint8_t* at, std::string_view what) {
    throw InputError(fmt::format("partition map, segment byte {}: {}", at - begin, what));
  };
  const auto get = [&](std::string_view what) {
    if (p >= end) fail_at(end, fmt::format("the segment ends before {}", what));
    const uint8_t* at = p;
    const uint32_t v = read_varint(p, end);
    if (p > end) fail_at(at, fmt::format("{} is a malformed varint", what));
    return v;
  };
  const auto get_lengths = [&] {
    const uint32_t n = get("a cluster count");
    if (n > static_cast<size_t>(end - p)) {
      fail_at(p, fmt::format("{} clusters claimed but only {} bytes remain", n, end - p));
    }
    lengths.resize(n);
    for (uint32_t& len : lengths) len = get("a cluster length");
  };
  const uint8_t* at = p;
  get_lengths();
  PartitionMap map;
  try {
    map = PartitionMap(lengths, prompt_tokens);
  } catch (const InputError& e) {
    fail_at(at, e.what());
  }
  const uint32_t events = get("the growth count");
  for (uint32_t e = 0; e < events; ++e) {
    at = p;
    const uint32_t step = get("a growth step");
    if (step >= decode_steps) {
      fail_at(at, fmt::format("growth at step {} is past the last recorded step {}", step,
                              static_cast<int64_t>(decode_steps) - 1));
    }
    get_lengths();
    try {
      map.grow(step, lengths);
    } catch (const InputError& e) {
      fail_at(at, e.what());
    }
  }
  if (p != end) fail_at(p, fmt::format("{} bytes follow the last growth event", end - p));
  return map;
}

}  // namespace spin::trace::codec
