// Selection (exec/selection.h) against naive CPU references written here: fresh random bf16
// inputs each case (fixed seeds), the score buffer and the selection poisoned before each run.
// - Scores: float64 from the same bf16 inputs; every score within eps_r of the reference, where
//   eps_r bounds the GPU's rounding for that row (fp32 accumulation on tensor cores: 1e-4 · Σ|q·s|;
//   Seer: 2^-7 · Σ|q_gate·s|, its bf16 gate query differing from the reference's rounding by an
//   ulp at most), and ‖s − ref‖/‖ref‖ ≤ 1e-2 per row. NaN fails. Seer's reference rounds its
//   float64 gate query to bf16 as the contract does; the GPU's gate queries are checked against
//   the unrounded ones (2^-8 relative plus fp32 accumulation).
// - Top-k: exactly k_r = min(k, n_r) distinct indices, ascending, all < n_r; every selected
//   partition's reference score ≥ kth_ref − eps_r and every unselected one's ≤ kth_ref + eps_r
//   (the sets agree except within eps of the k-th score); and the selection equals, exactly,
//   the top-k of the GPU's own scores under the tie rule (higher score, then lower index).
// - Summary builders: against CPU means (bf16 rounding bound), min/max (exact) and Seer's
//   pooled projection, with every K row that no job may read set to NaN.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "exec/cuda_check.h"
#include "exec/memory.h"
#include "exec/selection.h"
#include "tests/gpu/bf16.h"

using spin::test::from_bf16;
using spin::test::kNaN;
using spin::test::to_bf16;

