// Paged decode attention (exec/paged_attention.h) against a naive CPU float64 reference: fresh
// random bf16 inputs each case, page lists scattered over the pool, the output poisoned (NaN)
// before each run, and every token row that no list may read (unlisted slots, the tail of each
// last page) set to NaN, so that a stray read or an unwritten output shows up as NaN, which
// never passes. Pass: ‖out − ref‖ / ‖ref‖ ≤ 1e-2 over the whole output and over every row.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "exec/cuda_check.h"
#include "exec/memory.h"
#include "exec/paged_attention.h"
#include "tests/gpu/bf16.h"

using spin::test::from_bf16;
using spin::test::kNaN;
using spin::test::to_bf16;

namespace {

using spin::exec::DecodeAttention;
using spin::exec::DecodeAttentionArgs;
using spin::exec::DecodeAttentionOptions;
using spin::exec::DecodeAttentionShape;
using spin::exec::DeviceArray;
using spin::exec::HbmPagePool;

constexpr std::uint32_t kHeadDim = 128;

// One problem: page lists of `tokens[r]` tokens per row on a pool with scattered slots.
struct Problem {
  DecodeAttentionShape shape;
  std::vector<std::uint32_t> tokens;  // [rows]
  std::vector<std::uint32_t> indptr, indices, last;
  std::vector<std::uint16_t> pool;  // [slots, 2, page_tokens, head_dim]
  std::vector<std::uint16_t> q;     // [batch, kv_heads · group, head_dim]
  std::uint32_t slots = 0;
};

std::uint64_t page_elems(const DecodeAttentionShape& s) {
  return 2ull * s.page_tokens * s.head_dim;
}

// Lists over random distinct slots (a tenth of the pool stays unlisted); dense: slots in order.
Problem make_problem(const DecodeAttentionShape& shape, std::vector<std::uint32_t> tokens,
                     bool dense, std::mt19937_64& rng) {
  Problem p;
  p.shape = shape;
  p.tokens = std::move(tokens);
  const std::uint32_t rows = shape.rows();
  REQUIRE(p.tokens.size() == rows);
  std::uint32_t pages = 0;
  for (const std::uint32_t t : p.tokens) pages += (t + shape.page_tokens - 1) / shape.page_tokens;
  p.slots = dense ? pages : pages + pages / 10 + 3;
  std::vector<std::uint32_t> order(p.slots);
  std::iota(order.begin(), order.end(), 0u);
  if (!dense) std::shuffle(order.begin(), order.end(), rng);
  std::uniform_real_distribution<float> kv(-1.f, 1.f), qd(-2.f, 2.f);
  p.pool.assign(p.slots * page_elems(shape), kNaN);
  p.indptr.assign(1, 0);
  std::uint32_t next = 0;
  for (std::uint32_t r = 0; r < rows; ++r) {
    const std::uint32_t t = p.tokens[r];
    const std::uint32_t n = (t + shape.page_tokens - 1) / shape.page_tokens;
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::uint32_t slot = order[next++];
      p.indices.push_back(slot);
      const std::uint32_t valid = i + 1 < n ? shape.page_tokens : t - i * shape.page_tokens;
      std::uint16_t* page = p.pool.data() + slot * page_elems(shape);
      for (std::uint32_t kv_half = 0; kv_half < 2; ++kv_half) {
        std::uint16_t* base = page + kv_half * shape.page_tokens * shape.head_dim;
        for (std::uint32_t e = 0; e < valid * shape.head_dim; ++e) base[e] = to_bf16(kv(rng));
      }
    }
    p.indptr.push_back(static_cast<std::uint32_t>(p.indices.size()));
    p.last.push_back(t - (n - 1) * shape.page_tokens);
  }
  p.q.resize(std::uint64_t{shape.batch} * shape.query_heads() * shape.head_dim);
  for (auto& x : p.q) x = to_bf16(qd(rng));
  return p;
}

