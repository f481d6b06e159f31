// The cost model: time of each piece of one iteration on the modelled GPU (docs/simulator.md).
//
// Every coefficient comes from the config's hardware and model sections, so that measurements
// on a real GPU can replace them (DESIGN.md §3). Rules:
// - GEMMs are a roofline over FLOPs (bf16_dense_tflops × gemm_efficiency) and weight bytes
//   (hbm_bandwidth_gbps × hbm_efficiency): max of the two.
// - Bandwidth-bound kernels (decode attention over pages, selection over summaries, the
//   residency kernel's slot scan) take bytes / (hbm_bandwidth_gbps × hbm_efficiency).
// - Causal prefill attention takes its FLOPs / (bf16_dense_tflops × prefill_attention_efficiency).
// - Every kernel on the critical path adds kernel_launch_us.
// - Tensor parallelism over `tp` GPUs splits every layer's heads and MLP columns: GEMM FLOPs and
//   weight bytes, attention and prefill work divide by tp (the caller passes per-GPU bytes), and
//   each layer adds two all-reduces of the batch's hidden states (ring: 2·(tp−1)/tp of the bytes
//   over interconnect_gbps, plus allreduce_latency_us each).
// - Scattered page fetches run at the transfer table's rate for the page size (gather kernel or
//   one copy per page), interpolated linearly in log(page bytes), clamped at the ends.
// Times are nanoseconds as doubles; the simulator rounds once per phase.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/config/hardware.h"
#include "common/config/model.h"

namespace spin::sim {

// Summary bytes per token of one stream that an algorithm's selection reads (and keeps in HBM).
// ShadowKV: a mean key per 8-token chunk; RetroInfer: a centroid per ~16-token cluster; seer: a
// pooled (compressed) key per 32-token block; Quest: a min and a max key per 16-token page;
// token-level top-k: a 128-element fp8 indexer key per token (DeepSeek sparse attention).
double summary_bytes_per_token(std::string_view algorithm, const config::ModelConfig& model);

class CostModel {
 public:
  // Throws InputError unless tp divides the model's query and KV heads.
  CostModel(const config::ModelConfig& model, const config::HardwareConfig& hardware,
            std::uint32_t tp = 1);

  // Parameters of one transformer layer (attention projections and a gated MLP), and of the
  // whole model (layers, embedding and LM head).
  std::uint64_t layer_params() const { return layer_params_; }
  // Weights held by each GPU.
  std::uint64_t weight_bytes_per_gpu() const;
  std::uint32_t tp() const { return tp_; }

  // One layer's QKV, O and MLP GEMMs over `tokens` tokens of the batch.
  double layer_gemm_ns(std::uint64_t tokens) const;
  // The two all-reduces of one layer over `tokens` tokens (0 without tensor parallelism).
  double allreduce_ns(std::uint64_t tokens) const;
  // The LM head over `tokens` tokens that emit a token.
  double lm_head_ns(std::uint64_t tokens) const;
  // A bandwidth-bound kernel reading (and writing) `bytes` of HBM, without its launch.
  double hbm_ns(double bytes) const;
  // Causal prefill attention of one layer: `chunk` new tokens over `prefix` earlier ones.
  double prefill_attention_ns(std::uint64_t chunk, std::uint64_t prefix) const;
  double launch_ns(unsigned kernels) const { return kernels * hardware_.kernel_launch_us * 1e3; }
  double cpu_roundtrip_ns() const { return hardware_.cpu_roundtrip_us * 1e3; }

  // Effective GB/s of scattered fetches of `page_bytes` pages (transfer table).
  double gather_gbps(std::uint64_t page_bytes) const;
  double per_page_copy_gbps(std::uint64_t page_bytes) const;

  // K and V bytes of one token in one layer (all KV heads).
  std::uint64_t kv_bytes_per_token_layer() const {
    return 2ull * model_.kv_heads * model_.head_dim * model_.dtype_bytes();
  }

  const config::ModelConfig& model() const { return model_; }
  const config::HardwareConfig& hardware() const { return hardware_; }

 private:
  config::ModelConfig model_;
  config::HardwareConfig hardware_;
  std::uint64_t layer_params_ = 0;
  std::uint32_t tp_ = 1;
};

}  // namespace spin::sim
