#include "sim/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"

namespace spin::sim {
namespace {

// Linear in log(page bytes) between table entries, clamped at the ends.
double interpolate(const std::vector<std::uint64_t>& xs, const std::vector<double>& ys,
                   std::uint64_t x) {
  if (x <= xs.front()) return ys.front();
  if (x >= xs.back()) return ys.back();
  const auto hi = std::upper_bound(xs.begin(), xs.end(), x) - xs.begin();
  const double x0 = std::log(static_cast<double>(xs[hi - 1]));
  const double x1 = std::log(static_cast<double>(xs[hi]));
  const double t = (std::log(static_cast<double>(x)) - x0) / (x1 - x0);
  return ys[hi - 1] + t * (ys[hi] - ys[hi - 1]);
}

}  // namespace

double summary_bytes_per_token(std::string_view algorithm, const config::ModelConfig& model) {
  const double key = static_cast<double>(model.head_dim) * model.dtype_bytes();
  if (algorithm == "shadowkv") return key / 8;
  if (algorithm == "retroinfer") return key / 16;
  if (algorithm == "seer") return key / 32;
  if (algorithm == "quest") return 2 * key / 16;
  if (algorithm == "token") return 128.0 / model.kv_heads;  // one indexer key per token
  throw InvariantError(
      fmt::format("no summary size for algorithm '{}': a new algorithm adds its case in "
                  "summary_bytes_per_token (sim/cost_model.cpp) and its original's mechanisms in "
                  "sim/simulator.cpp (docs/simulator.md, \"Adding an algorithm\")",
                  algorithm));
}

CostModel::CostModel(const config::ModelConfig& model, const config::HardwareConfig& hardware,
                     std::uint32_t tp)
    : model_(model), hardware_(hardware), tp_(tp) {
  if (tp == 0 || model.query_heads % tp != 0 || model.kv_heads % tp != 0) {
    throw InputError(fmt::format(
        "serving.tensor_parallel: {} GPUs cannot split {} query heads and {} KV heads evenly", tp,
        model.query_heads, model.kv_heads));
  }
  const std::uint64_t h = model.hidden_size, d = model.head_dim;
  const std::uint64_t qkv = h * (model.query_heads + 2ull * model.kv_heads) * d;
  const std::uint64_t o = std::uint64_t{model.query_heads} * d * h;
  const std::uint64_t mlp = 3 * h * std::uint64_t{model.intermediate_size};
  layer_params_ = qkv + o + mlp;
}

std::uint64_t CostModel::weight_bytes_per_gpu() const {
  const std::uint64_t embed = 2ull * model_.vocab_size * model_.hidden_size;  // input + LM head
  return (layer_params_ * model_.layers + embed) * model_.dtype_bytes() / tp_;
}

double CostModel::allreduce_ns(std::uint64_t tokens) const {
  if (tp_ == 1) return 0;
  const double bytes = static_cast<double>(tokens) * model_.hidden_size * model_.dtype_bytes();
  const double ring = 2.0 * (tp_ - 1) / tp_ * bytes / hardware_.interconnect_gbps;
  return 2 * (hardware_.allreduce_latency_us * 1e3 + ring);
}

double CostModel::layer_gemm_ns(std::uint64_t tokens) const {
  const double params = static_cast<double>(layer_params_) / tp_;
  const double flops = 2.0 * static_cast<double>(tokens) * params;
  const double compute = flops / (hardware_.bf16_dense_tflops * 1e12 * hardware_.gemm_efficiency);
  const double weights = params * model_.dtype_bytes();
  return std::max(compute * 1e9, hbm_ns(weights));
}

double CostModel::lm_head_ns(std::uint64_t tokens) const {
  const double params = static_cast<double>(model_.vocab_size) * model_.hidden_size / tp_;
  const double flops = 2.0 * static_cast<double>(tokens) * params;
  const double compute = flops / (hardware_.bf16_dense_tflops * 1e12 * hardware_.gemm_efficiency);
  return std::max(compute * 1e9, hbm_ns(params * model_.dtype_bytes()));
}

double CostModel::hbm_ns(double bytes) const {
  return bytes / (hardware_.hbm_bandwidth_gbps * hardware_.hbm_efficiency);  // GB/s = bytes/ns
}

double CostModel::prefill_attention_ns(std::uint64_t chunk, std::uint64_t prefix) const {
  // QK^T and PV over the causal triangle: 4 · heads · head_dim FLOPs per (query, key) pair.
  const double pairs = static_cast<double>(chunk) *
                       (static_cast<double>(prefix) + (static_cast<double>(chunk) + 1) / 2);
  const double flops = 4.0 * (model_.query_heads / tp_) * model_.head_dim * pairs;
  return flops / (hardware_.bf16_dense_tflops * 1e12 * hardware_.prefill_attention_efficiency) *
         1e9;
}

double CostModel::gather_gbps(std::uint64_t page_bytes) const {
  return interpolate(hardware_.transfer.page_bytes, hardware_.transfer.gather_gbps, page_bytes);
}

double CostModel::per_page_copy_gbps(std::uint64_t page_bytes) const {
  return interpolate(hardware_.transfer.page_bytes, hardware_.transfer.per_page_copy_gbps,
                     page_bytes);
}

}  // namespace spin::sim
