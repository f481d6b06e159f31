// A fixed set of worker threads that run one indexed loop at a time (the batch's requests in a
// simulator iteration). run(n, fn) calls fn(i) for every i < n across the workers and the calling
// thread, and returns when all are done; the first exception is rethrown. Work is split by an
// atomic counter, so which thread runs which index varies, but fn(i) must write only to slot i,
// which keeps results independent of the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace spin::sim {

class ParallelFor {
 public:
  explicit ParallelFor(unsigned threads);
  ~ParallelFor();
  ParallelFor(const ParallelFor&) = delete;
  ParallelFor& operator=(const ParallelFor&) = delete;

  void run(std::size_t n, const std::function<void(std::size_t)>& fn);

 private:
  void work();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  const std::function<void(std::size_t)>* fn_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  std::uint64_t generation_ = 0;
  unsigned busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace spin::sim