namespace {

using spin::exec::ClusterPages;
using spin::exec::ClusterPagesArgs;
using spin::exec::DeviceArray;
using spin::exec::HbmPagePool;
using spin::exec::Selection;
using spin::exec::selection_algorithm_name;
using spin::exec::SelectionAlgorithm;
using spin::exec::SelectionArgs;
using spin::exec::SelectionOptions;
using spin::exec::SelectionShape;
using spin::exec::SummaryBuildArgs;
using spin::exec::SummaryBuilder;
using spin::exec::SummaryJob;

constexpr std::uint32_t kHeadDim = 128;
constexpr std::uint32_t kGate = spin::exec::kSeerGateDim;

struct Problem {
  SelectionShape shape;
  std::vector<std::uint32_t> indptr;     // [rows + 1]
  std::vector<std::uint32_t> k;          // [rows]
  std::vector<std::uint16_t> q;          // [rows, group, 128]
  std::vector<std::uint16_t> summaries;  // [partitions, summary_dim]
  std::vector<std::uint16_t> w_q;        // Seer: [group · 128, 128]
};

// Random summaries for rows of `n[r]` partitions; Quest's min ≤ max per dim.
Problem make_problem(SelectionAlgorithm algorithm, std::uint32_t batch, std::uint32_t group,
                     const std::vector<std::uint32_t>& n, const std::vector<std::uint32_t>& k,
                     std::mt19937_64& rng) {
  Problem p;
  p.shape = SelectionShape{algorithm, batch, 8, group, kHeadDim};
  const std::uint32_t rows = p.shape.rows();
  REQUIRE(n.size() == rows);
  REQUIRE(k.size() == rows);
  p.indptr.assign(1, 0);
  for (const std::uint32_t c : n) p.indptr.push_back(p.indptr.back() + c);
  p.k = k;
  std::uniform_real_distribution<float> unit(-1.f, 1.f), qd(-2.f, 2.f);
  p.q.resize(std::uint64_t{rows} * group * kHeadDim);
  for (auto& x : p.q) x = to_bf16(qd(rng));
  const std::uint32_t dim = p.shape.summary_dim();
  p.summaries.resize(std::uint64_t{p.indptr.back()} * dim);
  if (algorithm == SelectionAlgorithm::kQuest) {
    for (std::uint64_t x = 0; x < p.indptr.back(); ++x) {
      for (std::uint32_t d = 0; d < kHeadDim; ++d) {
        float a = unit(rng), b = unit(rng);
        if (a > b) std::swap(a, b);
        p.summaries[x * dim + d] = to_bf16(a);
        p.summaries[x * dim + kHeadDim + d] = to_bf16(b);
      }
    }
  } else {
    for (auto& x : p.summaries) x = to_bf16(unit(rng));
  }
  if (algorithm == SelectionAlgorithm::kSeer) {
    p.w_q.resize(std::uint64_t{group} * kHeadDim * kGate);
    const float scale = 1.f / std::sqrt(static_cast<float>(group * kHeadDim));
    for (auto& x : p.w_q) x = to_bf16(unit(rng) * scale);
  }
  return p;
}

struct Reference {
  std::vector<double> score;     // [partitions]
  std::vector<double> eps;       // [rows] the GPU's rounding bound for the row
  std::vector<double> gate;      // Seer: [rows, 128] float64 gate queries (before rounding)
  std::vector<double> gate_mag;  // Seer: [rows, 128] Σ|q_i · W_io|
};

Reference reference_scores(const Problem& p) {
  const SelectionShape& s = p.shape;
  const std::uint32_t dim = s.summary_dim();
  Reference ref;
  ref.score.assign(p.indptr.back(), 0);
  ref.eps.assign(s.rows(), 0);
  std::vector<double> gate(kGate);
  for (std::uint32_t r = 0; r < s.rows(); ++r) {
    const std::uint16_t* q = p.q.data() + std::uint64_t{r} * s.group * kHeadDim;
    if (s.algorithm == SelectionAlgorithm::kSeer) {
      // The contract's gate query is bf16: the reference scores with it rounded so.
      for (std::uint32_t o = 0; o < kGate; ++o) {
        double acc = 0, mag = 0;
        for (std::uint32_t i = 0; i < s.group * kHeadDim; ++i) {
          const double t = from_bf16(q[i]) * from_bf16(p.w_q[std::uint64_t{i} * kGate + o]);
          acc += t;
          mag += std::abs(t);
        }
        ref.gate.push_back(acc);
        ref.gate_mag.push_back(mag);
        gate[o] = from_bf16(to_bf16(static_cast<float>(acc)));
      }
    }
    double largest_mag = 0;
    for (std::uint32_t x = p.indptr[r]; x < p.indptr[r + 1]; ++x) {
      const std::uint16_t* sum = p.summaries.data() + std::uint64_t{x} * dim;
      double best = -INFINITY, mag = 0;
      if (s.algorithm == SelectionAlgorithm::kSeer) {
        best = 0;
        for (std::uint32_t o = 0; o < kGate; ++o) {
          best += gate[o] * from_bf16(sum[o]);
          mag += std::abs(gate[o] * from_bf16(sum[o]));
        }
      } else {
        for (std::uint32_t h = 0; h < s.group; ++h) {
          double dot = 0, m = 0;
          for (std::uint32_t d = 0; d < kHeadDim; ++d) {
            const double qd = from_bf16(q[h * kHeadDim + d]);
            if (s.algorithm == SelectionAlgorithm::kQuest) {
              const double lo = qd * from_bf16(sum[d]), hi = qd * from_bf16(sum[kHeadDim + d]);
              dot += std::max(lo, hi);
              m += std::max(std::abs(lo), std::abs(hi));
            } else {
              dot += qd * from_bf16(sum[d]);
              m += std::abs(qd * from_bf16(sum[d]));
            }
          }
          best = std::max(best, dot);
          mag = std::max(mag, m);
        }
      }
      ref.score[x] = best;
      largest_mag = std::max(largest_mag, mag);
    }
    ref.eps[r] = (s.algorithm == SelectionAlgorithm::kSeer ? 1.0 / 128 : 1e-4) * largest_mag + 1e-6;
  }
  return ref;
}

// The top-k of `scores` under the tie rule (higher first, then lower index; −0 = +0), ascending.
std::vector<std::uint32_t> host_topk(const float* scores, std::uint32_t n, std::uint32_t k,
                                     bool force_last) {
  std::vector<std::uint32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0u);
  const auto before = [&](std::uint32_t a, std::uint32_t b) {
    const bool fa = force_last && a + 1 == n, fb = force_last && b + 1 == n;
    if (fa != fb) return fa;
    const float sa = scores[a] + 0.f, sb = scores[b] + 0.f;
    if (sa != sb) return sa > sb;
    return a < b;
  };
  std::sort(idx.begin(), idx.end(), before);
  idx.resize(std::min(n, k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

struct Checked {
  std::uint64_t score_violations = 0;  // |gpu − ref| > eps_r
  double worst_row_error = 0;          // ‖s − ref‖/‖ref‖
  std::uint64_t topk_failures = 0;
  std::uint64_t exact_mismatches = 0;  // rows whose selection ≠ host top-k of the GPU's scores
};

Checked run_and_check(const Problem& p, const Reference& ref, const SelectionOptions& options) {
  const DeviceArray<std::uint16_t> q{std::span<const std::uint16_t>(p.q)};
  const DeviceArray<std::uint16_t> summaries{std::span<const std::uint16_t>(p.summaries)};
  DeviceArray<std::uint16_t> w_q(std::max<std::size_t>(p.w_q.size(), 1));
  w_q.upload(p.w_q);
  Selection selection;
  selection.plan(p.shape, p.indptr, p.k, options);
  const std::vector<std::uint32_t>& out_indptr = selection.selected_indptr();
  REQUIRE(out_indptr.size() == p.shape.rows() + 1);
  DeviceArray<std::uint32_t> selected(std::max<std::uint32_t>(out_indptr.back(), 1));
  const bool seer = p.shape.algorithm == SelectionAlgorithm::kSeer;
  Checked c;
  for (int run = 0; run < 2; ++run) {  // two runs of one plan, poisoned each time
    selected.fill_bytes(0xFF);
    SPIN_CUDA_CHECK(cudaMemset(selection.scores(), 0xFF,
                               std::max<std::uint64_t>(p.indptr.back(), 1) * sizeof(float)));
    selection.run(
        SelectionArgs{q.data(), summaries.data(), selected.data(), seer ? w_q.data() : nullptr});
    SPIN_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> scores(p.indptr.back());
    if (!scores.empty())
      SPIN_CUDA_CHECK(
          cudaMemcpy(scores.data(), selection.scores(), scores.size() * 4, cudaMemcpyDeviceToHost));
    std::vector<std::uint32_t> got(out_indptr.back());
    selected.download(got);
    if (seer) {  // the gate queries: float64 rounded to bf16, plus fp32 accumulation
      std::vector<std::uint16_t> gate(ref.gate.size());
      SPIN_CUDA_CHECK(cudaMemcpy(gate.data(), selection.gate_queries(), gate.size() * 2,
                                 cudaMemcpyDeviceToHost));
      for (std::size_t i = 0; i < gate.size(); ++i) {
        const double e = std::abs(from_bf16(gate[i]) - ref.gate[i]);
        if (!(e <= std::abs(ref.gate[i]) / 256 + 1e-4 * ref.gate_mag[i])) ++c.score_violations;
      }
    }
    for (std::uint32_t r = 0; r < p.shape.rows(); ++r) {
      const std::uint32_t b = p.indptr[r], n = p.indptr[r + 1] - b;
      const std::uint32_t k = std::min(p.k[r], n);
      double d2 = 0, r2 = 0;
      for (std::uint32_t x = 0; x < n; ++x) {
        const double e = scores[b + x] - ref.score[b + x];
        if (!(std::abs(e) <= ref.eps[r])) ++c.score_violations;
        d2 += e * e;
        r2 += ref.score[b + x] * ref.score[b + x];
      }
      if (n > 0) {
        const double err = std::sqrt(d2 / r2);
        c.worst_row_error = std::isnan(err) || std::isnan(c.worst_row_error)
                                ? NAN
                                : std::max(c.worst_row_error, err);
      }
      // The selection of this row.
      bool ok = out_indptr[r + 1] - out_indptr[r] == k;
      const std::uint32_t* sel = got.data() + out_indptr[r];
      for (std::uint32_t i = 0; ok && i < k; ++i) {
        ok = sel[i] < n && (i == 0 || sel[i] > sel[i - 1]);
      }
      if (ok && k > 0 && k < n) {
        std::vector<double> sorted;
        for (std::uint32_t x = 0; x < n; ++x) {
          sorted.push_back(seer && x + 1 == n ? INFINITY : ref.score[b + x]);
        }
        std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(),
                         std::greater<double>());
        const double kth = sorted[k - 1];
        std::vector<bool> chosen(n, false);
        for (std::uint32_t i = 0; i < k; ++i) chosen[sel[i]] = true;
        if (seer && !chosen[n - 1]) ok = false;
        for (std::uint32_t x = 0; ok && x < n; ++x) {
          if (seer && x + 1 == n) continue;
          const double s = ref.score[b + x];
          ok = chosen[x] ? s >= kth - ref.eps[r] : s <= kth + ref.eps[r];
        }
      }
      if (!ok) ++c.topk_failures;
      const std::vector<std::uint32_t> exact = host_topk(scores.data() + b, n, k, seer);
      if (!ok || !std::equal(exact.begin(), exact.end(), sel)) ++c.exact_mismatches;
    }
  }
  return c;
}

void check_problem(const Problem& p, const std::vector<SelectionOptions>& variants) {
  const Reference ref = reference_scores(p);
  for (const SelectionOptions& o : variants) {
    const Checked c = run_and_check(p, ref, o);
    INFO(selection_algorithm_name(p.shape.algorithm)
         << " batch " << p.shape.batch << " group " << p.shape.group << " chunk "
         << o.chunk_partitions << " staged " << o.stage_keys << " top-k threads " << o.topk_threads
         << ": score violations " << c.score_violations << ", worst row error " << c.worst_row_error
         << ", top-k failures " << c.topk_failures << ", exact mismatches " << c.exact_mismatches);
    CHECK(c.score_violations == 0);
    CHECK(c.worst_row_error <= 1e-2);  // false for NaN
    CHECK(c.topk_failures == 0);
    CHECK(c.exact_mismatches == 0);
  }
}

// Automatic split and top-k block with keys in shared memory; forced small chunks, keys re-read
// from global memory, 512 threads; 96-partition chunks, staged, 512; automatic, unstaged, 1024.
const std::vector<SelectionOptions> kVariants = {
    {0, true, 0}, {32, false, 512}, {96, true, 512}, {0, false, 1024}};

// Rows of varied lengths: empty, single, short, long; k = 1, all, more than all, a budget.
void mixed_rows(std::uint32_t rows, std::uint32_t most, std::mt19937_64& rng,
                std::vector<std::uint32_t>& n, std::vector<std::uint32_t>& k) {
  n.assign(rows, 0);
  k.assign(rows, 0);
  for (std::uint32_t r = 0; r < rows; ++r) {
    n[r] = 1 + static_cast<std::uint32_t>(rng() % most);
    switch (r % 8) {
      case 0:
        k[r] = 1;
        break;
      case 1:
        k[r] = n[r];
        break;
      case 2:
        k[r] = n[r] + 7;
        break;
      case 3:
        n[r] = 1;
        k[r] = 3;
        break;
      case 4:
        n[r] = 0;
        k[r] = 2;
        break;
      case 5:
        k[r] = 0;
        break;
      default:
        k[r] = std::max<std::uint32_t>(1, n[r] / 64);  // a 1.56% budget
    }
  }
}

void algorithm_cases(SelectionAlgorithm algorithm, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::uint32_t batches[] = {1, 5, 16};
  int combo = 0;
  for (const std::uint32_t group : {1u, 5u, 8u, 16u}) {
    const std::uint32_t batch = batches[combo++ % 3];
    std::vector<std::uint32_t> n, k;
    mixed_rows(batch * 8, batch == 1 ? 20000 : batch == 5 ? 3000 : 700, rng, n, k);
    if (batch == 1) {
      n[6] = 16384;  // 128K tokens of 8-token pages at a 1.56% budget
      k[6] = 256;
      n[7] = 30000;  // above kTopkMaxStaged: keys re-read from global memory
      k[7] = 300;
    }
    const Problem p = make_problem(algorithm, batch, group, n, k, rng);
    check_problem(p, kVariants);
  }
}

// K of `slots` pages with random values; token rows listed by no job are NaN.
struct PagePool {
  std::uint32_t page_tokens;
  std::vector<std::uint16_t> data;  // [slots, 2, page_tokens, 128]
  std::vector<std::uint32_t> slots;
  std::vector<std::uint32_t> list_begin;
  std::vector<std::uint32_t> tokens;
  std::uint32_t slot_count = 0;
  const std::uint16_t* key(std::uint32_t stream, std::uint32_t x) const {
    const std::uint32_t slot = slots[list_begin[stream] + x / page_tokens];
    return data.data() + (std::uint64_t{slot} * 2 * page_tokens + x % page_tokens) * kHeadDim;
  }
};

PagePool make_pages(std::uint32_t page_tokens, std::vector<std::uint32_t> tokens,
                    std::mt19937_64& rng) {
  PagePool p;
  p.page_tokens = page_tokens;
  p.tokens = std::move(tokens);
  std::uint32_t pages = 0;
  for (const std::uint32_t t : p.tokens) pages += (t + page_tokens - 1) / page_tokens;
  p.slot_count = pages + pages / 8 + 2;
  std::vector<std::uint32_t> order(p.slot_count);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  p.data.assign(std::uint64_t{p.slot_count} * 2 * page_tokens * kHeadDim, kNaN);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  std::uint32_t next = 0;
  for (std::size_t s = 0; s < p.tokens.size(); ++s) {
    p.list_begin.push_back(static_cast<std::uint32_t>(p.slots.size()));
    const std::uint32_t n = (p.tokens[s] + page_tokens - 1) / page_tokens;
    for (std::uint32_t i = 0; i < n; ++i) p.slots.push_back(order[next++]);
    for (std::uint32_t x = 0; x < p.tokens[s]; ++x) {
      std::uint16_t* k = const_cast<std::uint16_t*>(p.key(static_cast<std::uint32_t>(s), x));
      for (std::uint32_t d = 0; d < kHeadDim; ++d) k[d] = to_bf16(unit(rng));
    }
  }
  return p;
}

// Float64 summary of job `j` (stream s): [summary_dim].
std::vector<double> reference_summary(SelectionAlgorithm a, const PagePool& pages,
                                      std::uint32_t stream, const SummaryJob& j,
                                      const std::vector<std::uint16_t>& w_k,
                                      std::vector<double>* magnitude = nullptr) {
  std::vector<double> mean(kHeadDim, 0), lo(kHeadDim, INFINITY), hi(kHeadDim, -INFINITY);
  for (std::uint32_t x = j.token_begin; x < j.token_end; ++x) {
    const std::uint16_t* k = pages.key(stream, x);
    for (std::uint32_t d = 0; d < kHeadDim; ++d) {
      const double v = from_bf16(k[d]);
      mean[d] += v;
      lo[d] = std::min(lo[d], v);
      hi[d] = std::max(hi[d], v);
    }
  }
  for (auto& m : mean) m /= (j.token_end - j.token_begin);
  if (a == SelectionAlgorithm::kQuest) {
    lo.insert(lo.end(), hi.begin(), hi.end());
    return lo;
  }
  if (a != SelectionAlgorithm::kSeer) return mean;
  std::vector<double> pooled = mean;
  pooled.insert(pooled.end(), hi.begin(), hi.end());
  pooled.insert(pooled.end(), lo.begin(), lo.end());
  std::vector<double> out(kGate, 0);
  if (magnitude) magnitude->assign(kGate, 0);
  for (std::uint32_t i = 0; i < pooled.size(); ++i) {
    for (std::uint32_t o = 0; o < kGate; ++o) {
      const double t = pooled[i] * from_bf16(w_k[std::uint64_t{i} * kGate + o]);
      out[o] += t;
      if (magnitude) (*magnitude)[o] += std::abs(t);
    }
  }
  return out;
}

// Builds the summaries of `jobs` (job i belongs to stream stream_of[i]) and checks them. With
// slot_base > 0 the pages sit at slot_base and up in a larger pool whose other slots are NaN.
void check_build(SelectionAlgorithm a, const PagePool& pages, const std::vector<SummaryJob>& jobs,
                 const std::vector<std::uint32_t>& stream_of, std::mt19937_64& rng,
                 std::uint32_t slot_base = 0) {
  const std::uint32_t dim = spin::exec::summary_dim(a);
  std::vector<std::uint16_t> w_k;
  if (a == SelectionAlgorithm::kSeer) {
    std::uniform_real_distribution<float> unit(-1.f, 1.f);
    w_k.resize(std::uint64_t{spin::exec::kSeerPooledDim} * kGate);
    for (auto& x : w_k) x = to_bf16(unit(rng) * 0.05f);
  }
  std::uint32_t rows = 0;
  for (const SummaryJob& j : jobs) rows = std::max(rows, j.dst + 1);
  HbmPagePool pool(slot_base + pages.slot_count, 2ull * pages.page_tokens * kHeadDim * 2);
  if (slot_base > 0) pool.fill(0xFF);  // NaN in bf16
  SPIN_CUDA_CHECK(cudaMemcpy(pool.slot(slot_base), pages.data.data(), pages.data.size() * 2,
                             cudaMemcpyHostToDevice));
  std::vector<std::uint32_t> listed = pages.slots;
  for (auto& slot : listed) slot += slot_base;
  const DeviceArray<std::uint32_t> slots{std::span<const std::uint32_t>(listed)};
  DeviceArray<std::uint16_t> w(std::max<std::size_t>(w_k.size(), 1));
  w.upload(w_k);
  DeviceArray<std::uint16_t> out(std::uint64_t{rows} * dim);
  out.fill_bytes(0xFF);
  SummaryBuilder builder;
  builder.plan(a, pages.page_tokens, jobs);
  builder.run(SummaryBuildArgs{pool.data(), slots.data(), out.data(),
                               a == SelectionAlgorithm::kSeer ? w.data() : nullptr});
  SPIN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint16_t> got(out.size());
  out.download(got);
  std::uint64_t bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    std::vector<double> mag;
    const std::vector<double> ref = reference_summary(a, pages, stream_of[i], jobs[i], w_k, &mag);
    for (std::uint32_t d = 0; d < dim; ++d) {
      const double g = from_bf16(got[std::uint64_t{jobs[i].dst} * dim + d]);
      const double tol = a == SelectionAlgorithm::kQuest ? 0.0
                         : a == SelectionAlgorithm::kSeer
                             ? std::abs(ref[d]) / 256 + 4e-5 * mag[d] + 1e-6
                             : std::abs(ref[d]) / 256 + 1e-6;
      const double e = std::abs(g - ref[d]);
      if (!(e <= tol)) ++bad;
      worst = std::isnan(e) ? NAN : std::max(worst, e);
    }
  }
  INFO(selection_algorithm_name(a)
       << " page_tokens " << pages.page_tokens << " slot base " << slot_base << " jobs "
       << jobs.size() << ": values out of tolerance " << bad << ", worst error " << worst);
  CHECK(bad == 0);
}

// The prefill jobs of `pages` (a job per partition of `g` tokens) and each job's stream.
std::vector<SummaryJob> prefill_jobs(const PagePool& pages, std::uint32_t g,
                                     std::vector<std::uint32_t>& stream_of) {
  std::vector<std::uint32_t> indptr;
  std::vector<SummaryJob> jobs =
      spin::exec::partition_summary_jobs(pages.tokens, pages.list_begin, g, indptr);
  stream_of.clear();
  for (std::uint32_t s = 0; s + 1 < indptr.size(); ++s)
    for (std::uint32_t x = indptr[s]; x < indptr[s + 1]; ++x) stream_of.push_back(s);
  REQUIRE(stream_of.size() == jobs.size());
  return jobs;
}

}  // namespace

