// Wall-clock and process CPU time since construction, for the `spin bench` commands. CPU time is
// the process's, so on a single-threaded benchmark it is per core and does not count the time
// other processes take the core (a neighbour on the same physical core still slows it).
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <iostream>
#include <string_view>

namespace spin::cli {

// Some kernels count process CPU time in scheduler ticks (4 ms), so a run much shorter than this
// may be counted as far less CPU time than it took: its rate per CPU second means little, and
// the fastest of several such runs is the most under-counted. The benchmarks warn below it.
inline constexpr double kShortestTimedCpuSeconds = 0.1;

// Warns on stderr where a reported run took less CPU time than kShortestTimedCpuSeconds;
// `more` says how to time more work (an option of the command).
inline void warn_if_short(std::string_view command, std::string_view more, double cpu_seconds) {
  if (cpu_seconds >= kShortestTimedCpuSeconds) return;
  std::cerr << fmt::format(
      "spin {}: warning: a reported run took {:.3f} CPU s, under {} s, which some kernels count "
      "in 4 ms ticks: its rate per CPU second is unreliable; time more work ({})\n",
      command, cpu_seconds, kShortestTimedCpuSeconds, more);
}

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
