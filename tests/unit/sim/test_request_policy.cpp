// The request policy driver: running ahead (blocks of steps per layer, under predicted caches,
// rewound when a prediction is wrong) gives exactly the counts of lockstep stepping.
#include <catch2/catch.hpp>

#include <algorithm>

#include "common/policy/cache_config.h"
#include "sim/request_policy.h"
#include "traces/gen/generator.h"

namespace {

spin::gen::TraceGenConfig small_config(const std::string& algorithm) {
  spin::gen::TraceGenConfig g;
  g.generator.algorithm = algorithm;
  g.generator.seed = 11;
  g.model.layers = 3;
  g.generator.workload.name = "fixed";
  g.generator.workload.requests = 1;
  g.generator.workload.prompt_tokens = 8192;
  g.generator.workload.output_tokens = 1100;  // RetroInfer re-indexes after 1024 generated tokens
  return g;
}

}  // namespace

TEST_CASE("request policy: running ahead gives the counts of lockstep, wrong predictions included",
          "[unit][sim]") {
  const auto [algorithm, policy, scope] =
      GENERATE(std::tuple{"shadowkv", "bucketed-lru", spin::policy::PoolScope::kRequestLayer},
               std::tuple{"retroinfer", "bucketed-lru", spin::policy::PoolScope::kRequestLayer},
               std::tuple{"shadowkv", "lru", spin::policy::PoolScope::kRequestLayer},
               std::tuple{"shadowkv", "belady", spin::policy::PoolScope::kRequestLayer},
               std::tuple{"shadowkv", "bucketed-lru", spin::policy::PoolScope::kStream},
               std::tuple{"shadowkv", "bucketed-lru", spin::policy::PoolScope::kRequest});
  INFO(algorithm << " " << policy << " scope " << static_cast<int>(scope));
  const spin::gen::Generator source(small_config(algorithm));
  spin::policy::CacheConfig cache;
  cache.policy = policy;
  cache.pool_scope = scope;
  spin::sim::RequestPolicy lockstep(source, 0, cache, false, {}, 1);
  spin::sim::RequestPolicy ahead(source, 0, cache, false, {}, 8);
  const std::uint32_t prompt = source.requests()[0].prompt_tokens;
  const std::uint32_t steps = source.requests()[0].decode_steps;
  // The cache follows k = 4, except in runs of steps where memory pressure lowers it to k = 1.5
  // or a grant raises it to k = 5: the predictions (always k = 4) are then wrong, at times in
  // the middle of a block, at times for one step only.
  std::uint64_t state = 1;
  for (std::uint32_t s = 0; s < steps; ++s) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const unsigned pick = static_cast<unsigned>(state >> 61);
    const double k = pick == 0 ? 1.5 : (pick == 1 ? 5.0 : 4.0);
    const std::uint64_t pages = lockstep.cache_pages_at(prompt + s, k);
    lockstep.step(s, pages, {4.0});
    ahead.step(s, pages, {4.0});
    INFO("step " << s);
    CHECK(ahead.step_total() == lockstep.step_total());
    CHECK(std::ranges::equal(ahead.step_layers(), lockstep.step_layers()));
  }
  CHECK(ahead.total() == lockstep.total());
  CHECK(std::ranges::equal(ahead.layers(), lockstep.layers()));
  CHECK(ahead.peak_metadata() == lockstep.peak_metadata());
  CHECK(lockstep.rewinds() == 0);
  if (scope == spin::policy::PoolScope::kRequestLayer) {
    CHECK(ahead.rewinds() > 0);
  } else {
    CHECK(ahead.rewinds() == 0);  // other scopes run one engine in lockstep
  }
}
