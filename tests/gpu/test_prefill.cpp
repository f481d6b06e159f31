// Causal prefill attention (exec/prefill_attention.h) against a naive CPU float64 reference:
// fresh random bf16 inputs each case (fixed seeds), several requests per launch, chunked prefill
// (q_len < kv_len), every tiling (mma.sync and wgmma kernels). The output and the LSE are poisoned
// (NaN) before each run, and q, k and v carry NaN rows past their last token, so that an unwritten
// output or a stray read shows up as NaN, which never passes. Pass: ‖out − ref‖ / ‖ref‖ ≤ 1e-2 over
// the whole output and over every (query, head) row; |lse − ref| ≤ 1e-3; the guard rows of out stay
// untouched.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "exec/cuda_check.h"
#include "exec/memory.h"
#include "exec/prefill_attention.h"
#include "tests/gpu/bf16.h"

using spin::test::from_bf16;
using spin::test::kNaN;
using spin::test::to_bf16;

namespace {

using spin::exec::DeviceArray;
using spin::exec::PrefillAttention;
using spin::exec::PrefillAttentionArgs;
using spin::exec::PrefillAttentionOptions;
using spin::exec::PrefillAttentionShape;
using spin::exec::PrefillTiling;

constexpr std::uint32_t kHeadDim = 128;
constexpr std::uint32_t kGuardRows = 70;  // NaN rows after the last token of q, k, v and out

const PrefillTiling kTilings[] = {PrefillTiling::kQ128W4,   PrefillTiling::kQ128W8,
                                  PrefillTiling::kQ64W4,    PrefillTiling::kQ256W8,
                                  PrefillTiling::kWgmma128, PrefillTiling::kWgmma128Staggered};

// Requests as (q_len, kv_len) pairs, packed: q [total_q, q_heads, 128], k, v [total_kv, kv_heads,
// 128], each followed by kGuardRows NaN rows.
struct Problem {
  PrefillAttentionShape shape;
  std::vector<std::uint32_t> cu_q, cu_k;
  std::vector<std::uint16_t> q, k, v;
  double scale = 0;
};

Problem make_problem(const PrefillAttentionShape& shape,
                     const std::vector<std::pair<std::uint32_t, std::uint32_t>>& requests,
                     std::mt19937_64& rng, float q_range = 4.f) {
  Problem p;
  p.shape = shape;
  p.cu_q.assign(1, 0);
  p.cu_k.assign(1, 0);
  for (const auto& [q_len, kv_len] : requests) {
    p.cu_q.push_back(p.cu_q.back() + q_len);
    p.cu_k.push_back(p.cu_k.back() + kv_len);
  }
  const std::uint64_t q_row = std::uint64_t{shape.query_heads()} * kHeadDim;
  const std::uint64_t kv_row = std::uint64_t{shape.kv_heads} * kHeadDim;
  std::uniform_real_distribution<float> kv(-1.f, 1.f), qd(-q_range, q_range);
  p.q.assign((p.cu_q.back() + kGuardRows) * q_row, kNaN);
  p.k.assign((p.cu_k.back() + kGuardRows) * kv_row, kNaN);
  p.v.assign(p.k.size(), kNaN);
  for (std::uint64_t i = 0; i < p.cu_q.back() * q_row; ++i) p.q[i] = to_bf16(qd(rng));
  for (std::uint64_t i = 0; i < p.cu_k.back() * kv_row; ++i) {
    p.k[i] = to_bf16(kv(rng));
    p.v[i] = to_bf16(kv(rng));
  }
  p.scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  return p;
}

struct Reference {
  std::vector<double> out;  // [total_q, q_heads, 128]
  std::vector<double> lse;  // [total_q, q_heads]
};

Reference reference(const Problem& p) {
  const PrefillAttentionShape& s = p.shape;
  const std::uint32_t heads = s.query_heads();
  Reference ref;
  ref.out.assign(std::uint64_t{p.cu_q.back()} * heads * kHeadDim, 0);
  ref.lse.assign(std::uint64_t{p.cu_q.back()} * heads, 0);
  std::vector<double> scores;
  for (std::size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
    const std::uint32_t q_len = p.cu_q[b + 1] - p.cu_q[b], kv_len = p.cu_k[b + 1] - p.cu_k[b];
    for (std::uint32_t i = 0; i < q_len; ++i) {
      const std::uint32_t keys = kv_len - q_len + i + 1;
      const std::uint64_t row = p.cu_q[b] + i;
      for (std::uint32_t h = 0; h < heads; ++h) {
        const std::uint16_t* q = p.q.data() + (row * heads + h) * kHeadDim;
        const std::uint32_t kvh = h / s.group;
        scores.assign(keys, 0);
        double m = -INFINITY;
        for (std::uint32_t j = 0; j < keys; ++j) {
          const std::uint16_t* k =
              p.k.data() + ((std::uint64_t{p.cu_k[b]} + j) * s.kv_heads + kvh) * kHeadDim;
          double dot = 0;
          for (std::uint32_t d = 0; d < kHeadDim; ++d) dot += from_bf16(q[d]) * from_bf16(k[d]);
          scores[j] = dot * p.scale;
          m = std::max(m, scores[j]);
        }
        double sum = 0;
        double* o = ref.out.data() + (row * heads + h) * kHeadDim;
        for (std::uint32_t j = 0; j < keys; ++j) {
          const double w = std::exp(scores[j] - m);
          sum += w;
          const std::uint16_t* v =
              p.v.data() + ((std::uint64_t{p.cu_k[b]} + j) * s.kv_heads + kvh) * kHeadDim;
          for (std::uint32_t d = 0; d < kHeadDim; ++d) o[d] += w * from_bf16(v[d]);
        }
        for (std::uint32_t d = 0; d < kHeadDim; ++d) o[d] /= sum;
        ref.lse[row * heads + h] = m + std::log(sum);
      }
    }
  }
  return ref;
}

double nan_max(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

struct Checked {
  double error;      // over the whole output
  double worst_row;  // the largest per-(query, head) relative error
  double lse_error;  // the largest |lse − ref| (0 when lse is not asked for)
  bool guard_intact;
};

Checked run_and_check(const Problem& p, const Reference& ref, const PrefillAttentionOptions& o,
                      bool with_lse) {
  const DeviceArray<std::uint16_t> q{std::span<const std::uint16_t>(p.q)};
  const DeviceArray<std::uint16_t> k{std::span<const std::uint16_t>(p.k)};
  const DeviceArray<std::uint16_t> v{std::span<const std::uint16_t>(p.v)};
  const std::uint32_t heads = p.shape.query_heads();
  const std::uint64_t rows = p.cu_q.back();
  DeviceArray<std::uint16_t> out(p.q.size());
  DeviceArray<float> lse((rows + kGuardRows) * heads);
  PrefillAttention attention;
  attention.plan(p.shape, p.cu_q, p.cu_k, o);
  Checked c{0, 0, 0, true};
  for (int run = 0; run < 2; ++run) {  // two runs of one plan
    out.fill_bytes(0xFF);              // NaN in bf16
    lse.fill_bytes(0xFF);              // NaN in fp32
    attention.run(PrefillAttentionArgs{q.data(), k.data(), v.data(), out.data(),
                                       with_lse ? lse.data() : nullptr,
                                       static_cast<float>(p.scale)});
    SPIN_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<std::uint16_t> got(out.size());
    out.download(got);
    double diff2 = 0, ref2 = 0;
    for (std::uint64_t r = 0; r < rows * heads; ++r) {
      double rd = 0, rr = 0;
      for (std::uint64_t i = r * kHeadDim; i < (r + 1) * kHeadDim; ++i) {
        const double e = from_bf16(got[i]) - ref.out[i];
        rd += e * e;
        rr += ref.out[i] * ref.out[i];
      }
      c.worst_row = nan_max(c.worst_row, std::sqrt(rd / rr));
      diff2 += rd;
      ref2 += rr;
    }
    c.error = nan_max(c.error, std::sqrt(diff2 / ref2));
    for (std::uint64_t i = rows * heads * kHeadDim; i < got.size(); ++i)
      c.guard_intact = c.guard_intact && got[i] == 0xFFFF;
    if (with_lse) {
      std::vector<float> got_lse(lse.size());
      lse.download(got_lse);
      for (std::uint64_t i = 0; i < rows * heads; ++i)
        c.lse_error = nan_max(c.lse_error, std::abs(got_lse[i] - ref.lse[i]));
    }
  }
  return c;
}

void check_problem(const Problem& p, bool with_lse = true) {
  const Reference ref = reference(p);
  for (const PrefillTiling tiling : kTilings) {
    const Checked c = run_and_check(p, ref, PrefillAttentionOptions{tiling}, with_lse);
    std::string lens;
    for (std::size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
      lens += std::to_string(p.cu_q[b + 1] - p.cu_q[b]) + "/" +
              std::to_string(p.cu_k[b + 1] - p.cu_k[b]) + " ";
    }
    INFO("q_len/kv_len " << lens << "kv_heads " << p.shape.kv_heads << " group " << p.shape.group
                         << " tiling " << static_cast<int>(tiling) << " error " << c.error
                         << " worst row " << c.worst_row << " lse error " << c.lse_error);
    CHECK(c.error <= 1e-2);  // false for NaN
    CHECK(c.worst_row <= 1e-2);
    CHECK(c.lse_error <= 1e-3);
    CHECK(c.guard_intact);
  }
}

}  // namespace

TEST_CASE(
    "prefill attention: single prompts of lengths off the tile match the float64 reference "
    "(GQA 1/5/8, every tiling)",
    "[gpu][prefill]") {
  std::mt19937_64 rng(31);
  for (const std::uint32_t group : {1u, 5u, 8u}) {
    for (const std::uint32_t len : {1u, 17u, 64u, 200u, 333u}) {
      const Problem p = make_problem({2, group, kHeadDim}, {{len, len}}, rng);
      check_problem(p);
    }
  }
}

TEST_CASE("prefill attention: several requests of different lengths in one launch",
          "[gpu][prefill]") {
  std::mt19937_64 rng(32);
  const Problem p = make_problem(
      {2, 5, kHeadDim}, {{333, 333}, {1, 1}, {200, 200}, {17, 17}, {129, 129}, {64, 64}}, rng);
  check_problem(p);
}

TEST_CASE("prefill attention: chunked prefill (q_len < kv_len) and empty chunks",
          "[gpu][prefill]") {
  std::mt19937_64 rng(33);
  const Problem p =
      make_problem({2, 8, kHeadDim},
                   {{17, 300}, {128, 328}, {1, 77}, {200, 200}, {0, 5}, {64, 1000}, {3, 3}}, rng);
  check_problem(p);
}

TEST_CASE("prefill attention: a 1200-token prompt over many key tiles, peaky softmax",
          "[gpu][prefill]") {
  std::mt19937_64 rng(34);
  const Problem p = make_problem({1, 5, kHeadDim}, {{1200, 1200}}, rng, 12.f);
  check_problem(p);
  check_problem(p, false);  // lse not asked for: null pointer, nothing written
}

TEST_CASE("prefill attention: an explicit softmax scale, GQA 2, a chunk after a cached prefix",
          "[gpu][prefill]") {
  std::mt19937_64 rng(35);
  Problem p = make_problem({3, 2, kHeadDim}, {{150, 300}, {77, 77}}, rng);
  p.scale = 0.05;
  check_problem(p);
}

TEST_CASE("prefill attention: plan and run reject bad shapes and offsets", "[gpu][prefill]") {
  PrefillAttention a;
  const std::vector<std::uint32_t> cu = {0, 10}, cu2 = {0, 10, 20};
  CHECK_THROWS_AS(a.run(PrefillAttentionArgs{nullptr, nullptr, nullptr, nullptr}),
                  std::logic_error);
  CHECK_THROWS_AS(a.plan({8, 5, 64}, cu, cu), std::invalid_argument);    // head_dim
  CHECK_THROWS_AS(a.plan({8, 0, 128}, cu, cu), std::invalid_argument);   // group 0
  CHECK_THROWS_AS(a.plan({8, 17, 128}, cu, cu), std::invalid_argument);  // group > 16
  CHECK_THROWS_AS(a.plan({0, 5, 128}, cu, cu), std::invalid_argument);   // no KV heads
  CHECK_THROWS_AS(a.plan({8, 5, 128}, cu, cu2), std::invalid_argument);  // sizes differ
  CHECK_THROWS_AS(a.plan({8, 5, 128}, std::vector<std::uint32_t>{0}, std::vector<std::uint32_t>{0}),
                  std::invalid_argument);  // no request
  CHECK_THROWS_AS(a.plan({8, 5, 128}, std::vector<std::uint32_t>{1, 10}, cu),
                  std::invalid_argument);  // not starting at 0
  CHECK_THROWS_AS(a.plan({8, 5, 128}, std::vector<std::uint32_t>{0, 11}, cu),
                  std::invalid_argument);  // q_len > kv_len
  CHECK_THROWS_AS(a.plan({8, 5, 128}, std::vector<std::uint32_t>{0, 10, 5}, cu2),
                  std::invalid_argument);  // decreasing
  CHECK_THROWS_AS(
      a.plan({8, 5, 128}, cu, cu, PrefillAttentionOptions{static_cast<PrefillTiling>(7)}),
      std::invalid_argument);
  const std::vector<std::uint32_t> huge = {0, 70000u * 128u};
  CHECK_THROWS_AS(a.plan({8, 5, 128}, huge, huge), std::invalid_argument);  // > 65535 tiles
  const std::vector<std::uint32_t> cu300 = {0, 300};
  CHECK_NOTHROW(a.plan({8, 5, 128}, cu300, cu300));
  CHECK(a.tiles() == 3);
  CHECK(a.causal_pairs() == 300.0 * 301.0 / 2);
  DeviceArray<std::uint16_t> buf(64);
  CHECK_THROWS_AS(a.run(PrefillAttentionArgs{buf.data() + 1, buf.data(), buf.data(), buf.data()}),
                  std::invalid_argument);  // misaligned
  CHECK_THROWS_AS(
      a.run(PrefillAttentionArgs{buf.data(), buf.data(), buf.data(), buf.data(), nullptr, -1.f}),
      std::invalid_argument);  // negative scale
}