// Float64 reference: [batch, query heads, head_dim].
std::vector<double> reference(const Problem& p) {
  const DecodeAttentionShape& s = p.shape;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  std::vector<double> out(p.q.size());
  std::vector<double> scores;
  for (std::uint32_t r = 0; r < s.rows(); ++r) {
    const std::uint32_t t = p.tokens[r];
    const auto k_row = [&](std::uint32_t x) {
      const std::uint32_t slot = p.indices[p.indptr[r] + x / s.page_tokens];
      return p.pool.data() + slot * page_elems(s) + (x % s.page_tokens) * s.head_dim;
    };
    for (std::uint32_t h = 0; h < s.group; ++h) {
      const std::uint64_t qh = std::uint64_t{r} * s.group + h;
      const std::uint16_t* q = p.q.data() + qh * s.head_dim;
      scores.assign(t, 0);
      double m = -INFINITY;
      for (std::uint32_t x = 0; x < t; ++x) {
        const std::uint16_t* k = k_row(x);
        double dot = 0;
        for (std::uint32_t d = 0; d < s.head_dim; ++d) dot += from_bf16(q[d]) * from_bf16(k[d]);
        scores[x] = dot * scale;
        m = std::max(m, scores[x]);
      }
      double sum = 0;
      double* o = out.data() + qh * s.head_dim;
      for (std::uint32_t x = 0; x < t; ++x) {
        const double w = std::exp(scores[x] - m);
        sum += w;
        const std::uint16_t* v = k_row(x) + s.page_tokens * s.head_dim;
        for (std::uint32_t d = 0; d < s.head_dim; ++d) o[d] += w * from_bf16(v[d]);
      }
      for (std::uint32_t d = 0; d < s.head_dim; ++d) o[d] /= sum;
    }
  }
  return out;
}

struct Checked {
  double error;      // over the whole output
  double worst_row;  // the largest per-row relative error
};

// Runs the kernel on `p` (output poisoned first) and compares with `ref`. With slot_base > 0 the
// problem's slots sit at slot_base and up in a larger pool whose other slots are NaN, and the
// lists name them there.
Checked run_and_check(const Problem& p, const std::vector<double>& ref,
                      const DecodeAttentionOptions& options, std::uint32_t slot_base = 0) {
  HbmPagePool pool(slot_base + p.slots, p.shape.page_bytes());
  if (slot_base > 0) pool.fill(0xFF);  // NaN in bf16
  SPIN_CUDA_CHECK(
      cudaMemcpy(pool.slot(slot_base), p.pool.data(), p.pool.size() * 2, cudaMemcpyHostToDevice));
  std::vector<std::uint32_t> listed = p.indices;
  for (auto& slot : listed) slot += slot_base;
  const DeviceArray<std::uint16_t> q{std::span<const std::uint16_t>(p.q)};
  const DeviceArray<std::uint32_t> indptr{std::span<const std::uint32_t>(p.indptr)};
  const DeviceArray<std::uint32_t> indices{std::span<const std::uint32_t>(listed)};
  const DeviceArray<std::uint32_t> last{std::span<const std::uint32_t>(p.last)};
  DeviceArray<std::uint16_t> out(p.q.size());
  DecodeAttention attention;
  attention.plan(p.shape, p.indptr, p.last, options);
  // Two runs of one plan: the fused merge's per-row counters must be back at zero for the second.
  Checked result{0, 0};
  for (int run = 0; run < 2; ++run) {
    out.fill_bytes(0xFF);  // NaN in bf16
    attention.run(DecodeAttentionArgs{q.data(), pool.data(), indptr.data(), indices.data(),
                                      last.data(), out.data()});
    SPIN_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<std::uint16_t> got(p.q.size());
    out.download(got);
    const std::uint64_t row_elems = std::uint64_t{p.shape.group} * p.shape.head_dim;
    double diff2 = 0, ref2 = 0, worst = 0;
    for (std::uint32_t r = 0; r < p.shape.rows(); ++r) {
      double rd = 0, rr = 0;
      for (std::uint64_t i = r * row_elems; i < (r + 1) * row_elems; ++i) {
        const double e = from_bf16(got[i]) - ref[i];
        rd += e * e;
        rr += ref[i] * ref[i];
      }
      const double row_error = std::sqrt(rd / rr);
      worst = std::isnan(row_error) || std::isnan(worst) ? NAN : std::max(worst, row_error);
      diff2 += rd;
      ref2 += rr;
    }
    const double error = std::sqrt(diff2 / ref2);
    result.error =
        std::isnan(error) || std::isnan(result.error) ? NAN : std::max(result.error, error);
    result.worst_row =
        std::isnan(worst) || std::isnan(result.worst_row) ? NAN : std::max(result.worst_row, worst);
  }
  return result;
}

