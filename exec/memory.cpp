#include "exec/memory.h"

#include <fmt/format.h>

#include <iostream>
#include <stdexcept>

namespace spin::exec {
namespace {

// Destructors must not throw: a failing free is reported and otherwise ignored.
void report_free_error(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::cerr << fmt::format("spin: warning: {} failed: {} ({})\n", what, cudaGetErrorName(err),
                             cudaGetErrorString(err));
  }
}

void check_page_bytes(std::uint64_t page_bytes) {
  if (page_bytes == 0 || page_bytes % 16 != 0) {
    throw std::invalid_argument(
        fmt::format("page_bytes: expected a positive multiple of 16, got {}", page_bytes));
  }
}

}  // namespace

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0) SPIN_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) report_free_error(cudaFree(ptr_), "cudaFree");
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) report_free_error(cudaFree(ptr_), "cudaFree");
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::fill(int value) {
  if (bytes_ == 0) return;
  SPIN_CUDA_CHECK(cudaMemset(ptr_, value, bytes_));
  SPIN_CUDA_CHECK(cudaDeviceSynchronize());
}

MappedHostBuffer::MappedHostBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  SPIN_CUDA_CHECK(cudaHostAlloc(&host_, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
  try {
    SPIN_CUDA_CHECK(cudaHostGetDevicePointer(&device_, host_, 0));
  } catch (...) {  // the destructor of a half-made object does not run
    report_free_error(cudaFreeHost(host_), "cudaFreeHost");
    throw;
  }
}

LaunchFence::~LaunchFence() {
  if (event_ != nullptr) report_free_error(cudaEventDestroy(event_), "cudaEventDestroy");
}

LaunchFence& LaunchFence::operator=(LaunchFence&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) report_free_error(cudaEventDestroy(event_), "cudaEventDestroy");
    event_ = std::exchange(other.event_, nullptr);
    pending_ = std::exchange(other.pending_, false);
  }
  return *this;
}

void LaunchFence::record(CUstream_st* stream) {
  if (event_ == nullptr) SPIN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  SPIN_CUDA_CHECK(cudaEventRecord(event_, stream));
  pending_ = true;
}

void LaunchFence::wait() {
  if (!pending_) return;
  SPIN_CUDA_CHECK(cudaEventSynchronize(event_));
  pending_ = false;
}

MappedHostBuffer::~MappedHostBuffer() {
  if (host_ != nullptr) report_free_error(cudaFreeHost(host_), "cudaFreeHost");
}

MappedHostBuffer& MappedHostBuffer::operator=(MappedHostBuffer&& other) noexcept {
  if (this != &other) {
    if (host_ != nullptr) report_free_error(cudaFreeHost(host_), "cudaFreeHost");
    host_ = std::exchange(other.host_, nullptr);
    device_ = std::exchange(other.device_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

HbmPagePool::HbmPagePool(std::uint32_t slots, std::uint64_t page_bytes)
    : slots_(slots), page_bytes_(page_bytes) {
  check_page_bytes(page_bytes);
  buffer_ = DeviceBuffer(std::size_t{slots} * page_bytes);
}

HostKvStore::HostKvStore(std::uint32_t streams, std::uint32_t pages_per_stream,
                         std::uint64_t page_bytes)
    : streams_(streams), pages_per_stream_(pages_per_stream), page_bytes_(page_bytes) {
  check_page_bytes(page_bytes);
  if (std::uint64_t{streams} * pages_per_stream > 0xFFFFFFFFu) {
    throw std::invalid_argument("host KV store: more than 2^32 - 1 pages");
  }
  buffer_ = MappedHostBuffer(std::size_t{streams} * pages_per_stream * page_bytes);
}

}  // namespace spin::exec