TEST_CASE("selection: shadowkv scores (max over the group) and top-k match the float64 reference",
          "[gpu][selection]") {
  algorithm_cases(SelectionAlgorithm::kShadowKv, 31);
}

TEST_CASE("selection: quest min/max bounds (max over the group) and top-k match the reference",
          "[gpu][selection]") {
  algorithm_cases(SelectionAlgorithm::kQuest, 32);
}

TEST_CASE("selection: seer gate scores and top-k (last block always selected) match the reference",
          "[gpu][selection]") {
  algorithm_cases(SelectionAlgorithm::kSeer, 33);
}

TEST_CASE("selection: retroinfer centroid scores and top-k match the reference",
          "[gpu][selection]") {
  algorithm_cases(SelectionAlgorithm::kRetroInfer, 34);
}

TEST_CASE("selection: equal scores select the lowest indices (seer: the last block, then them)",
          "[gpu][selection]") {
  for (const SelectionAlgorithm a : {SelectionAlgorithm::kShadowKv, SelectionAlgorithm::kSeer}) {
    for (const bool zero : {true, false}) {
      std::mt19937_64 rng(35);
      const std::vector<std::uint32_t> n = {5000, 40, 1000, 30000, 64, 7, 1, 2};
      const std::vector<std::uint32_t> k = {300, 39, 1, 500, 64, 3, 1, 1};
      Problem p = make_problem(a, 1, 5, n, k, rng);
      // Every partition of a row gets the row's first summary (all zero: scores exactly 0).
      const std::uint32_t dim = p.shape.summary_dim();
      for (std::uint32_t r = 0; r < 8; ++r) {
        for (std::uint32_t x = p.indptr[r]; x < p.indptr[r + 1]; ++x) {
          for (std::uint32_t d = 0; d < dim; ++d) {
            p.summaries[std::uint64_t{x} * dim + d] =
                zero ? 0 : p.summaries[std::uint64_t{p.indptr[r]} * dim + d];
          }
        }
      }
      for (const SelectionOptions& o : kVariants) {
        const DeviceArray<std::uint16_t> q{std::span<const std::uint16_t>(p.q)};
        const DeviceArray<std::uint16_t> s{std::span<const std::uint16_t>(p.summaries)};
        const DeviceArray<std::uint16_t> w{
            std::span<const std::uint16_t>(p.w_q.empty() ? std::vector<std::uint16_t>(1) : p.w_q)};
        Selection selection;
        selection.plan(p.shape, p.indptr, p.k, o);
        DeviceArray<std::uint32_t> selected(selection.selected_indptr().back());
        selected.fill_bytes(0xFF);
        selection.run(SelectionArgs{q.data(), s.data(), selected.data(), w.data()});
        SPIN_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<std::uint32_t> got(selected.size());
        selected.download(got);
        for (std::uint32_t r = 0; r < 8; ++r) {
          const std::uint32_t kr = std::min(k[r], n[r]);
          std::vector<std::uint32_t> want(kr);
          std::iota(want.begin(), want.end(), 0u);
          if (a == SelectionAlgorithm::kSeer && kr < n[r]) want.back() = n[r] - 1;
          const std::vector<std::uint32_t> row(got.begin() + selection.selected_indptr()[r],
                                               got.begin() + selection.selected_indptr()[r + 1]);
          INFO(selection_algorithm_name(a) << (zero ? " zero" : " equal") << " summaries, row " << r
                                           << " chunk " << o.chunk_partitions);
          CHECK(row == want);
        }
      }
    }
  }
}