void check_problem(const Problem& p, const std::vector<DecodeAttentionOptions>& variants,
                   std::uint32_t slot_base = 0) {
  const std::vector<double> ref = reference(p);
  for (const DecodeAttentionOptions& o : variants) {
    const Checked c = run_and_check(p, ref, o, slot_base);
    INFO("batch " << p.shape.batch << " group " << p.shape.group << " page_tokens "
                  << p.shape.page_tokens << " slot base " << slot_base << " split_tokens "
                  << o.split_tokens << " prefetch " << o.prefetch << " l2 " << o.l2_prefetch_chunks
                  << " fused merge " << o.fused_merge << " error " << c.error << " worst row "
                  << c.worst_row);
    CHECK(c.error <= 1e-2);  // false for NaN
    CHECK(c.worst_row <= 1e-2);
  }
}

// The default (register prefetch, merge kernel), the same with the fused merge, registers and L2
// prefetch, L2 only (fused merge), neither.
const std::vector<DecodeAttentionOptions> kAutoSplit = {{0, true, 0, false},
                                                        {0, true, 0, true},
                                                        {0, true, 2, false},
                                                        {0, false, 3, true},
                                                        {0, false, 0, false}};

}  // namespace

TEST_CASE(
    "decode attention: sparse page lists match the float64 reference (GQA 1/5/8, pages "
    "8/16/32, partial last pages)",
    "[gpu][attention]") {
  std::mt19937_64 rng(21);
  const std::uint32_t batches[] = {1, 7, 64};
  int combo = 0;
  for (const std::uint32_t group : {1u, 5u, 8u}) {
    for (const std::uint32_t page_tokens : {8u, 16u, 32u}) {
      const std::uint32_t batch = batches[combo++ % 3];
      const DecodeAttentionShape shape{batch, 8, group, kHeadDim, page_tokens};
      std::vector<std::uint32_t> tokens(shape.rows());
      // batch 1: long selections up to 16K; 7: up to 4K; 64: short ones, single pages included.
      const std::uint32_t most = batch == 1 ? 16384 : batch == 7 ? 4096 : 600;
      for (std::uint32_t r = 0; r < shape.rows(); ++r) {
        tokens[r] = 1 + static_cast<std::uint32_t>(rng() % most);
        if (r % 5 == 1) tokens[r] = 1 + static_cast<std::uint32_t>(rng() % page_tokens);
      }
      if (batch == 1) tokens[0] = 16384;
      const Problem p = make_problem(shape, tokens, false, rng);
      check_problem(p, kAutoSplit);
    }
  }
}

TEST_CASE("decode attention: page sizes 1, 4, 64, 256 and 4096 tokens", "[gpu][attention]") {
  // Pages below the 8-token chunk (several pages per chunk and the L2 prefetch's lane math),
  // and above it (several chunks per page, items that split inside a page).
  std::mt19937_64 rng(25);
  for (const std::uint32_t page_tokens : {1u, 4u, 64u, 256u, 4096u}) {
    const DecodeAttentionShape shape{4, 8, 5, kHeadDim, page_tokens};
    std::vector<std::uint32_t> tokens(shape.rows());
    for (std::uint32_t r = 0; r < shape.rows(); ++r) {
      tokens[r] = 1 + static_cast<std::uint32_t>(rng() % 6000);
      if (r % 7 == 3) tokens[r] = 1 + static_cast<std::uint32_t>(rng() % page_tokens);
    }
    const Problem p = make_problem(shape, tokens, false, rng);
    std::vector<DecodeAttentionOptions> variants = kAutoSplit;
    variants.push_back({std::max(page_tokens, 64u), true, 2, false});  // many items per row
    check_problem(p, variants);
  }
}

TEST_CASE("decode attention: split-KV items merge to the unsplit output", "[gpu][attention]") {
  std::mt19937_64 rng(22);
  for (const std::uint32_t page_tokens : {8u, 32u}) {
    const DecodeAttentionShape shape{3, 8, 5, kHeadDim, page_tokens};
    std::vector<std::uint32_t> tokens(shape.rows());
    for (auto& t : tokens) t = 1 + static_cast<std::uint32_t>(rng() % 3000);
    tokens[2] = page_tokens * 7;  // a full last page
    const Problem p = make_problem(shape, tokens, false, rng);
    // One page per item (the most items), odd page counts, one item per row.
    check_problem(p, {{page_tokens, true, 0, true},
                      {page_tokens, true, 0, false},
                      {page_tokens, false, 0, true},
                      {page_tokens * 3, true, 2, true},
                      {40, false, 0, false},
                      {1u << 20, true, 0, true}});
  }
}

