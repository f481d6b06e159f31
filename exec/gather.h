// The gather-copy kernel (DESIGN.md §6): one persistent launch moves a whole fetch list of pages
// between pinned host memory and HBM slots, for all requests, layers and heads of a step at once.
//
// Host API in FlashInfer's plan/run spirit: the caller fills one plain GatherParams (device
// pointers and sizes, no CUDA types) and launch_gather() only launches it.
//
// Contract
// - Entry i of the fetch list moves page host_page[i] of the host store to slot slot[i] of the
//   HBM pool (kHostToDevice), or slot slot[i] to host page host_page[i] (kDeviceToHost: offload).
//   An entry whose host_page or slot is kSkipEntry is a hole and moves nothing (the residency
//   kernel writes per-pool fetch lists with holes, so no compaction is needed between the two).
// - Destinations of one launch are distinct (entries may run in any order, concurrently).
// - page_bytes is a positive multiple of 16; host_pages and hbm_slots are 16-byte aligned (CUDA
//   allocations are). host_pages is the *device* address of mapped pinned memory
//   (MappedHostBuffer::device()).
// - The list arrays live in device memory (or mapped memory) and are read by the kernel.
//
// Work split: a page is cut into pieces of at most kGatherPieceBytes; a warp copies one piece
// (a page of ≤ 8 KiB is one piece: a warp per page) with 16-byte loads, kGatherUnroll loads in
// flight per lane before the stores. Warps stride over the pieces of the whole list (a
// persistent grid: as many blocks as fit at once, at most kGatherBlocksPerSm per SM). Bytes moved:
// count · page_bytes each way; no other traffic besides the list itself.
#pragma once

#include <cstdint>
#include <type_traits>

struct CUstream_st;  // cudaStream_t without CUDA's headers

namespace spin::exec {

inline constexpr std::uint32_t kSkipEntry = 0xFFFFFFFFu;
inline constexpr std::uint32_t kGatherThreads = 256;
inline constexpr std::uint32_t kGatherBlocksPerSm = 8;
inline constexpr std::uint32_t kGatherUnroll = 8;
inline constexpr std::uint64_t kGatherPieceBytes = 8192;

enum class GatherDirection : std::uint32_t { kHostToDevice = 0, kDeviceToHost = 1 };

struct GatherParams {
  std::uint8_t* host_pages;        // [host pages, page_bytes] device address of mapped memory
  std::uint8_t* hbm_slots;         // [slots, page_bytes]
  std::uint64_t page_bytes;        // multiple of 16
  const std::uint32_t* host_page;  // [count] host page index or kSkipEntry
  const std::uint32_t* slot;       // [count] HBM slot index or kSkipEntry
  std::uint32_t count;             // entries in the list
  GatherDirection direction;
};
static_assert(std::is_trivially_copyable_v<GatherParams>);

// Launches the gather kernel on `stream` (nullptr: the default stream) with `blocks` blocks of
// kGatherThreads (0: the blocks that fit on the current device at once, at most
// kGatherBlocksPerSm per SM, fewer if the list is short). Checks the arguments
// (std::runtime_error naming the problem) and the launch; does not synchronise.
void launch_gather(const GatherParams& params, CUstream_st* stream = nullptr,
                   std::uint32_t blocks = 0);

}  // namespace spin::exec
