#include "common/serving/scheduler.h"

#include <algorithm>
#include <limits>

#include "common/error.h"

namespace spin::serving {

std::uint64_t IterationPlan::tokens() const {
  std::uint64_t t = decodes.size();
  for (const PrefillChunk& c : prefills) t += c.tokens;
  return t;
}

Scheduler::Scheduler(std::vector<RequestState> requests, const SchedulerLimits& limits,
                     MemoryRule& memory)
    : requests_(std::move(requests)), limits_(limits), memory_(memory) {
  for (std::uint64_t i = 0; i < requests_.size(); ++i) {
    RequestState& r = requests_[i];
    if (r.id != i) throw InvariantError("scheduler: request ids must be their indices");
    if (r.prompt_tokens == 0 || r.tokens == 0)
      throw InvariantError("scheduler: a request needs a prompt and at least one token");
    r.phase = Phase::kQueued;
    r.prefill_target = r.prompt_tokens;
    by_arrival_.push_back(i);
  }
  std::stable_sort(by_arrival_.begin(), by_arrival_.end(), [&](std::uint64_t a, std::uint64_t b) {
    return requests_[a].arrival_ns < requests_[b].arrival_ns;
  });
}

Scheduler::Scheduler(const Scheduler& other, MemoryRule& memory)
    : requests_(other.requests_),
      limits_(other.limits_),
      memory_(memory),
      by_arrival_(other.by_arrival_),
      arrived_(other.arrived_),
      queue_(other.queue_),
      running_(other.running_),
      next_admit_order_(other.next_admit_order_),
      finished_(other.finished_) {}

TimeNs Scheduler::next_arrival() const {
  return arrived_ < by_arrival_.size() ? requests_[by_arrival_[arrived_]].arrival_ns
                                       : std::numeric_limits<TimeNs>::max();
}

void Scheduler::arrive(TimeNs now) {
  while (arrived_ < by_arrival_.size() && requests_[by_arrival_[arrived_]].arrival_ns <= now)
    queue_.push_back(by_arrival_[arrived_++]);
}

void Scheduler::preempt(std::uint64_t id, IterationPlan& plan) {
  RequestState& r = requests_[id];
  const bool keep = !limits_.recompute_on_preempt && r.phase == Phase::kDecode && memory_.keep(r);
  memory_.release(r);
  running_.erase(std::find(running_.begin(), running_.end(), id));
  ++r.preemptions;
  if (!keep) {
    r.prefill_target = r.prompt_tokens + r.generated;
    r.prefilled = 0;
  }
  r.phase = Phase::kQueued;
  queue_.push_front(id);
  plan.preempted.push_back(id);
}

IterationPlan Scheduler::plan(TimeNs now) {
  arrive(now);
  IterationPlan plan;

  // 1. Room for every decoding request's next token; preempt the newest until it fits, or where
  // memory is being released, let the request wait for it.
  std::vector<std::uint64_t> waiting;
  for (std::size_t i = 0; i < running_.size();) {
    const RequestState& r = requests_[running_[i]];
    if (r.phase == Phase::kDecode && !memory_.grow(r, r.context_tokens())) {
      if (memory_.releasing()) {
        waiting.push_back(r.id);
      } else {
        preempt(running_.back(), plan);
        continue;  // retry i (or stop, if it was the one preempted)
      }
    }
    ++i;
  }

  // 2. Decoding requests, in admission order.
  for (std::uint64_t id : running_) {
    if (plan.decodes.size() >= limits_.max_batch_requests) break;
    if (requests_[id].phase == Phase::kDecode && !std::ranges::count(waiting, id))
      plan.decodes.push_back(id);
  }

  // 3. Prefill chunks: running prefills first, then admissions from the queue.
  std::uint64_t budget = limits_.max_batch_tokens > plan.decodes.size()
                             ? limits_.max_batch_tokens - plan.decodes.size()
                             : 0;
  std::size_t batch = plan.decodes.size();
  const auto add_chunk = [&](RequestState& r) {
    const std::uint32_t left = r.prefill_target - r.prefilled;
    const std::uint32_t n = static_cast<std::uint32_t>(std::min<std::uint64_t>(left, budget));
    plan.prefills.push_back({r.id, r.prefilled, n, n == left});
    budget -= n;
    ++batch;
  };
  for (std::uint64_t id : running_) {
    if (budget == 0 || batch >= limits_.max_batch_requests) break;
    RequestState& r = requests_[id];
    if (r.phase == Phase::kPrefill) add_chunk(r);
  }
  while (!queue_.empty() && batch < limits_.max_batch_requests && budget > 0) {
    RequestState& r = requests_[queue_.front()];
    const bool resume = r.resumes();
    const auto reject = [&] {
      r.phase = Phase::kRejected;
      ++finished_;
      plan.rejected.push_back(r.id);
      queue_.pop_front();
    };
    if (!memory_.fits_alone(r)) {
      reject();
      continue;
    }
    if (!memory_.admit(r)) {
      if (running_.empty() && !memory_.releasing()) {  // nothing to wait for: it cannot fit
        reject();
        continue;
      }
      break;  // FCFS: wait until running requests free memory
    }
    queue_.pop_front();
    running_.push_back(r.id);
    r.admit_order = next_admit_order_++;
    if (!r.admitted_once) {
      r.admitted_once = true;
      r.first_admitted_ns = now;
    }
    if (resume) {
      r.phase = Phase::kDecode;
      plan.resumed.push_back(r.id);
      plan.decodes.push_back(r.id);
      --budget;
      ++batch;
    } else {
      r.phase = Phase::kPrefill;
      add_chunk(r);
    }
  }
  return plan;
}

std::vector<std::uint64_t> Scheduler::complete(const IterationPlan& plan, TimeNs end) {
  std::vector<std::uint64_t> finished;
  const auto emit = [&](RequestState& r) {
    ++r.generated;
    if (r.generated == 1) r.first_token_ns = end;
    if (r.generated >= r.tokens) {
      r.phase = Phase::kFinished;
      r.finish_ns = end;
      memory_.release(r);
      running_.erase(std::find(running_.begin(), running_.end(), r.id));
      ++finished_;
      finished.push_back(r.id);
    }
  };
  for (const PrefillChunk& c : plan.prefills) {
    RequestState& r = requests_[c.id];
    r.prefilled += c.tokens;
    if (c.last) {
      r.phase = Phase::kDecode;
      emit(r);
    }
  }
  for (std::uint64_t id : plan.decodes) emit(requests_[id]);
  return finished;
}

}  // namespace spin::serving
