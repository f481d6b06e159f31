// The continuous-batching scheduler against a simple token-counting memory rule.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "common/serving/scheduler.h"

using namespace spin::serving;

namespace {

// Memory counted in tokens: a request holds its context (or prefill target) tokens. A preempted
// request's KV is kept while it fits in `keep_room` tokens; it comes back whole on resuming.
class TokenMemory : public MemoryRule {
 public:
  explicit TokenMemory(std::uint64_t capacity, std::uint64_t keep_room = 0)
      : capacity_(capacity), keep_room_(keep_room) {}
  std::string unfit_reason(const RequestState& r) const override {
    return r.prompt_tokens + r.tokens <= capacity_ ? std::string() : std::string("too long");
  }
  bool admit(const RequestState& r) override {
    if (!take(r.id, r.resumes() ? r.context_tokens() : r.prefill_target)) return false;
    if (kept_.erase(r.id) > 0) kept_tokens_ -= r.context_tokens();
    return true;
  }
  bool keep(const RequestState& r) override {
    ++keep_calls_;
    if (kept_tokens_ + r.context_tokens() > keep_room_) return false;
    kept_tokens_ += r.context_tokens();
    kept_.insert(r.id);
    return true;
  }
  std::uint64_t keep_calls() const { return keep_calls_; }
  std::uint64_t kept_tokens() const { return kept_tokens_; }
  bool grow(const RequestState& r, std::uint32_t context) override { return take(r.id, context); }
  void release(const RequestState& r) override {
    used_ -= held_[r.id];
    held_.erase(r.id);
  }
  std::uint64_t used() const { return used_; }
  // Tokens held apart from any request, freed without the scheduler (KV on its way to host).
  void hold(std::uint64_t n) {
    used_ += n - held_outside_;
    held_outside_ = n;
  }
  bool releasing() const override { return held_outside_ > 0; }

 private:
  bool take(std::uint64_t id, std::uint64_t n) {
    std::uint64_t& h = held_[id];
    if (n <= h) return true;
    if (used_ + n - h > capacity_) return false;
    used_ += n - h;
    h = n;
    return true;
  }
  std::uint64_t capacity_, used_ = 0;
  std::map<std::uint64_t, std::uint64_t> held_;
  std::uint64_t keep_room_, kept_tokens_ = 0, keep_calls_ = 0, held_outside_ = 0;
  std::set<std::uint64_t> kept_;
};

RequestState request(std::uint64_t id, TimeNs arrival, std::uint32_t prompt, std::uint32_t tokens) {
  RequestState r;
  r.id = id;
  r.arrival_ns = arrival;
  r.prompt_tokens = prompt;
  r.tokens = tokens;
  return r;
}

}  // namespace

TEST_CASE("scheduler: chunked prefill, then one token per decode iteration", "[unit][serving]") {
  TokenMemory memory(1000);
  Scheduler s({request(0, 0, 250, 3)}, {8, 100, true}, memory);
  std::vector<std::uint32_t> chunks;
  TimeNs t = 0;
  while (true) {
    const IterationPlan p = s.plan(t);
    REQUIRE_FALSE(p.empty());
    REQUIRE(p.tokens() <= 100);
    for (const auto& c : p.prefills) chunks.push_back(c.tokens);
    s.complete(p, ++t);
    if (s.request(0).generated > 0) break;
  }
  CHECK(chunks == std::vector<std::uint32_t>{100, 100, 50});
  CHECK(s.request(0).first_token_ns == 3);  // the last chunk emits the first token
  IterationPlan p = s.plan(t);
  CHECK(p.decodes == std::vector<std::uint64_t>{0});
  s.complete(p, ++t);
  p = s.plan(t);
  s.complete(p, ++t);
  CHECK(s.request(0).phase == Phase::kFinished);
  CHECK(s.request(0).finish_ns == 5);
  CHECK(s.done());
  CHECK(memory.used() == 0);
}

