// The simulator's engine pieces: event order, fair sharing of a link, and the cost model's
// formulas against hand-computed values.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/config/config.h"
#include "sim/cost_model.h"
#include "sim/des/event_queue.h"
#include "sim/des/link.h"

using spin::sim::EventQueue;
using spin::sim::Link;
using spin::sim::TimeNs;

TEST_CASE("event queue: runs actions by time, ties in scheduling order", "[unit][sim]") {
  EventQueue q;
  std::string order;
  q.schedule(20, [&] { order += 'c'; });
  q.schedule(10, [&] { order += 'a'; });
  q.schedule(10, [&] {
    order += 'b';
    q.schedule(10, [&] { order += 'x'; });  // same time, scheduled later: runs after 'b'
  });
  while (q.step()) {
  }
  CHECK(order == "abxc");
  CHECK(q.now() == 20);
  CHECK_THROWS(q.schedule(5, [] {}));
}

TEST_CASE("link: concurrent transfers share the bandwidth fairly, re-solved on start and end",
          "[unit][sim]") {
  EventQueue q;
  Link link(q, 10.0);  // 10 bytes per ns
  std::vector<std::pair<char, TimeNs>> done;
  // A: 1000 bytes alone for 50 ns (500 bytes), then shares with B at 5 B/ns.
  link.start(1000, 100, 0, [&] { done.emplace_back('A', q.now()); });
  q.schedule(50, [&] { link.start(300, 100, 0, [&] { done.emplace_back('B', q.now()); }); });
  while (q.step()) {
  }
  // From t=50: A has 500 left, B 300, both at 5 B/ns: B ends at 110; A then has 200 left at 10
  // B/ns.
  REQUIRE(done.size() == 2);
  CHECK(done[0] == std::pair{'B', TimeNs{110}});
  CHECK(done[1] == std::pair{'A', TimeNs{130}});
  CHECK(link.bytes_moved() == 1300);
}

TEST_CASE("link: a capped transfer leaves the rest of the link to others (max-min fairness)",
          "[unit][sim]") {
  EventQueue q;
  Link link(q, 10.0);
  TimeNs slow = 0, fast = 0;
  std::vector<double> utilisation;
  link.set_utilisation_hook([&](TimeNs, double u) { utilisation.push_back(u); });
  link.start(200, 2.0, 0, [&] { slow = q.now(); });    // capped at 2 B/ns
  link.start(800, 100.0, 0, [&] { fast = q.now(); });  // takes the other 8 B/ns
  while (q.step()) {
  }
  CHECK(slow == 100);
  CHECK(fast == 100);
  CHECK(utilisation.front() == Approx(0.2));  // the first alone
  CHECK(utilisation.at(1) == Approx(1.0));
  CHECK(utilisation.back() == 0.0);
}

TEST_CASE("link: latency delays the start; empty transfers complete after it", "[unit][sim]") {
  EventQueue q;
  Link link(q, 4.0);
  TimeNs a = 0, b = 0;
  link.start(400, 4.0, 1000, [&] { a = q.now(); });
  link.start(0, 4.0, 7, [&] { b = q.now(); });
  while (q.step()) {
  }
  CHECK(a == 1100);
  CHECK(b == 7);
}

TEST_CASE("cost model: GEMM roofline, attention bandwidth, prefill FLOPs and the transfer table",
          "[unit][sim]") {
  const spin::config::Config c = spin::config::default_config();  // Qwen3-14B on an H100 SXM
  const spin::sim::CostModel cost(c.model, c.hardware);
  const double h = 5120, q = 40, kv = 8, d = 128, inter = 17408;
  const double params = h * (q + 2 * kv) * d + q * d * h + 3 * h * inter;
  CHECK(cost.layer_params() == static_cast<std::uint64_t>(params));
  const double bw = 3350 * 0.89;  // bytes per ns
  // One token: weight streaming dominates.
  CHECK(cost.layer_gemm_ns(1) == Approx(params * 2 / bw));
  // 8192 tokens: compute-bound at 70% of 989.5 TFLOP/s.
  CHECK(cost.layer_gemm_ns(8192) == Approx(2 * 8192 * params / (989.5e3 * 0.7)));
  CHECK(cost.hbm_ns(1e6) == Approx(1e6 / bw));
  // Causal: 4·heads·d FLOPs per pair, chunk·(prefix + (chunk+1)/2) pairs, at 65% of peak.
  CHECK(cost.prefill_attention_ns(1024, 2048) ==
        Approx(4 * q * d * 1024 * (2048 + 1025 / 2.0) / (989.5e3 * 0.65)));
  CHECK(cost.gather_gbps(2048) == Approx(50.1));
  CHECK(cost.gather_gbps(1024) == Approx(50.1));  // clamped below the table
  CHECK(cost.per_page_copy_gbps(4096) == Approx(0.7 + 0.5 * (2.6 - 0.7)));  // halfway in log
  CHECK(cost.kv_bytes_per_token_layer() == 2 * 8 * 128 * 2);
  CHECK(cost.launch_ns(3) == Approx(12000));
}
