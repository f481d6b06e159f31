#include "sim/des/link.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/error.h"

namespace spin::sim {

Link::Link(EventQueue& events, double capacity_gbps)
    : events_(events), capacity_gbps_(capacity_gbps) {
  if (!(capacity_gbps > 0)) throw InvariantError("link: capacity must be > 0");
}

void Link::start(double bytes, double cap_gbps, TimeNs latency_ns, EventQueue::Action done) {
  if (!(cap_gbps > 0) || bytes < 0) throw InvariantError("link: a transfer needs a rate > 0");
  bytes_moved_ += bytes;
  Transfer t{bytes, std::min(cap_gbps, capacity_gbps_), 0, std::move(done)};
  if (bytes == 0) {
    events_.schedule(events_.now() + latency_ns, std::move(t.done));
    return;
  }
  if (latency_ns == 0) {
    join(std::move(t));
  } else {
    events_.schedule(events_.now() + latency_ns,
                     [this, t = std::move(t)]() mutable { join(std::move(t)); });
  }
}

void Link::join(Transfer t) {
  advance();
  active_.push_back(std::move(t));
  solve();
}

void Link::advance() {
  const double elapsed = static_cast<double>(events_.now() - updated_);
  for (Transfer& t : active_) t.remaining = std::max(0.0, t.remaining - t.rate * elapsed);
  updated_ = events_.now();
}

void Link::solve() {
  ++version_;
  // Max-min fairness: visit transfers by increasing cap; each takes min(cap, fair share of what
  // is left).
  std::vector<std::size_t> order(active_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return active_[a].cap < active_[b].cap; });
  double left = capacity_gbps_;
  double used = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    Transfer& t = active_[order[i]];
    t.rate = std::min(t.cap, left / static_cast<double>(order.size() - i));
    left -= t.rate;
    used += t.rate;
  }
  if (hook_) hook_(events_.now(), used / capacity_gbps_);
  if (active_.empty()) return;
  double soonest = std::numeric_limits<double>::infinity();
  for (const Transfer& t : active_) soonest = std::min(soonest, t.remaining / t.rate);
  const TimeNs at = events_.now() + static_cast<TimeNs>(std::ceil(soonest));
  events_.schedule(at, [this, v = version_] { on_completion(v); });
}

void Link::on_completion(std::uint64_t version) {
  if (version != version_) return;
  advance();
  // Everything that finishes by now (within half a nanosecond of work) completes, in join order.
  std::vector<EventQueue::Action> finished;
  std::erase_if(active_, [&](Transfer& t) {
    if (t.remaining > t.rate * 0.5) return false;
    finished.push_back(std::move(t.done));
    return true;
  });
  solve();
  for (auto& done : finished) done();
}

}  // namespace spin::sim