TEST_CASE("scheduler: arrivals wait for their time; FCFS admission blocks on memory",
          "[unit][serving]") {
  TokenMemory memory(300);
  Scheduler s({request(0, 0, 200, 2), request(1, 5, 200, 2), request(2, 6, 50, 2)}, {8, 1000, true},
              memory);
  IterationPlan p = s.plan(0);
  REQUIRE(p.prefills.size() == 1);  // request 1 has not arrived
  CHECK(s.next_arrival() == 5);
  s.complete(p, 10);
  p = s.plan(10);
  // Request 1 does not fit beside 0; request 2 would, but must not overtake it.
  CHECK(p.decodes == std::vector<std::uint64_t>{0});
  CHECK(p.prefills.empty());
  s.complete(p, 11);  // request 0 finishes and frees its memory
  p = s.plan(11);
  REQUIRE(p.prefills.size() == 2);
  CHECK(p.prefills[0].id == 1);
  CHECK(p.prefills[1].id == 2);
}

TEST_CASE("scheduler: out of memory preempts the newest request, which resumes first",
          "[unit][serving]") {
  TokenMemory memory(210);
  Scheduler s({request(0, 0, 100, 50), request(1, 0, 100, 50)}, {8, 1000, true}, memory);
  IterationPlan p = s.plan(0);
  REQUIRE(p.prefills.size() == 2);
  TimeNs t = 1;
  s.complete(p, t);
  std::uint64_t preempted = 0;
  for (int i = 0; i < 20 && !preempted; ++i) {
    p = s.plan(t);
    if (!p.preempted.empty()) preempted = p.preempted.front() + 1;
    s.complete(p, ++t);
  }
  REQUIRE(preempted == 2);  // request 1, admitted last
  CHECK(s.request(1).preemptions == 1);
  // Recompute: it prefills its prompt and the tokens it had generated.
  CHECK(s.request(1).prefill_target > 100);
  while (!s.done()) {
    p = s.plan(t);
    REQUIRE_FALSE(p.empty());
    s.complete(p, ++t);
  }
  CHECK(s.request(0).finish_ns < s.request(1).finish_ns);
  CHECK(memory.used() == 0);
}

TEST_CASE("scheduler: a preempted request keeps its KV only where the memory rule has room",
          "[unit][serving]") {
  // As above, but the limits keep preempted KV (swap): request 1 is preempted out of decode.
  const auto run = [](std::uint64_t keep_room, std::vector<std::uint64_t>* resumed) {
    TokenMemory memory(210, keep_room);
    Scheduler s({request(0, 0, 100, 50), request(1, 0, 100, 50)}, {8, 1000, false}, memory);
    TimeNs t = 0;
    std::uint32_t target_after = 0;
    while (!s.done()) {
      const IterationPlan p = s.plan(t);
      REQUIRE_FALSE(p.empty());
      if (!p.preempted.empty() && target_after == 0) target_after = s.request(1).prefill_target;
      resumed->insert(resumed->end(), p.resumed.begin(), p.resumed.end());
      // A resumed request decodes in the iteration that resumes it.
      for (std::uint64_t id : p.resumed) CHECK(std::ranges::count(p.decodes, id) == 1);
      s.complete(p, ++t);
    }
    CHECK(s.request(1).preemptions == 1);
    CHECK(memory.keep_calls() == 1);
    CHECK(memory.used() == 0);
    CHECK(memory.kept_tokens() == 0);  // given back on resuming, or never taken
    return target_after;
  };
  // Room for its 100 + generated tokens: it keeps its KV and resumes decoding, no prefill.
  std::vector<std::uint64_t> resumed;
  CHECK(run(1000, &resumed) == 100);
  CHECK(resumed == std::vector<std::uint64_t>{1});
  // No room: it is recomputed (prefills its prompt and generated tokens) and never resumes.
  resumed.clear();
  CHECK(run(100, &resumed) > 100);
  CHECK(resumed.empty());
}

