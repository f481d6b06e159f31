// A link whose bandwidth concurrent transfers share fairly: one direction of PCIe
// (docs/simulator.md, "Transfers").
//
// Each transfer waits its latency, then joins the link; active transfers get max-min fair
// shares of the link's capacity, each capped at its own rate (a gather kernel or per-page copies
// reach less than the link for small pages: the hardware profile's transfer table). Shares are
// re-solved only when a transfer joins or completes (SimGrid's rule), and completion events are
// scheduled from the shares in force. Deterministic: ties complete in start order.
// Complexity: O(active · log active) per join or completion.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "sim/des/event_queue.h"

namespace spin::sim {

class Link {
 public:
  // Called with the time and the link's utilisation in [0, 1] whenever the shares change.
  using UtilisationHook = std::function<void(TimeNs, double)>;

  Link(EventQueue& events, double capacity_gbps);

  // Moves `bytes` at most at `cap_gbps` after `latency_ns`; `done` runs when the last byte
  // arrives (right after the latency for 0 bytes).
  void start(double bytes, double cap_gbps, TimeNs latency_ns, EventQueue::Action done);

  void set_utilisation_hook(UtilisationHook hook) { hook_ = std::move(hook); }
  double capacity_gbps() const { return capacity_gbps_; }
  double bytes_moved() const { return bytes_moved_; }
  std::size_t active() const { return active_.size(); }

 private:
  struct Transfer {
    double remaining;  // bytes
    double cap;        // bytes per ns
    double rate = 0;   // bytes per ns, from the last solve
    EventQueue::Action done;
  };
  void join(Transfer t);
  void advance();  // remaining bytes up to now
  void solve();    // fair shares, and the next completion event
  void on_completion(std::uint64_t version);

  EventQueue& events_;
  double capacity_gbps_;
  std::vector<Transfer> active_;  // in join order
  TimeNs updated_ = 0;
  std::uint64_t version_ = 0;  // completion events of older solves are ignored
  double bytes_moved_ = 0;
  UtilisationHook hook_;
};

}  // namespace spin::sim
