#include "exec/cuda_check.h"
#include "exec/gather.h"

namespace spin::exec {
namespace {

constexpr std::uint64_t kPieceWords = kGatherPieceBytes / 16;

// One warp copies words [begin, end) of one page: each lane loads up to kGatherUnroll 16-byte
// words (strided by 32 words, so each load instruction of the warp is 512 contiguous bytes)
// before storing them, so that many PCIe reads are in flight per warp.
__device__ __forceinline__ void copy_words(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                           std::uint64_t begin, std::uint64_t end,
                                           std::uint32_t lane) {
  for (std::uint64_t base = begin + lane; base < end; base += 32 * kGatherUnroll) {
    uint4 v[kGatherUnroll];
#pragma unroll
    for (std::uint32_t u = 0; u < kGatherUnroll; ++u) {
      const std::uint64_t w = base + 32 * u;
      if (w < end) v[u] = src[w];
    }
#pragma unroll
    for (std::uint32_t u = 0; u < kGatherUnroll; ++u) {
      const std::uint64_t w = base + 32 * u;
      if (w < end) dst[w] = v[u];
    }
  }
}

__global__ void __launch_bounds__(kGatherThreads) gather_kernel(const GatherParams p) {
  const std::uint32_t lane = threadIdx.x & 31;
  const std::uint64_t warp =
      (static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const std::uint64_t warps = static_cast<std::uint64_t>(gridDim.x) * blockDim.x / 32;
  const std::uint64_t page_words = p.page_bytes / 16;
  const std::uint64_t pieces = (page_words + kPieceWords - 1) / kPieceWords;  // per page
  const std::uint64_t units = static_cast<std::uint64_t>(p.count) * pieces;
  for (std::uint64_t u = warp; u < units; u += warps) {
    const std::uint64_t entry = u / pieces;
    const std::uint64_t piece = u - entry * pieces;
    const std::uint32_t host_page = p.host_page[entry];
    const std::uint32_t slot = p.slot[entry];
    if (host_page == kSkipEntry || slot == kSkipEntry) continue;
    uint4* host = reinterpret_cast<uint4*>(p.host_pages) + host_page * page_words;
    uint4* hbm = reinterpret_cast<uint4*>(p.hbm_slots) + slot * page_words;
    const std::uint64_t begin = piece * kPieceWords;
    const std::uint64_t end = begin + kPieceWords < page_words ? begin + kPieceWords : page_words;
    if (p.direction == GatherDirection::kHostToDevice) {
      copy_words(host, hbm, begin, end, lane);
    } else {
      copy_words(hbm, host, begin, end, lane);
    }
  }
}

}  // namespace

void launch_gather(const GatherParams& params, CUstream_st* stream, std::uint32_t blocks) {
  if (params.page_bytes == 0 || params.page_bytes % 16 != 0) {
    throw_cuda_error(cudaErrorInvalidValue, "gather: page_bytes must be a positive multiple of 16",
                     __FILE__, __LINE__);
  }
  if (params.count == 0) return;
  if (params.host_pages == nullptr || params.hbm_slots == nullptr || params.host_page == nullptr ||
      params.slot == nullptr) {
    throw_cuda_error(cudaErrorInvalidValue, "gather: a null buffer or list", __FILE__, __LINE__);
  }
  if (blocks == 0) {
    // A persistent grid: as many blocks as fit on the device at once, capped by the work.
    int device = 0;
    int sms = 0;
    int per_sm = 0;
    SPIN_CUDA_CHECK(cudaGetDevice(&device));
    SPIN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    SPIN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gather_kernel, kGatherThreads, 0));
    if (per_sm > static_cast<int>(kGatherBlocksPerSm)) per_sm = kGatherBlocksPerSm;
    if (per_sm < 1) per_sm = 1;
    const std::uint64_t pieces =
        (params.page_bytes / 16 + kPieceWords - 1) / kPieceWords * params.count;
    const std::uint64_t needed = (pieces + kGatherThreads / 32 - 1) / (kGatherThreads / 32);
    const std::uint64_t most = static_cast<std::uint64_t>(sms) * per_sm;
    blocks = static_cast<std::uint32_t>(needed < most ? needed : most);
  }
  gather_kernel<<<blocks, kGatherThreads, 0, stream>>>(params);
  SPIN_CUDA_CHECK_LAUNCH();
}

}  // namespace spin::exec
