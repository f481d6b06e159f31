// Memory of the CUDA backend (DESIGN.md §6): RAII owners of device (HBM) and pinned, mapped host
// memory, and the two page stores built on them.
//
// - DeviceBuffer: cudaMalloc'd bytes; DeviceArray<T>: the same, typed, with checked copies.
// - MappedHostBuffer: cudaHostAlloc(Mapped | Portable) bytes, page-locked, with the device pointer
//   kernels read it through (the gather-copy path reads host pages directly over PCIe).
// - HbmPagePool: `slots` slots of `page_bytes` in HBM, slot i at slot_bytes · i.
// - HostKvStore: the full KV of `streams` streams in pinned host memory, page-granular and
//   head-major: stream s (request, layer, KV head order), logical page p is host page
//   s · pages_per_stream + p, and a page (K and V of page_tokens tokens of one stream) is one
//   contiguous run of page_bytes bytes.
//
// Every CUDA call is checked (cuda_check.h): allocation failures throw std::runtime_error naming
// the call and the bytes asked for. Owners are movable, not copyable; destructors free and report
// (never throw) a failing free on stderr. Page sizes are multiples of 16 bytes (the gather kernel
// moves 16-byte words); buffers are 256-byte aligned by CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "exec/cuda_check.h"

namespace spin::exec {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  // Sets every byte to `value` (stream-ordered on the default stream, then synchronised).
  void fill(int value);

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A typed device array with synchronous, checked copies to and from host spans.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t size) : buffer_(size * sizeof(T)), size_(size) {}
  explicit DeviceArray(std::span<const T> host) : DeviceArray(host.size()) { upload(host); }

  T* data() const { return static_cast<T*>(buffer_.data()); }
  std::size_t size() const { return size_; }
  // Copies host[0, n) to elements [offset, offset + n); n + offset <= size().
  void upload(std::span<const T> host, std::size_t offset = 0) {
    if (host.empty()) return;
    SPIN_CUDA_CHECK(
        cudaMemcpy(data() + offset, host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
  }
  // Copies elements [offset, offset + host.size()) to host.
  void download(std::span<T> host, std::size_t offset = 0) const {
    if (host.empty()) return;
    SPIN_CUDA_CHECK(
        cudaMemcpy(host.data(), data() + offset, host.size_bytes(), cudaMemcpyDeviceToHost));
  }
  void fill_bytes(int value) { buffer_.fill(value); }

 private:
  DeviceBuffer buffer_;
  std::size_t size_ = 0;
};

class MappedHostBuffer {
 public:
  MappedHostBuffer() = default;
  explicit MappedHostBuffer(std::size_t bytes);
  ~MappedHostBuffer();
  MappedHostBuffer(MappedHostBuffer&& other) noexcept { *this = std::move(other); }
  MappedHostBuffer& operator=(MappedHostBuffer&& other) noexcept;
  MappedHostBuffer(const MappedHostBuffer&) = delete;
  MappedHostBuffer& operator=(const MappedHostBuffer&) = delete;

  std::uint8_t* host() const { return static_cast<std::uint8_t*>(host_); }
  std::uint8_t* device() const { return static_cast<std::uint8_t*>(device_); }
  std::size_t bytes() const { return bytes_; }

 private:
  void* host_ = nullptr;
  void* device_ = nullptr;  // the device-side address of host_ (cudaHostGetDevicePointer)
  std::size_t bytes_ = 0;
};

// The end of the last launch of an object that uploads its inputs in plan() and launches on a
// caller's stream in run(): plan() waits for it, so that its synchronous uploads (on the legacy
// default stream, which a cudaStreamNonBlocking stream does not wait for) never overwrite inputs
// that a kernel still queued or running may read. record() after each launch; wait() before
// the next upload (returns at once when nothing is pending). Movable, not copyable.
class LaunchFence {
 public:
  LaunchFence() = default;
  ~LaunchFence();
  LaunchFence(LaunchFence&& other) noexcept { *this = std::move(other); }
  LaunchFence& operator=(LaunchFence&& other) noexcept;
  LaunchFence(const LaunchFence&) = delete;
  LaunchFence& operator=(const LaunchFence&) = delete;

  void record(CUstream_st* stream);
  void wait();

 private:
  cudaEvent_t event_ = nullptr;  // created at the first record()
  bool pending_ = false;
};

// HBM slots of one page each: the page cache's physical storage.
class HbmPagePool {
 public:
  HbmPagePool(std::uint32_t slots, std::uint64_t page_bytes);
  std::uint8_t* slot(std::uint32_t i) const {
    return static_cast<std::uint8_t*>(buffer_.data()) + page_bytes_ * i;
  }
  std::uint8_t* data() const { return static_cast<std::uint8_t*>(buffer_.data()); }
  std::uint32_t slots() const { return slots_; }
  std::uint64_t page_bytes() const { return page_bytes_; }
  std::size_t bytes() const { return buffer_.bytes(); }
  void fill(int value) { buffer_.fill(value); }

 private:
  DeviceBuffer buffer_;
  std::uint32_t slots_;
  std::uint64_t page_bytes_;
};

// The host KV store: every page of every stream, in pinned, mapped host memory.
class HostKvStore {
 public:
  HostKvStore(std::uint32_t streams, std::uint32_t pages_per_stream, std::uint64_t page_bytes);
  std::uint32_t page_index(std::uint32_t stream, std::uint32_t page) const {
    return stream * pages_per_stream_ + page;
  }
  std::uint8_t* host_page(std::uint32_t index) const {
    return buffer_.host() + page_bytes_ * index;
  }
  std::uint8_t* host_data() const { return buffer_.host(); }
  std::uint8_t* device_data() const { return buffer_.device(); }  // for kernels
  std::uint32_t streams() const { return streams_; }
  std::uint32_t pages_per_stream() const { return pages_per_stream_; }
  std::uint32_t pages() const { return streams_ * pages_per_stream_; }
  std::uint64_t page_bytes() const { return page_bytes_; }
  std::size_t bytes() const { return buffer_.bytes(); }

 private:
  MappedHostBuffer buffer_;
  std::uint32_t streams_;
  std::uint32_t pages_per_stream_;
  std::uint64_t page_bytes_;
};

}  // namespace spin::exec
