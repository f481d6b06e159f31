#include "sim/des/event_queue.h"

#include <fmt/format.h>

#include "common/error.h"

namespace spin::sim {

void EventQueue::schedule(TimeNs at, Action action) {
  if (at < now_)
    throw InvariantError(
        fmt::format("event queue: an action at {} ns is before now ({} ns)", at, now_));
  heap_.push({at, seq_++, std::move(action)});
}

bool EventQueue::step() {
  if (heap_.empty()) return false;
  // The action is moved out before it runs, since it may schedule more.
  Entry e = std::move(const_cast<Entry&>(heap_.top()));
  heap_.pop();
  now_ = e.at;
  e.action();
  return true;
}

}  // namespace spin::sim