TEST_CASE("scheduler: a copy with a copy of the memory plans what the original will",
          "[unit][serving]") {
  TokenMemory memory(210);
  Scheduler s({request(0, 0, 100, 50), request(1, 0, 100, 50), request(2, 30, 60, 5)},
              {8, 1000, true}, memory);
  TimeNs t = 0;
  for (int i = 0; i < 3; ++i) {
    const IterationPlan p = s.plan(t);
    s.complete(p, ++t);
  }
  // Each run to the end, the copy first: iteration by iteration, the batch and the preemptions.
  const auto run = [](Scheduler& x, TimeNs at) {
    std::vector<std::vector<std::uint64_t>> seen;
    while (!x.done()) {
      const IterationPlan p = x.plan(at);
      std::vector<std::uint64_t> v = p.decodes;
      for (const PrefillChunk& c : p.prefills) v.push_back(100 + c.id);
      for (std::uint64_t id : p.preempted) v.push_back(200 + id);
      seen.push_back(v);
      x.complete(p, ++at);
    }
    return seen;
  };
  TokenMemory copied = memory;
  const std::uint64_t used = memory.used();
  Scheduler copy(s, copied);
  const auto forecast = run(copy, t);
  CHECK(memory.used() == used);  // the copy asked its own memory
  CHECK_FALSE(s.done());
  const auto actual = run(s, t);
  CHECK(forecast == actual);
  CHECK(std::any_of(actual.begin(), actual.end(), [](const auto& v) {
    return std::any_of(v.begin(), v.end(), [](std::uint64_t x) { return x >= 200; });
  }));  // a preemption happened after the copy was made
}

TEST_CASE("scheduler: a request that can never fit is rejected, not retried forever",
          "[unit][serving]") {
  TokenMemory memory(100);
  Scheduler s({request(0, 0, 500, 2), request(1, 0, 10, 2)}, {8, 1000, true}, memory);
  const IterationPlan p = s.plan(0);
  CHECK(p.rejected == std::vector<std::uint64_t>{0});
  CHECK(s.request(0).phase == Phase::kRejected);
  REQUIRE(p.prefills.size() == 1);
  CHECK(p.prefills[0].id == 1);
}

TEST_CASE("scheduler: with nothing running, a request waits for memory being released",
          "[unit][serving]") {
  TokenMemory memory(100);
  memory.hold(80);
  Scheduler s({request(0, 0, 50, 2)}, {8, 1000, true}, memory);
  // 50 tokens do not fit next to the 80 held, but the 80 are being released: it waits.
  IterationPlan p = s.plan(0);
  CHECK(p.empty());
  CHECK(p.rejected.empty());
  CHECK(s.request(0).phase == Phase::kQueued);
  memory.hold(0);
  p = s.plan(1);
  REQUIRE(p.prefills.size() == 1);
  CHECK(p.prefills[0].id == 0);
}

TEST_CASE("scheduler: a decoding request that cannot grow waits for memory being released",
          "[unit][serving]") {
  TokenMemory memory(100);
  Scheduler s({request(0, 0, 50, 3)}, {8, 1000, true}, memory);
  s.complete(s.plan(0), 1);  // prefilled: 51 tokens from the next iteration
  memory.hold(50);           // 50 + 50 held: no room to grow, but the 50 are being released
  IterationPlan p = s.plan(2);
  CHECK(p.decodes.empty());
  CHECK(p.preempted.empty());
  CHECK(s.request(0).phase == Phase::kDecode);
  CHECK(memory.used() == 100);  // it holds what it held
  memory.hold(0);
  p = s.plan(3);
  CHECK(p.decodes == std::vector<std::uint64_t>{0});
}

TEST_CASE("scheduler: batch limits cap requests and tokens per iteration", "[unit][serving]") {
  TokenMemory memory(100000);
  std::vector<RequestState> rs;
  for (std::uint64_t i = 0; i < 6; ++i) rs.push_back(request(i, 0, 10, 5));
  Scheduler s(std::move(rs), {4, 25, true}, memory);
  const IterationPlan p = s.plan(0);
  CHECK(p.prefills.size() == 3);  // 10 + 10 + 5 tokens
  CHECK(p.tokens() == 25);
  CHECK_FALSE(p.prefills[2].last);
}