TEST_CASE("selection: summaries built from paged K match CPU means, min/max and seer pooling",
          "[gpu][selection]") {
  std::mt19937_64 rng(36);
  for (const std::uint32_t page_tokens : {8u, 16u, 32u}) {
    const PagePool pages = make_pages(page_tokens, {1000, 37, 8, 1, 613, 64}, rng);
    for (const SelectionAlgorithm a :
         {SelectionAlgorithm::kShadowKv, SelectionAlgorithm::kQuest, SelectionAlgorithm::kSeer}) {
      // Prefill: a partition per page (ShadowKV, Quest) or per 32-token block (Seer).
      const std::uint32_t g = a == SelectionAlgorithm::kSeer ? 32 : page_tokens;
      std::vector<std::uint32_t> stream_of;
      const std::vector<SummaryJob> jobs = prefill_jobs(pages, g, stream_of);
      check_build(a, pages, jobs, stream_of, rng);
      // Decode: one newly filled partition per stream, into a scattered summary row.
      std::vector<SummaryJob> decode;
      std::vector<std::uint32_t> decode_stream;
      for (std::uint32_t s = 0; s < pages.tokens.size(); ++s) {
        if (pages.tokens[s] < g) continue;
        const std::uint32_t last = pages.tokens[s] / g - 1;
        decode.push_back({pages.list_begin[s], last * g, (last + 1) * g, 3 * s + 1});
        decode_stream.push_back(s);
      }
      check_build(a, pages, decode, decode_stream, rng);
    }
    // RetroInfer: clusters of 1..40 tokens in storage order, crossing pages.
    std::vector<SummaryJob> clusters;
    std::vector<std::uint32_t> cluster_stream;
    std::uint32_t dst = 0;
    for (std::uint32_t s = 0; s < pages.tokens.size(); ++s) {
      for (std::uint32_t b = 0; b < pages.tokens[s];) {
        const std::uint32_t e =
            std::min(pages.tokens[s], b + 1 + static_cast<std::uint32_t>(rng() % 40));
        clusters.push_back({pages.list_begin[s], b, e, dst++});
        cluster_stream.push_back(s);
        b = e;
      }
    }
    check_build(SelectionAlgorithm::kRetroInfer, pages, clusters, cluster_stream, rng);
  }
}