TEST_CASE("decode attention: single-page lists, every fill of the page", "[gpu][attention]") {
  std::mt19937_64 rng(23);
  for (const std::uint32_t page_tokens : {8u, 16u, 32u}) {
    const DecodeAttentionShape shape{4, 8, 8, kHeadDim, page_tokens};
    std::vector<std::uint32_t> tokens(shape.rows());
    for (std::uint32_t r = 0; r < shape.rows(); ++r) tokens[r] = 1 + r % page_tokens;
    const Problem p = make_problem(shape, tokens, false, rng);
    check_problem(p, kAutoSplit);
  }
}

TEST_CASE("decode attention: dense page lists (all pages of each request)", "[gpu][attention]") {
  std::mt19937_64 rng(24);
  const std::vector<std::uint32_t> request_tokens = {16384, 5000, 1, 333};
  const DecodeAttentionShape shape{4, 8, 5, kHeadDim, 16};
  std::vector<std::uint32_t> tokens(shape.rows());
  for (std::uint32_t r = 0; r < shape.rows(); ++r) tokens[r] = request_tokens[r / 8];
  const Problem p = make_problem(shape, tokens, true, rng);
  // dense_page_lists gives the same lists as the problem's contiguous slots.
  std::vector<std::uint32_t> first(shape.rows()), indptr, indices, last;
  for (std::uint32_t r = 0; r < shape.rows(); ++r) first[r] = p.indices[p.indptr[r]];
  spin::exec::dense_page_lists(request_tokens, 8, 16, first, indptr, indices, last);
  CHECK(indptr == p.indptr);
  CHECK(indices == p.indices);
  CHECK(last == p.last);
  check_problem(p, kAutoSplit);
}

TEST_CASE("decode attention: plan rejects unsupported shapes and invalid lists",
          "[gpu][attention]") {
  DecodeAttention a;
  const std::vector<std::uint32_t> indptr = {0, 2}, last = {3};
  CHECK_THROWS_AS(a.plan({1, 1, 1, 64, 16}, indptr, last), std::invalid_argument);
  CHECK_THROWS_AS(a.plan({1, 1, 17, 128, 16}, indptr, last), std::invalid_argument);
  CHECK_THROWS_AS(a.plan({1, 1, 1, 128, 12}, indptr, last), std::invalid_argument);
  CHECK_THROWS_AS(a.plan({1, 1, 1, 128, 16}, std::vector<std::uint32_t>{0, 0}, last),
                  std::invalid_argument);
  CHECK_THROWS_AS(a.plan({1, 1, 1, 128, 16}, indptr, std::vector<std::uint32_t>{0}),
                  std::invalid_argument);
  CHECK_THROWS_AS(a.plan({1, 1, 1, 128, 16}, indptr, std::vector<std::uint32_t>{17}),
                  std::invalid_argument);
  CHECK_THROWS_AS(a.plan({2, 1, 1, 128, 16}, indptr, last), std::invalid_argument);
  CHECK_NOTHROW(a.plan({1, 1, 1, 128, 16}, indptr, last));
  CHECK(a.work_items() == 1);
}

TEST_CASE("decode attention: GQA groups above 8 use the MMA's upper rows", "[gpu][attention]") {
  std::mt19937_64 rng(25);
  for (const std::uint32_t group : {9u, 12u, 16u}) {
    const DecodeAttentionShape shape{2, 8, group, kHeadDim, 16};
    std::vector<std::uint32_t> tokens(shape.rows());
    for (auto& t : tokens) t = 1 + static_cast<std::uint32_t>(rng() % 2500);
    const Problem p = make_problem(shape, tokens, false, rng);
    check_problem(p, kAutoSplit);
  }
}

TEST_CASE("decode attention: a pool past 8 GiB (offsets above 2^32 bytes and elements)",
          "[gpu][attention]") {
  // The listed slots straddle the 8 GiB mark (2^32 bf16 elements) of a pool whose other slots
  // are NaN: an offset computed in 32 bits, in bytes or in elements, reads a NaN slot.
  std::mt19937_64 rng(26);
  for (const std::uint32_t page_tokens : {16u, 4096u}) {
    const DecodeAttentionShape shape{2, 8, 5, kHeadDim, page_tokens};
    std::vector<std::uint32_t> tokens(shape.rows());
    for (auto& t : tokens) t = 1 + static_cast<std::uint32_t>(rng() % 3000);
    const Problem p = make_problem(shape, tokens, false, rng);
    const std::uint64_t mark = (std::uint64_t{1} << 33) / shape.page_bytes();
    check_problem(p, {{0, true, 0, false}, {0, true, 2, true}},
                  static_cast<std::uint32_t>(mark - p.slots / 2));
  }
}
