// The machine a run models: one GPU, its HBM and compute, and its PCIe link to host memory
// (config section `hardware`, presets in configs/hardware/).
//
// Units are in the key names: _gib = 2^30 bytes; _gbps = 10^9 bytes per second (GB/s, not
// gigabits); _us = microseconds; _tflops = 10^12 FLOP per second.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config/schema.h"

namespace spin::config {

// Bounds of the hardware numbers: wide enough for any machine (a thousandth of today's slowest
// link to a thousand times today's fastest HBM), narrow enough that the modelled times of one
// operation stay far below 2^63 ns.
inline constexpr double kMinRate = 1e-3;        // GB/s, TFLOP/s
inline constexpr double kMaxRate = 1e6;         // GB/s, TFLOP/s
inline constexpr double kMaxGib = 1e6;          // GiB of HBM or host memory
inline constexpr double kMaxLatencyUs = 1e7;    // microseconds (10 s)
inline constexpr double kMinEfficiency = 1e-3;  // share of a peak

// Effective host→HBM bandwidth of scattered page fetches, by page size (each page's K and V of
// one stream; host pages in random order). Lookups between table entries are the cost model's
// business.
struct TransferConfig {
  std::string source;
  std::vector<std::uint64_t> page_bytes;
  std::vector<double> gather_gbps;
  std::vector<double> per_page_copy_gbps;

  template <class V>
  void visit(V& v) {
    v.field("source", source, "where these figures come from: measured, or estimated and how");
    v.field("page_bytes", page_bytes, "page sizes of the table, bytes, increasing",
            required().at_least(1));
    v.field("gather_gbps", gather_gbps,
            "GB/s of one gather kernel reading mapped pinned host memory, per page size",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("per_page_copy_gbps", per_page_copy_gbps,
            "GB/s of one cudaMemcpyAsync per page, per page size",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.check("page_bytes", "a non-empty list in increasing order", [&] {
      if (page_bytes.empty()) return false;
      for (std::size_t i = 1; i < page_bytes.size(); ++i) {
        if (page_bytes[i] <= page_bytes[i - 1]) return false;
      }
      return true;
    });
    v.check("gather_gbps", "one value per entry of page_bytes",
            [&] { return gather_gbps.size() == page_bytes.size(); });
    v.check("per_page_copy_gbps", "one value per entry of page_bytes",
            [&] { return per_page_copy_gbps.size() == page_bytes.size(); });
  }
};

struct HardwareConfig {
  std::string preset;
  std::string description;
  double hbm_gib = 0;
  double hbm_bandwidth_gbps = 0;
  double bf16_dense_tflops = 0;
  double pcie_h2d_gbps = 0;
  double pcie_d2h_gbps = 0;
  double pcie_latency_us = 0;
  double host_memory_gib = 0;
  double gemm_efficiency = 0;
  double hbm_efficiency = 0;
  double prefill_attention_efficiency = 0;
  double kernel_launch_us = 0;
  double cpu_roundtrip_us = 0;
  double interconnect_gbps = 0;
  double allreduce_latency_us = 0;
  TransferConfig transfer;

  template <class V>
  void visit(V& v) {
    v.presets(preset, "hardware");
    v.field("description", description,
            "one line about the machine, shown by spin --list hardware");
    v.field("hbm_gib", hbm_gib, "GPU memory the driver reports (nvidia-smi memory.total), GiB",
            required().above(0).at_most(kMaxGib));
    v.field("hbm_bandwidth_gbps", hbm_bandwidth_gbps, "peak HBM bandwidth, GB/s (datasheet)",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("bf16_dense_tflops", bf16_dense_tflops,
            "peak dense bf16 tensor-core throughput, TFLOP/s (datasheet, without sparsity); GEMMs "
            "and prefill attention run at this rate whatever model.dtype is (fp8 halves bytes, "
            "not FLOP time)",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("pcie_h2d_gbps", pcie_h2d_gbps,
            "bulk host-to-device copy bandwidth from pinned memory, GB/s: the link, shared by "
            "concurrent transfers; each fetch also runs at most at its path's own rate "
            "(transfer.gather_gbps or per_page_copy_gbps), so a faster link needs those raised "
            "too",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("pcie_d2h_gbps", pcie_d2h_gbps,
            "bulk device-to-host copy bandwidth to pinned memory, GB/s",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("pcie_latency_us", pcie_latency_us,
            "fixed cost of one DMA copy (driver and link), microseconds; paid once per transfer "
            "(a bulk copy, or a layer's per-page copies, whose per-copy overhead is in "
            "transfer.per_page_copy_gbps); a gather kernel pays a kernel launch instead",
            required().at_least(0).at_most(kMaxLatencyUs));
    v.field("host_memory_gib", host_memory_gib,
            "host DRAM for this GPU's KV: the node's DRAM divided by its GPUs, GiB (host-KV modes "
            "admit a request only while it holds the request's KV at its final context; a "
            "swapping mode swaps a preempted request's KV out only while it holds it)",
            required().above(0).at_most(kMaxGib));
    v.field("gemm_efficiency", gemm_efficiency,
            "share of bf16_dense_tflops that the model's GEMMs reach when compute-bound",
            required().at_least(kMinEfficiency).at_most(1));
    v.field("hbm_efficiency", hbm_efficiency,
            "share of hbm_bandwidth_gbps that bandwidth-bound kernels (decode attention, weight "
            "streaming, selection) reach",
            required().at_least(kMinEfficiency).at_most(1));
    v.field("prefill_attention_efficiency", prefill_attention_efficiency,
            "share of bf16_dense_tflops that causal prefill attention reaches",
            required().at_least(kMinEfficiency).at_most(1));
    v.field("kernel_launch_us", kernel_launch_us,
            "fixed cost of one kernel on the critical path (launch and tail), microseconds",
            required().at_least(0).at_most(kMaxLatencyUs));
    v.field("cpu_roundtrip_us", cpu_roundtrip_us,
            "a GPU to CPU to GPU control round trip (synchronise, decide on the host, launch), "
            "microseconds",
            required().at_least(0).at_most(kMaxLatencyUs));
    v.field("interconnect_gbps", interconnect_gbps,
            "GPU-to-GPU all-reduce bus bandwidth per GPU (tensor parallelism), GB/s",
            required().at_least(kMinRate).at_most(kMaxRate));
    v.field("allreduce_latency_us", allreduce_latency_us,
            "fixed cost of one all-reduce across the tensor-parallel GPUs, microseconds",
            required().at_least(0).at_most(kMaxLatencyUs));
    v.field("transfer", transfer, "scattered page fetches host to HBM, by page size");
  }

  std::uint64_t hbm_bytes() const { return static_cast<std::uint64_t>(hbm_gib * (1ull << 30)); }
  std::uint64_t host_memory_bytes() const {
    return static_cast<std::uint64_t>(host_memory_gib * (1ull << 30));
  }
};

}  // namespace spin::config
