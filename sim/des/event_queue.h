// The discrete-event engine: a clock and a queue of actions (DESIGN.md §3; docs/simulator.md).
//
// Time is integer nanoseconds of simulated time; no wall clock is read anywhere in the model.
// Ties are broken by scheduling order (the action scheduled first runs first), so a run is a
// deterministic function of its inputs. Actions may schedule further actions, at or after now.
// Complexity: O(log n) per schedule and per step.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace spin::sim {

using TimeNs = std::uint64_t;

class EventQueue {
 public:
  using Action = std::function<void()>;

  // Runs `action` at time `at` (>= now(), else InvariantError).
  void schedule(TimeNs at, Action action);
  // Runs the earliest action, advancing now(); false if there is none.
  bool step();
  TimeNs now() const { return now_; }
  bool empty() const { return heap_.empty(); }
  TimeNs next_time() const { return heap_.top().at; }

 private:
  struct Entry {
    TimeNs at;
    std::uint64_t seq;
    Action action;
  };
  struct Later {
    bool operator()(const Entry& a, const Entry& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };
  std::priority_queue<Entry, std::vector<Entry>, Later> heap_;
  TimeNs now_ = 0;
  std::uint64_t seq_ = 0;
};

}  // namespace spin::sim