TEST_CASE(
    "selection: summaries built from a pool past 8 GiB (offsets above 2^32 bytes and "
    "elements)",
    "[gpu][selection]") {
  // The pages straddle the 8 GiB mark (2^32 bf16 elements) of a pool whose other slots are NaN:
  // an offset computed in 32 bits, in bytes or in elements, reads a NaN slot.
  std::mt19937_64 rng(37);
  const std::uint32_t page_tokens = 16;
  const PagePool pages = make_pages(page_tokens, {1000, 613, 64}, rng);
  const std::uint64_t page_bytes = 2ull * page_tokens * kHeadDim * 2;
  const auto base =
      static_cast<std::uint32_t>((std::uint64_t{1} << 33) / page_bytes - pages.slot_count / 2);
  std::vector<std::uint32_t> stream_of;
  const std::vector<SummaryJob> jobs = prefill_jobs(pages, page_tokens, stream_of);
  for (const SelectionAlgorithm a : {SelectionAlgorithm::kShadowKv, SelectionAlgorithm::kQuest}) {
    check_build(a, pages, jobs, stream_of, rng, base);
  }
}

TEST_CASE("selection: shadowkv end to end, summaries built on the GPU then selected",
          "[gpu][selection]") {
  std::mt19937_64 rng(37);
  const std::uint32_t batch = 2, group = 5, page_tokens = 8;
  std::vector<std::uint32_t> tokens(batch * 8);
  for (auto& t : tokens) t = 1 + static_cast<std::uint32_t>(rng() % 20000);
  const PagePool pages = make_pages(page_tokens, tokens, rng);
  std::vector<std::uint32_t> indptr;
  const std::vector<SummaryJob> jobs =
      spin::exec::partition_summary_jobs(pages.tokens, pages.list_begin, page_tokens, indptr);
  HbmPagePool pool(pages.slot_count, 2ull * page_tokens * kHeadDim * 2);
  SPIN_CUDA_CHECK(
      cudaMemcpy(pool.data(), pages.data.data(), pages.data.size() * 2, cudaMemcpyHostToDevice));
  const DeviceArray<std::uint32_t> slots{std::span<const std::uint32_t>(pages.slots)};
  DeviceArray<std::uint16_t> summaries(std::uint64_t{indptr.back()} * kHeadDim);
  summaries.fill_bytes(0xFF);
  SummaryBuilder builder;
  builder.plan(SelectionAlgorithm::kShadowKv, page_tokens, jobs);
  builder.run(SummaryBuildArgs{pool.data(), slots.data(), summaries.data()});
  std::vector<std::uint16_t> q(std::uint64_t{batch} * 8 * group * kHeadDim);
  std::uniform_real_distribution<float> qd(-2.f, 2.f);
  for (auto& x : q) x = to_bf16(qd(rng));
  const DeviceArray<std::uint16_t> d_q{std::span<const std::uint16_t>(q)};
  std::vector<std::uint32_t> k(batch * 8);
  for (std::uint32_t r = 0; r < k.size(); ++r) k[r] = (indptr[r + 1] - indptr[r] + 63) / 64;
  Selection selection;
  selection.plan({SelectionAlgorithm::kShadowKv, batch, 8, group, kHeadDim}, indptr, k);
  DeviceArray<std::uint32_t> selected(selection.selected_indptr().back());
  selected.fill_bytes(0xFF);
  selection.run(SelectionArgs{d_q.data(), summaries.data(), selected.data()});
  SPIN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint32_t> got(selected.size());
  selected.download(got);
  std::uint64_t failures = 0;
  for (std::uint32_t r = 0; r < batch * 8; ++r) {
    const std::uint32_t n = indptr[r + 1] - indptr[r];
    std::vector<double> score(n);
    double mag = 0;
    for (std::uint32_t x = 0; x < n; ++x) {
      const std::vector<double> mean =
          reference_summary(SelectionAlgorithm::kShadowKv, pages, r, jobs[indptr[r] + x], {});
      double best = -INFINITY;
      for (std::uint32_t h = 0; h < group; ++h) {
        double dot = 0, m = 0;
        for (std::uint32_t d = 0; d < kHeadDim; ++d) {
          const double t = from_bf16(q[(std::uint64_t{r} * group + h) * kHeadDim + d]) * mean[d];
          dot += t;
          m += std::abs(t);
        }
        best = std::max(best, dot);
        mag = std::max(mag, m);
      }
      score[x] = best;
    }
    // Summaries rounded to bf16: each term off by at most 2^-8 of itself.
    const double eps = mag / 128 + 1e-6;
    std::vector<double> sorted = score;
    const std::uint32_t kr = std::min(k[r], n);
    std::nth_element(sorted.begin(), sorted.begin() + (kr - 1), sorted.end(),
                     std::greater<double>());
    const double kth = sorted[kr - 1];
    std::vector<bool> chosen(n, false);
    const std::uint32_t* sel = got.data() + selection.selected_indptr()[r];
    bool ok = selection.selected_indptr()[r + 1] - selection.selected_indptr()[r] == kr;
    for (std::uint32_t i = 0; ok && i < kr; ++i) {
      ok = sel[i] < n && (i == 0 || sel[i] > sel[i - 1]);
      if (ok) chosen[sel[i]] = true;
    }
    for (std::uint32_t x = 0; ok && x < n; ++x)
      ok = chosen[x] ? score[x] >= kth - eps : score[x] <= kth + eps;
    failures += !ok;
  }
  CHECK(failures == 0);
}

