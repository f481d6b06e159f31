// Wall-clock and process CPU time since construction, for the `spin bench` commands. CPU time is
// the process's, so on a single-threaded benchmark it is per core and insensitive to other load.
#pragma once

#include <chrono>
#include <ctime>

namespace spin::cli {

class Stopwatch {
 public:
  double wall_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
  }
  double cpu_seconds() const { return static_cast<double>(std::clock() - cpu_) / CLOCKS_PER_SEC; }

 private:
  std::chrono::steady_clock::time_point wall_ = std::chrono::steady_clock::now();
  std::clock_t cpu_ = std::clock();
};

}  // namespace spin::cli
