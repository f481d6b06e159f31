// The continuous-batching scheduler (DESIGN.md §3), host code shared by the simulator and the
// executor. It decides, iteration by iteration, which requests decode a token and which prefill
// a chunk of their prompt; it never reads a clock (time is injected) and never moves bytes.
//
// Per iteration (plan, then complete once the backend has run the plan):
// 1. Every decoding request must be able to grow by one token; when memory says no, the most
//    recently admitted running request is preempted (vLLM's rule) until it fits, unless memory
//    is being released (MemoryRule::releasing): then the request skips this iteration. A preempted
//    decoding request keeps its KV (swapped, or on host) when the limits say so and the memory
//    rule has room for it (MemoryRule::keep), and then resumes decoding; otherwise it recomputes
//    (prefills its prompt and generated tokens again).
// 2. Decoding requests join the batch in admission order, up to max_batch_requests.
// 3. The rest of the token budget (max_batch_tokens) goes to prefill chunks: requests already
//    prefilling first, then waiting requests in arrival order (preempted ones first), each
//    admitted only if memory admits it. A request that memory could not admit blocks those
//    behind it (FCFS, no overtaking). A preempted request that kept its KV resumes decoding in
//    the iteration that admits it (one token of the budget), as vLLM schedules a swapped-in
//    sequence in the step that swaps it in.
// A request produces `tokens` tokens: the first when its prefill completes, then one per decode
// iteration. Requests that can never fit are reported, not retried forever; one that does not fit
// while nothing runs waits only if memory is being released (MemoryRule::releasing).
//
// Memory is a MemoryRule supplied by the mode (dense: the whole KV; host-KV modes: the minimum
// working-set footprint). Complexity per plan: O(running + admitted) plus the rule's calls.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace spin::serving {

using TimeNs = std::uint64_t;

enum class Phase { kQueued, kPrefill, kDecode, kFinished, kRejected };

struct RequestState {
  std::uint64_t id = 0;  // index in the trace's request list
  TimeNs arrival_ns = 0;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t tokens = 0;  // tokens to generate (>= 1)
  Phase phase = Phase::kQueued;
  std::uint32_t prefill_target = 0;  // tokens to prefill: the prompt, plus generated tokens after
                                     // a recompute preemption
  std::uint32_t prefilled = 0;
  std::uint32_t generated = 0;
  std::uint32_t preemptions = 0;
  std::uint64_t admit_order = 0;  // larger = admitted later
  TimeNs first_admitted_ns = 0;
  TimeNs first_token_ns = 0;
  TimeNs finish_ns = 0;
  bool admitted_once = false;

  // Tokens in the request's KV once its prefill is done: prompt plus generated tokens.
  std::uint32_t context_tokens() const { return prompt_tokens + generated; }
  // Prefill done and tokens generated: a queued request in this state was preempted with its KV
  // kept, and resumes decoding without a prefill.
  bool resumes() const { return prefilled == prefill_target && generated > 0; }
};

// The mode's memory rule. Calls name requests by id; the scheduler keeps the call order legal:
// admit → (grow)* → (keep) → release, possibly again after a preemption.
class MemoryRule {
 public:
  virtual ~MemoryRule() = default;
  // Why the request cannot run alone on an empty GPU: the limit, what the request needs and what
  // there is (for the report of a rejected request); empty where it can.
  virtual std::string unfit_reason(const RequestState& r) const = 0;
  // Whether the request could ever run alone on an empty GPU (else it is rejected).
  bool fits_alone(const RequestState& r) const { return unfit_reason(r).empty(); }
  // Reserves the request's footprint to start (or resume) prefilling; false if it does not fit now.
  virtual bool admit(const RequestState& r) = 0;
  // The request's KV is about to hold `context_tokens` tokens; false if memory cannot hold it
  // (a rule that is releasing() then holds what it held before, for the request to wait).
  virtual bool grow(const RequestState& r, std::uint32_t context_tokens) = 0;
  // Frees what the request holds (finished or preempted).
  virtual void release(const RequestState& r) = 0;
  // A decoding request is preempted and the limits keep preempted KV (recompute_on_preempt
  // off): whether there is room to keep its KV (e.g. swap space in host memory), which it then
  // holds until its admit() to resume. False: it is recomputed instead. Called before release(r).
  virtual bool keep(const RequestState&) { return true; }
  // Whether memory is held that frees without a call here (KV still being copied out of HBM):
  // a decoding request that cannot grow waits for it rather than preempting, and a request that
  // does not fit while nothing runs waits for it rather than being rejected.
  virtual bool releasing() const { return false; }
};

struct PrefillChunk {
  std::uint64_t id;
  std::uint32_t start;   // first prompt position of the chunk
  std::uint32_t tokens;  // chunk length
  bool last;             // completes the prefill (the iteration emits the first token)
};

struct IterationPlan {
  std::vector<std::uint64_t> decodes;  // ids of decoding requests, admission order
  std::vector<PrefillChunk> prefills;
  std::vector<std::uint64_t> preempted;  // preempted while planning (already released)
  std::vector<std::uint64_t> resumed;    // re-admitted without recompute: their KV comes back
                                         // before this iteration, and they are in `decodes`
  std::vector<std::uint64_t> rejected;   // can never fit: rejected while planning
  bool empty() const { return decodes.empty() && prefills.empty(); }
  std::uint64_t tokens() const;
};

struct SchedulerLimits {
  std::uint32_t max_batch_requests = 256;
  std::uint32_t max_batch_tokens = 8192;
  bool recompute_on_preempt = true;  // else the KV is kept elsewhere (swapped or on host)
                                     // where the memory rule has room (MemoryRule::keep)
};

class Scheduler {
 public:
  Scheduler(std::vector<RequestState> requests, const SchedulerLimits& limits, MemoryRule& memory);
  // A copy of `other` (requests, queue, batch) that asks `memory` instead: with a copy of
  // other's memory rule, it plans what `other` would plan (the simulator runs one ahead of time).
  Scheduler(const Scheduler& other, MemoryRule& memory);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Requests whose arrival_ns <= now join the queue (in arrival order, then id).
  IterationPlan plan(TimeNs now);
  // The plan ran and ended at `end`: chunks advance, tokens are emitted, finished requests are
  // released. Returns the ids that finished.
  std::vector<std::uint64_t> complete(const IterationPlan& plan, TimeNs end);

  // When the next not-yet-queued request arrives, or UINT64_MAX if none.
  TimeNs next_arrival() const;
  bool done() const { return finished_ == requests_.size(); }
  const std::vector<RequestState>& requests() const { return requests_; }
  const RequestState& request(std::uint64_t id) const { return requests_[id]; }
  std::size_t running() const { return running_.size(); }
  std::size_t queued() const { return queue_.size(); }

 private:
  void preempt(std::uint64_t id, IterationPlan& plan);
  void arrive(TimeNs now);

  std::vector<RequestState> requests_;
  SchedulerLimits limits_;
  MemoryRule& memory_;
  std::vector<std::uint64_t> by_arrival_;  // ids sorted by (arrival, id)
  std::size_t arrived_ = 0;                // prefix of by_arrival_ that has arrived
  std::deque<std::uint64_t> queue_;        // waiting: preempted first, then by arrival
  std::vector<std::uint64_t> running_;     // admitted (prefill or decode), admission order
  std::uint64_t next_admit_order_ = 0;
  std::size_t finished_ = 0;  // finished or rejected
};

}  // namespace spin::serving