TEST_CASE("selection: retroinfer clusters map to the distinct pages they cover, ascending",
          "[gpu][selection]") {
  std::mt19937_64 rng(38);
  const std::uint32_t batch = 3, rows = batch * 8;
  for (const std::uint32_t page_tokens : {8u, 16u}) {
    std::vector<std::uint32_t> indptr(1, 0), offsets, k(rows);
    for (std::uint32_t r = 0; r < rows; ++r) {
      const std::uint32_t start = r % 3 == 0 ? 64 : 0;  // clusters need not start at token 0
      offsets.push_back(start);
      const std::uint32_t n = r % 5 == 4 ? 1 : 1 + static_cast<std::uint32_t>(rng() % 900);
      for (std::uint32_t c = 0; c < n; ++c) {
        const std::uint32_t len =
            r % 7 == 3 && c % 4 == 1 ? 0 : 1 + static_cast<std::uint32_t>(rng() % 40);
        offsets.push_back(offsets.back() + len);
      }
      indptr.push_back(indptr.back() + n);
      k[r] = r % 4 == 0 ? n : 1 + static_cast<std::uint32_t>(rng() % (n / 4 + 1));
    }
    std::vector<std::uint32_t> n(rows);
    for (std::uint32_t r = 0; r < rows; ++r) n[r] = indptr[r + 1] - indptr[r];
    const Problem p = make_problem(SelectionAlgorithm::kRetroInfer, batch, 5, n, k, rng);
    const DeviceArray<std::uint16_t> q{std::span<const std::uint16_t>(p.q)};
    const DeviceArray<std::uint16_t> s{std::span<const std::uint16_t>(p.summaries)};
    Selection selection;
    selection.plan(p.shape, p.indptr, p.k);
    DeviceArray<std::uint32_t> selected(selection.selected_indptr().back());
    selection.run(SelectionArgs{q.data(), s.data(), selected.data()});
    ClusterPages cluster_pages;
    cluster_pages.plan(p.indptr, offsets, page_tokens, selection.selected_indptr());
    const DeviceArray<std::uint32_t> d_offsets{std::span<const std::uint32_t>(offsets)};
    DeviceArray<std::uint32_t> pages(
        std::max<std::uint32_t>(cluster_pages.page_indptr().back(), 1));
    DeviceArray<std::uint32_t> count(rows);
    pages.fill_bytes(0xFF);
    count.fill_bytes(0xFF);
    cluster_pages.run(
        ClusterPagesArgs{selected.data(), d_offsets.data(), pages.data(), count.data()});
    SPIN_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<std::uint32_t> sel(selected.size()), got(pages.size()), got_count(rows);
    selected.download(sel);
    pages.download(got);
    count.download(got_count);
    for (std::uint32_t r = 0; r < rows; ++r) {
      std::vector<std::uint32_t> want;
      const std::uint32_t* off = offsets.data() + p.indptr[r] + r;
      for (std::uint32_t i = selection.selected_indptr()[r]; i < selection.selected_indptr()[r + 1];
           ++i) {
        const std::uint32_t c = sel[i];
        for (std::uint32_t x = off[c]; x < off[c + 1]; ++x) want.push_back(x / page_tokens);
      }
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      const std::uint32_t at = cluster_pages.page_indptr()[r];
      INFO("page_tokens " << page_tokens << " row " << r);
      REQUIRE(got_count[r] == want.size());
      REQUIRE(got_count[r] <= cluster_pages.page_indptr()[r + 1] - at);
      CHECK(std::vector<std::uint32_t>(got.begin() + at, got.begin() + at + got_count[r]) == want);
    }
  }
}

TEST_CASE("selection: plan rejects unsupported shapes, bad offsets and bad jobs",
          "[gpu][selection]") {
  Selection s;
  const std::vector<std::uint32_t> indptr = {0, 4}, k = {2};
  const auto shape = [](SelectionAlgorithm a, std::uint32_t batch, std::uint32_t heads,
                        std::uint32_t group, std::uint32_t head_dim) {
    return SelectionShape{a, batch, heads, group, head_dim};
  };
  constexpr SelectionAlgorithm kS = SelectionAlgorithm::kShadowKv;
  CHECK_THROWS_AS(s.plan(shape(kS, 1, 1, 1, 64), indptr, k), std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 1, 1, 0, 128), indptr, k), std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 1, 1, 17, 128), indptr, k), std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 0, 1, 1, 128), indptr, k), std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(static_cast<SelectionAlgorithm>(9), 1, 1, 1, 128), indptr, k),
                  std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 2, 1, 1, 128), indptr, k), std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 1, 1, 1, 128), std::vector<std::uint32_t>{1, 4}, k),
                  std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 2, 1, 1, 128), std::vector<std::uint32_t>{0, 4, 3},
                         std::vector<std::uint32_t>{1, 1}),
                  std::invalid_argument);
  CHECK_THROWS_AS(s.plan(shape(kS, 3, 1, 1, 128), std::vector<std::uint32_t>{0, 4, 5, 6},
                         std::vector<std::uint32_t>{1, 1}),
                  std::invalid_argument);
  try {
    s.plan(shape(kS, 1, 1, 1, 64), indptr, k);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("head_dim 64") != std::string::npos);
  }
  SelectionOptions bad_threads;
  bad_threads.topk_threads = 256;
  CHECK_THROWS_AS(s.plan(shape(kS, 1, 1, 1, 128), indptr, k, bad_threads), std::invalid_argument);
  CHECK_NOTHROW(s.plan(shape(kS, 1, 1, 1, 128), indptr, k));
  CHECK(s.selected_indptr() == std::vector<std::uint32_t>{0, 2});
  CHECK_NOTHROW(s.plan(shape(kS, 1, 1, 1, 128), indptr, std::vector<std::uint32_t>{9}));
  CHECK(s.selected_indptr() == std::vector<std::uint32_t>{0, 4});  // clamped to the partitions
  Selection unplanned;
  CHECK_THROWS_AS(unplanned.run(SelectionArgs{nullptr, nullptr, nullptr}), std::logic_error);
  Selection seer;
  seer.plan(shape(SelectionAlgorithm::kSeer, 1, 1, 1, 128), indptr, k);
  CHECK_THROWS_AS(seer.run(SelectionArgs{nullptr, nullptr, nullptr}), std::invalid_argument);

  SummaryBuilder b;
  const std::vector<SummaryJob> jobs = {{0, 0, 8, 0}};
  CHECK_THROWS_AS(b.plan(kS, 12, jobs), std::invalid_argument);
  CHECK_THROWS_AS(b.plan(kS, 0, jobs), std::invalid_argument);
  CHECK_THROWS_AS(b.plan(kS, 8, std::vector<SummaryJob>{{0, 5, 5, 0}}), std::invalid_argument);
  CHECK_NOTHROW(b.plan(kS, 8, jobs));
  CHECK_NOTHROW(b.plan(SelectionAlgorithm::kSeer, 8, jobs));
  CHECK_THROWS_AS(b.run(SummaryBuildArgs{nullptr, nullptr, nullptr}), std::invalid_argument);

  ClusterPages c;
  const std::vector<std::uint32_t> offsets = {0, 10, 20, 30, 40};  // one row, 4 clusters
  const std::vector<std::uint32_t> sel = {0, 2};
  CHECK_THROWS_AS(c.plan(indptr, std::vector<std::uint32_t>{0, 10, 20}, 8, sel),
                  std::invalid_argument);
  CHECK_THROWS_AS(c.plan(indptr, std::vector<std::uint32_t>{0, 10, 5, 30, 40}, 8, sel),
                  std::invalid_argument);
  CHECK_THROWS_AS(c.plan(indptr, offsets, 6, sel), std::invalid_argument);
  CHECK_THROWS_AS(c.plan(indptr, offsets, 8, std::vector<std::uint32_t>{0, 5}),
                  std::invalid_argument);
  CHECK_NOTHROW(c.plan(indptr, offsets, 8, sel));
  CHECK(c.page_indptr() == std::vector<std::uint32_t>{0, 5});  // pages 0..4
}
