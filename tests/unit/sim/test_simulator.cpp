// The serving simulator end to end on the bundled sample trace (Qwen3-14B, ShadowKV, 4 requests
// of 8192 prompt tokens and 64 decode steps): agreement with replay, determinism, the memory
// rules of the modes, and its errors.
#include <catch2/catch.hpp>

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config/config.h"
#include "common/trace/file_source.h"
#include "common/trace/memory_source.h"
#include "sim/cost_model.h"
#include "sim/replay.h"
#include "sim/sim_outputs.h"
#include "sim/simulator.h"
#include "sim/trace_source.h"
#include "tests/support.h"

using spin::test::read_file;
using spin::test::run_spin;
using spin::test::source_path;

namespace {

spin::config::Config config(std::vector<std::string> sets = {}) {
  sets.push_back("trace.path=" + source_path("traces/sample.spt").string());
  return spin::config::default_config(sets);
}

// The sample trace with every request arriving at once, so they batch and compete for memory.
spin::trace::MemorySource burst() {
  spin::trace::TraceData data = spin::trace::read_all(source_path("traces/sample.spt"));
  for (auto& r : data.requests) r.info.arrival_us = 0;
  return spin::trace::MemorySource(std::move(data));
}

spin::sim::SimResult run(const spin::trace::TraceSource& source, const spin::config::Config& c,
                         unsigned threads = 1) {
  spin::sim::SimOptions o;
  o.threads = threads;
  o.keep_iterations = true;
  return spin::sim::simulate(c, source, o);
}

}  // namespace

TEST_CASE("simulator: hit counts agree exactly with replay for every cache policy", "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  for (const std::string policy : {"bucketed-lru", "lru", "belady"}) {
    INFO(policy);
    const spin::config::Config c = config({"cache.policy=" + policy});
    spin::sim::ReplayOptions ro;
    ro.cache = c.cache;
    const spin::sim::ReplayResult replayed = spin::sim::replay(source, ro);
    const spin::sim::SimResult simulated = run(source, c);
    CHECK(simulated.policy_total.accesses == replayed.total.accesses);
    CHECK(simulated.policy_total.hits == replayed.total.hits);
    CHECK(simulated.policy_total.misses == replayed.total.misses);
    CHECK(simulated.policy_total.victims == replayed.total.victims);
    for (size_t l = 0; l < replayed.layers.size(); ++l)
      CHECK(simulated.policy_layers[l].hits == replayed.layers[l].hits);
    CHECK(simulated.batch_max == 4);
  }
}

TEST_CASE("simulator: same inputs give byte-identical outputs, whatever the thread count",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  const spin::config::Config c = config();
  spin::sim::SimOptions o;
  o.keep_iterations = true;
  o.threads = 1;
  const spin::sim::SimResult a = spin::sim::simulate(c, source, o);
  o.threads = 3;
  const spin::sim::SimResult b = spin::sim::simulate(c, source, o);
  CHECK(spin::sim::summary_json(a).dump() == spin::sim::summary_json(b).dump());
  CHECK(spin::sim::requests_csv(a) == spin::sim::requests_csv(b));
  CHECK(spin::sim::steps_csv(a) == spin::sim::steps_csv(b));
  CHECK(a.timeline_json == b.timeline_json);
  const auto timeline = nlohmann::json::parse(a.timeline_json);
  CHECK(timeline["traceEvents"].size() > 100);
}

TEST_CASE("simulator: running ahead gives the outputs of lockstep, under memory pressure too",
          "[unit][sim]") {
  // Two requests arrive at once, the others later, while the first two decode.
  spin::trace::TraceData data = spin::trace::read_all(source_path("traces/sample.spt"));
  for (std::size_t i = 0; i < data.requests.size(); ++i)
    data.requests[i].info.arrival_us = i < 2 ? 0 : 150'000 * i;
  const spin::trace::MemorySource staggered(std::move(data));
  const spin::trace::MemorySource all_at_once = burst();
  // 29 GiB of HBM (27.5 GiB of weights): the buffers of the running requests shrink as the
  // others are admitted and grow as they finish. When every request arrives at once, the
  // forecast of the caches (the scheduler run ahead) is exact; later arrivals are admitted at
  // iterations it guessed from the last one's duration, and some guesses are wrong, so caches a
  // layer ran ahead under are rewound (with the rewind left out, this test fails).
  // A slow device-to-host link holds prompts in HBM until times the forecast does not know.
  struct Case {
    const spin::trace::MemorySource* source;
    std::string hbm;
    bool rewound;
    std::string d2h_gbps = "55.2";
  };
  for (const Case& k : {Case{&all_at_once, "80", false}, Case{&all_at_once, "29", false},
                        Case{&staggered, "29.3", true}, Case{&all_at_once, "29", true, "1"}}) {
    INFO("hbm " << k.hbm << (k.source == &staggered ? ", staggered" : ", at once") << ", d2h "
                << k.d2h_gbps);
    std::uint64_t rewinds = 0;  // of the last run
    const auto outputs = [&](const std::string& run_ahead) {
      const spin::sim::SimResult r =
          run(*k.source,
              config({"hardware.hbm_gib=" + k.hbm, "serving.gpu_memory_utilization=1",
                      "hardware.pcie_d2h_gbps=" + k.d2h_gbps, "sim.run_ahead=" + run_ahead}));
      rewinds = r.run_ahead_rewinds;
      return spin::sim::summary_json(r).dump() + spin::sim::requests_csv(r) +
             spin::sim::steps_csv(r);
    };
    const std::string lockstep = outputs("1");
    CHECK(rewinds == 0);
    CHECK(outputs("3") == lockstep);
    CHECK(outputs("32") == lockstep);
    CHECK((rewinds > 0) == k.rewound);
  }
}

TEST_CASE("simulator: timing follows the cost model and the batch", "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  const spin::sim::SimResult r = run(source, config());
  const auto s = spin::sim::summary_json(r);
  CHECK(s["requests_finished"] == 4);
  CHECK(s["output_tokens"] == 4 * 64);
  // Every request's tokens come one per iteration after its first: TPOT is the decode
  // iteration time, at least the weight streaming of one forward pass (27.5 GiB at 2981 GB/s).
  const double weights_s = static_cast<double>(r.weight_bytes) / (3350e9 * 0.89);
  CHECK(s["tpot_s"]["p50"].get<double>() > weights_s);
  CHECK(s["tpot_s"]["p50"].get<double>() < 2 * weights_s);
  for (const auto& q : r.requests) {
    CHECK(q.first_token_ns > q.arrival_ns);
    CHECK(q.finish_ns > q.first_token_ns);
  }
  // The iterations tile time without gaps while requests run.
  for (size_t i = 1; i < r.iterations.size(); ++i)
    CHECK(r.iterations[i].start_ns == r.iterations[i - 1].end_ns);
  // decode_only sums the iterations without a prefill chunk: tokens / their time.
  std::uint64_t decode_iterations = 0, decode_tokens = 0;
  spin::sim::TimeNs decode_ns = 0;
  for (const auto& it : r.iterations) {
    if (it.prefill_tokens > 0 || it.decodes == 0) continue;
    ++decode_iterations;
    decode_tokens += it.decodes;
    decode_ns += it.end_ns - it.start_ns;
  }
  REQUIRE(decode_iterations > 0);
  CHECK(decode_iterations < r.iterations.size());  // the prefills were iterations too
  CHECK(s["decode_only"]["iterations"] == decode_iterations);
  CHECK(s["decode_only"]["tokens_per_s"].get<double>() ==
        Approx(static_cast<double>(decode_tokens) / (static_cast<double>(decode_ns) * 1e-9)));
  CHECK(s["decode_only"]["batch_mean"].get<double>() <= 4);
  CHECK(s["decode_only"]["tokens_per_s"].get<double>() >
        s["throughput_tokens_per_s"].get<double>());  // prefill time is left out
  // Spin fetched misses over PCIe and offloaded the prompts' KV.
  CHECK(r.h2d_bytes > 0);
  CHECK(r.d2h_bytes >= 4.0 * 8192 * 163840);
  // An ideal envelope (free transfers, Belady) is at least as fast as spin.
  const auto ideal = spin::sim::summary_json(run(source, config({"serving.mode=ideal:shadowkv"})));
  CHECK(ideal["duration_s"].get<double>() <= s["duration_s"].get<double>());
  CHECK(ideal["hit_ratio"].get<double>() >= s["hit_ratio"].get<double>());
}

TEST_CASE("simulator: under memory pressure dense preempts while spin keeps the whole batch",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  // 27.5 GiB of weights; 30 GiB of HBM leaves ~2.5 GiB of KV: one 8K request fits densely
  // (1.25 GiB), not four; spin needs only the working set.
  const std::vector<std::string> small = {"hardware.hbm_gib=30",
                                          "serving.gpu_memory_utilization=1"};
  auto sets = small;
  sets.push_back("serving.mode=dense");
  const spin::sim::SimResult dense = run(source, config(sets));
  sets.back() = "serving.mode=spin:shadowkv";
  const spin::sim::SimResult spin_run = run(source, config(sets));
  CHECK(dense.batch_max < 4);
  CHECK(spin_run.batch_max == 4);
  CHECK(spin_run.end_ns < dense.end_ns);
  for (const auto& q : dense.requests) CHECK_FALSE(q.rejected);

  // With swap (dense-offload) the preempted KV crosses PCIe both ways and is held in host
  // memory meanwhile. 30.0126 GiB leaves 2.69 GB of KV: two 8K prompts (1.34 GB each) fit, and
  // the first blocks they grow by do, but not their 64 tokens each, so the newer is preempted.
  sets = {"hardware.hbm_gib=30.0126", "serving.gpu_memory_utilization=1",
          "serving.mode=dense-offload"};
  const spin::sim::SimResult offload = run(source, config(sets));
  REQUIRE(offload.preemptions > 0);
  CHECK(offload.d2h_bytes > 0);
  CHECK(offload.h2d_bytes == offload.d2h_bytes);  // every swapped request came back
  CHECK(offload.host_memory_bytes == 256ull << 30);
  CHECK(offload.host_kv_peak_bytes > 0);
  CHECK(offload.host_kv_peak_bytes <= offload.kv_pool_bytes);
  // A swap moves what it reserves on host: whole 16-token blocks of 160 KiB a token.
  CHECK(std::fmod(offload.d2h_bytes, 16.0 * 163840) == 0);
  // Host memory too small for one preempted request's KV (at least its 8K-token prompt, 1.25
  // GiB): every preemption recomputes, as with serving.preemption=recompute.
  sets.push_back("hardware.host_memory_gib=1");
  const spin::sim::SimResult no_room = run(source, config(sets));
  sets.push_back("serving.preemption=recompute");
  const spin::sim::SimResult recompute = run(source, config(sets));
  CHECK(no_room.preemptions > 0);
  CHECK(no_room.d2h_bytes == 0);
  CHECK(no_room.h2d_bytes == 0);
  CHECK(no_room.host_kv_peak_bytes == 0);
  CHECK(no_room.host_memory_bytes == 1ull << 30);
  CHECK(no_room.preemptions == recompute.preemptions);
  CHECK(no_room.end_ns == recompute.end_ns);
  CHECK(recompute.host_memory_bytes == 0);  // recompute keeps nothing on host
}

TEST_CASE("simulator: host-KV modes admit only the requests whose KV host memory holds",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  // Each request's KV at its final context, in whole pages: 160 KiB a token (40 layers × 8 KV
  // heads × 128 × 2 × 2 bytes).
  std::uint64_t need = 0;
  const std::uint32_t page = source.algorithm_of(0).page_tokens;
  for (const auto& r : source.requests()) {
    const std::uint64_t tokens = r.prompt_tokens + r.decode_steps;  // its output tokens
    need = std::max(need, (tokens + page - 1) / page * page * 163840);
  }
  const auto gib = [](double bytes) { return fmt::format("{}", bytes / (1ull << 30)); };
  // Room for all four: each holds its reservation from admission to finish.
  const spin::sim::SimResult roomy = run(source, config({}));
  CHECK(roomy.batch_max == 4);
  CHECK(roomy.host_memory_bytes == 256ull << 30);
  CHECK(roomy.host_kv_peak_bytes == 4 * need);
  // Room for two and a half: two run at a time, all finish.
  const std::string two = "hardware.host_memory_gib=" + gib(2.5 * static_cast<double>(need));
  const spin::sim::SimResult tight = run(source, config({two}));
  CHECK(tight.batch_max == 2);
  CHECK(tight.host_kv_peak_bytes == 2 * need);
  CHECK(tight.end_ns > roomy.end_ns);
  for (const auto& q : tight.requests) CHECK_FALSE(q.rejected);
  // The original ShadowKV keeps only V on host: half of it, so all four fit again.
  const spin::sim::SimResult shadowkv =
      run(source, config({two, "serving.mode=sparse-original:shadowkv"}));
  CHECK(shadowkv.batch_max == 4);
  CHECK(shadowkv.host_kv_peak_bytes == 4 * need / 2);
  // ... and offloads only V: half of spin's bytes to host (the prompts and the filled pages).
  CHECK(roomy.d2h_bytes > 0);
  CHECK(shadowkv.d2h_bytes == Approx(roomy.d2h_bytes / 2));
  // Less than one request: each is rejected, none hangs.
  const auto none = spin::sim::summary_json(
      run(source, config({"hardware.host_memory_gib=" + gib(0.9 * static_cast<double>(need))})));
  CHECK(none["requests_rejected"] == 4);
  CHECK(none["host"]["kv_reserved_peak_bytes"] == 0);
  CHECK_THAT(
      run(source, config({"hardware.host_memory_gib=" + gib(0.9 * static_cast<double>(need))}))
          .requests[0]
          .rejected_reason,
      Catch::Contains("of host memory, which holds") &&
          Catch::EndsWith("(hardware.host_memory_gib)"));
  // Dense modes keep the KV in HBM: no host memory is counted.
  CHECK(run(source, config({two, "serving.mode=dense"})).host_memory_bytes == 0);
}

TEST_CASE("simulator: KV on its way to host holds its HBM until the copy ends", "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  // Each 8K prompt's KV is 1.25 GiB (160 KiB a token); a slow device-to-host link takes 2.7 s to
  // copy one. The prefill copies it layer by layer; the prompt's pages stay in HBM until the
  // copy ends.
  const std::string slow = "hardware.pcie_d2h_gbps=0.5";
  const spin::sim::SimResult fast = run(source, config());
  const spin::sim::SimResult held = run(source, config({slow}));
  // Without memory pressure nothing waits for the copies: the same times, but once all four
  // prompts are prefilled, their KV is still in HBM.
  CHECK(held.end_ns == fast.end_ns);
  CHECK(held.d2h_bytes == fast.d2h_bytes);
  std::size_t first_decode_only = 0;
  while (fast.iterations[first_decode_only].prefill_tokens > 0) ++first_decode_only;
  CHECK(held.iterations[first_decode_only].kv_used_bytes -
            fast.iterations[first_decode_only].kv_used_bytes ==
        4 * (1ull << 30) * 5 / 4);
  CHECK(held.kv_used_peak_bytes > fast.kv_used_peak_bytes);
  CHECK(fast.offload_held_prompts == 0);
  CHECK(fast.offload_held_peak_bytes == 0);
  CHECK(held.offload_held_prompts == 4);
  CHECK(held.offload_held_peak_bytes == 4 * (1ull << 30) * 5 / 4);
  // With 2.5 GiB of KV pool, a prompt held in HBM keeps the next from being admitted.
  const std::vector<std::string> small = {"hardware.hbm_gib=30",
                                          "serving.gpu_memory_utilization=1"};
  const spin::sim::SimResult fast_small = run(source, config(small));
  auto sets = small;
  sets.push_back(slow);
  const spin::sim::SimResult held_small = run(source, config(sets));
  CHECK(fast_small.batch_max == 4);
  CHECK(held_small.requests.back().admitted_ns > fast_small.requests.back().admitted_ns + 2e9);
  CHECK(held_small.end_ns > fast_small.end_ns);

  // A lone request whose cache and prompt, still held, do not both fit waits for the copy to
  // end rather than preempting itself (and losing its cache).
  const auto lone = [](const std::string& d2h_gbps) {
    const spin::config::Config c = spin::config::default_config(
        {"trace.path=", "trace.generator.algorithm=seer", "trace.generator.workload.name=fixed",
         "trace.generator.workload.prompt_tokens=12000",
         "trace.generator.workload.output_tokens=32", "trace.generator.workload.requests=1",
         "serving.mode=spin:seer", "hardware.hbm_gib=30", "serving.gpu_memory_utilization=1",
         "hardware.pcie_d2h_gbps=" + d2h_gbps});
    return run(*spin::sim::open_trace_source(c), c);
  };
  const spin::sim::SimResult lone_fast = lone("55.2");
  const spin::sim::SimResult lone_slow = lone("1");
  CHECK(lone_slow.offload_held_prompts == 1);
  CHECK(lone_slow.preemptions == 0);
  CHECK(lone_slow.policy_total.misses == lone_fast.policy_total.misses);
  CHECK(lone_slow.end_ns > lone_fast.end_ns);

  // A swap out runs before the iteration that preempts (as vLLM's): at 1 GB/s, that iteration
  // lasts at least the preempted request's KV (8K tokens or more, 1.34 GB) over the link.
  sets = {"hardware.hbm_gib=30.0126", "serving.gpu_memory_utilization=1",
          "serving.mode=dense-offload", "hardware.pcie_d2h_gbps=1"};
  const spin::sim::SimResult swapping = run(source, config(sets));
  REQUIRE(swapping.preemptions > 0);
  for (const auto& it : swapping.iterations) {
    if (it.preempted > 0) CHECK(it.end_ns - it.start_ns >= 1'340'000'000 * it.preempted);
  }
}

TEST_CASE("simulator: a host-KV request runs whose final context exceeds HBM", "[unit][sim]") {
  // A 1K-token prompt and 8K output tokens: 1.4 GiB of KV at the end, against a KV pool of 0.5
  // GiB. Spin holds its prompt's KV while it prefills, then only its cache, static region and
  // summaries; dense must hold it all.
  const auto run_mode = [](const std::string& mode) {
    const spin::config::Config c = spin::config::default_config(
        {"trace.path=", "trace.generator.workload.name=fixed",
         "trace.generator.workload.prompt_tokens=1024",
         "trace.generator.workload.output_tokens=8192", "trace.generator.workload.requests=1",
         "hardware.hbm_gib=28", "serving.gpu_memory_utilization=1", "sim.stream_sampling=0.025",
         "serving.mode=" + mode});
    return spin::sim::summary_json(run(*spin::sim::open_trace_source(c), c));
  };
  const auto spin_run = run_mode("spin:shadowkv");
  CHECK(spin_run["requests_finished"] == 1);
  CHECK(spin_run["requests_rejected"] == 0);
  CHECK(spin_run["hbm"]["kv_used_peak_bytes"].get<double>() < 0.5 * (1ull << 30));
  CHECK(run_mode("dense")["requests_rejected"] == 1);
}

TEST_CASE("simulator: Belady modes resume preempted requests", "[unit][sim]") {
  // Six 1K prompts growing to 5K tokens on 0.5 GiB of KV pool: their caches outgrow it, and the
  // newest are preempted; a resumed request's Belady future starts at the step it resumes at.
  for (const std::string mode : {"oracle:shadowkv", "ideal:shadowkv"}) {
    INFO(mode);
    const spin::config::Config c = spin::config::default_config(
        {"trace.path=", "trace.generator.workload.name=fixed",
         "trace.generator.workload.prompt_tokens=1024",
         "trace.generator.workload.output_tokens=4096", "trace.generator.workload.requests=6",
         "hardware.hbm_gib=28", "serving.gpu_memory_utilization=1", "sim.stream_sampling=0.125",
         "serving.mode=" + mode});
    const auto s = spin::sim::summary_json(run(*spin::sim::open_trace_source(c), c));
    CHECK(s["preemptions"].get<int>() > 0);
    CHECK(s["requests_finished"] == 6);
  }
}

TEST_CASE("simulator: a resumed request decodes in the iteration that resumes it", "[unit][sim]") {
  // Requests preempted with their KV kept (on host, or swapped out and back) resume decoding in
  // the iteration that admits them again, as vLLM's swapped-in sequences do, so no iteration is
  // left without work (before, one that only resumed requests lasted no time in host-KV modes).
  const auto check = [](const spin::sim::SimResult& r) {
    REQUIRE(r.preemptions > 0);
    std::uint64_t decodes = 0;
    for (const auto& it : r.iterations) {
      CHECK(it.decodes + it.prefill_tokens > 0);
      CHECK(it.end_ns > it.start_ns);
      decodes += it.decodes;
    }
    // Every output token but each request's first (emitted by its prefill) is one decode.
    std::uint64_t expected = 0;
    for (const auto& q : r.requests) expected += q.output_tokens - 1;
    CHECK(decodes == expected);
  };
  // Host-KV: six 1K prompts growing to 5K tokens on 0.5 GiB of KV pool; their caches outgrow it.
  const spin::config::Config host_kv = spin::config::default_config(
      {"trace.path=", "trace.generator.workload.name=fixed",
       "trace.generator.workload.prompt_tokens=1024", "trace.generator.workload.output_tokens=4096",
       "trace.generator.workload.requests=6", "hardware.hbm_gib=28",
       "serving.gpu_memory_utilization=1", "sim.stream_sampling=0.125",
       "serving.mode=spin:shadowkv"});
  check(run(*spin::sim::open_trace_source(host_kv), host_kv));
  // Swap: the dense-offload case of "under memory pressure dense preempts ...".
  check(run(burst(), config({"hardware.hbm_gib=30.0126", "serving.gpu_memory_utilization=1",
                             "serving.mode=dense-offload"})));
}

TEST_CASE("simulator: a host-KV request preempted while it prefills copies its prompt to host once",
          "[unit][sim]") {
  // 24 prompts of 32K tokens at 4 req/s on 48 GiB of HBM: one request is preempted after its
  // first prefill chunk, and prefills again from its first token. What it copied to host then is
  // not copied again (it was, 1.34 GB more). HBM to host: every prompt's KV, then each page that
  // decoding fills (Qwen3-14B: 160 KiB of KV a token over all layers and KV heads).
  const auto run_hbm = [](const std::string& gib) {
    const spin::config::Config c = spin::config::default_config(
        {"trace.path=", "trace.generator.workload.requests=24",
         "trace.generator.workload.rate_rps=4", "trace.generator.workload.max_prompt_tokens=32768",
         "trace.generator.workload.max_output_tokens=256", "hardware.hbm_gib=" + gib});
    return run(*spin::sim::open_trace_source(c), c);
  };
  const spin::sim::SimResult r = run_hbm("48");
  REQUIRE(r.preemptions > 0);
  double expected = 0;
  for (const spin::sim::RequestRecord& q : r.requests) {
    REQUIRE(!q.rejected);
    std::uint64_t tokens = q.prompt_tokens;
    for (std::uint64_t c = q.prompt_tokens + 1; c < q.prompt_tokens + q.output_tokens; ++c)
      tokens += c % 8 == 0 ? 8 : 0;
    expected += 163840.0 * static_cast<double>(tokens);
  }
  CHECK(r.d2h_bytes == expected);
  const spin::sim::SimResult no_preemption = run_hbm("47");
  REQUIRE(no_preemption.preemptions == 0);
  CHECK(no_preemption.d2h_bytes == expected);
}

TEST_CASE("simulator: a GPU-only original's cache holds every page", "[unit][sim]") {
  // SeerAttention-R's original keeps all KV in HBM: only a page's first selection misses, no
  // page is evicted and nothing crosses PCIe.
  const spin::config::Config c = spin::config::default_config(
      {"trace.path=", "trace.generator.algorithm=seer", "trace.generator.workload.name=fixed",
       "trace.generator.workload.prompt_tokens=8192", "trace.generator.workload.output_tokens=64",
       "trace.generator.workload.requests=2", "serving.mode=sparse-original:seer"});
  const auto s = spin::sim::summary_json(run(*spin::sim::open_trace_source(c), c));
  CHECK(s["policy"]["victims"] == 0);
  CHECK(s["policy"]["bypassed"] == 0);
  // At most every page of the two requests' streams (40 layers × 8 KV heads) once.
  CHECK(s["policy"]["misses"].get<double>() > 0);
  CHECK(s["policy"]["misses"].get<double>() <= 2.0 * 40 * 8 * (8192 + 64) / 32);
  CHECK(s["pcie_h2d_bytes"] == 0);
  CHECK(s["pcie_d2h_bytes"] == 0);
}

TEST_CASE("simulator: a request that cannot fit is reported as rejected", "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  const spin::sim::SimResult r = run(
      source,
      config({"hardware.hbm_gib=28.5", "serving.gpu_memory_utilization=1", "serving.mode=dense"}));
  const auto s = spin::sim::summary_json(r);
  CHECK(s["requests_rejected"] == 4);
  CHECK(s["requests_finished"] == 0);
  // Each says which limit and by how much; requests.csv has no times for them.
  for (const auto& q : r.requests) {
    CHECK_THAT(q.rejected_reason, Catch::StartsWith("its KV at ") &&
                                      Catch::Contains(" of HBM, and the KV pool holds "));
  }
  const std::string csv = spin::sim::requests_csv(r);
  const std::string first = csv.substr(csv.find('\n') + 1, csv.find('\n', csv.find('\n') + 1));
  CHECK_THAT(first, Catch::Contains(",1,,,,,,") && Catch::Contains(",\"its KV at "));
}

TEST_CASE("simulator: config and trace disagreements are errors that say what disagrees",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  CHECK_THROWS_WITH(
      run(source, config({"serving.mode=spin:seer"})),
      Catch::Contains("serving.mode is spin:seer") && Catch::Contains("algorithm 'shadowkv'"));
  CHECK_THROWS_WITH(run(source, config({"hardware.hbm_gib=20"})),
                    Catch::Contains("weights") && Catch::Contains("do not fit"));
  const auto bad = run_spin({"sim", "--mode", "spin:nonsense"});
  CHECK(bad.status == 2);
  CHECK(bad.err.find("serving.mode") != std::string::npos);
}

TEST_CASE("sim command: writes every output, and the summary matches the requests table",
          "[unit][sim]") {
  spin::test::TempDir dir;
  const auto r = run_spin({"sim", "--trace", source_path("traces/sample.spt").string(), "--out",
                           (dir / "out").string(), "--steps", "--threads", "2"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find("throughput") != std::string::npos);
  for (const char* f : {"resolved_config.yaml", "provenance.json", "summary.json", "requests.csv",
                        "steps.csv", "timeline.json"})
    CHECK(std::filesystem::exists(dir / "out" / f));
  const auto summary = nlohmann::json::parse(read_file(dir / "out" / "summary.json"));
  const std::string csv = read_file(dir / "out" / "requests.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + summary["requests"].get<int>());
  const auto again = run_spin({"sim", "--trace", source_path("traces/sample.spt").string(), "--out",
                               (dir / "again").string(), "--steps"});
  for (const char* f : {"summary.json", "requests.csv", "steps.csv", "timeline.json"})
    CHECK(read_file(dir / "out" / f) == read_file(dir / "again" / f));
  const auto modes = run_spin({"--list", "modes"});
  CHECK(modes.out.find("spin:<algo>") != std::string::npos);
}

TEST_CASE("simulator: stream sampling estimates the exact run and is exact at rate 1",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  const auto exact = spin::sim::summary_json(run(source, config()));
  for (const std::string rate : {"0.5", "0.25"}) {
    INFO(rate);
    const auto sampled =
        spin::sim::summary_json(run(source, config({"sim.stream_sampling=" + rate})));
    CHECK(sampled["stream_sampling"].get<double>() == std::stod(rate));
    CHECK(sampled["sampled_layer_share"].get<double>() == std::stod(rate));  // 40 layers
    CHECK(sampled["duration_s"].get<double>() ==
          Approx(exact["duration_s"].get<double>()).epsilon(0.02));
    CHECK(sampled["hit_ratio"].get<double>() ==
          Approx(exact["hit_ratio"].get<double>()).epsilon(0.02));
    CHECK(sampled["policy"]["accesses"].get<double>() ==
          Approx(exact["policy"]["accesses"].get<double>()).epsilon(0.05));
    // The sampled layers' page tables stand for every layer's.
    for (const char* key : {"page_table_peak_bytes", "flat_table_bytes_at_peak"}) {
      CHECK(sampled["metadata"][key].get<double>() ==
            Approx(exact["metadata"][key].get<double>()).epsilon(0.05));
    }
  }
  CHECK(exact["sampled_layer_share"].get<double>() == 1);
  // round(40 × 1/16) = 3 layers (half away from zero); round(40 × 1/64) = 0, and at least 1.
  CHECK(spin::sim::summary_json(
            run(source, config({"sim.stream_sampling=0.0625"})))["sampled_layer_share"]
            .get<double>() == 3.0 / 40);
  CHECK(spin::sim::summary_json(
            run(source, config({"sim.stream_sampling=0.015625"})))["sampled_layer_share"]
            .get<double>() == 1.0 / 40);
  CHECK_THROWS_WITH(run(source, config({"sim.stream_sampling=0.5", "cache.pool_scope=request"})),
                    Catch::Contains("pool_scope"));
}

TEST_CASE("simulator: stream sampling spreads every layer over requests of every size",
          "[unit][sim]") {
  // 48 requests alternating 16K and 512-token prompts (64 outputs) at rate 1/8 (5 of 40 layers
  // each): the sampled misses, which the poorly-local layers and the long requests dominate,
  // stay within 1% of the exact run's for every seed of the choice. An independent choice per
  // request gave -5.2% to +1.3% here (seeds 1-4), and a choice cycling with the request id,
  // which aliased with the alternation, -8.1% to +7.4%.
  std::string list;
  for (int i = 0; i < 48; ++i)
    list += fmt::format("{}{},{},64", i ? "," : "", i * 250000, i % 2 ? 512 : 16384);
  const auto misses = [&](const std::string& rate, int seed) {
    const spin::config::Config c = spin::config::default_config(
        {"trace.path=", "trace.generator.workload.name=list",
         "trace.generator.workload.list=[" + list + "]", "sim.stream_sampling=" + rate,
         "seed=" + std::to_string(seed)});
    return static_cast<double>(run(*spin::sim::open_trace_source(c), c).policy_total.misses);
  };
  const double exact = misses("1", 1);
  for (int seed = 1; seed <= 4; ++seed) {
    INFO("seed " << seed);
    CHECK(misses("0.125", seed) == Approx(exact).epsilon(0.01));
  }
}

TEST_CASE("simulator: tensor parallelism shards weights, KV traffic and compute per GPU",
          "[unit][sim]") {
  const spin::trace::MemorySource source = burst();
  const spin::sim::SimResult one = run(source, config());
  const spin::sim::SimResult two = run(source, config({"serving.tensor_parallel=2"}));
  CHECK(two.weight_bytes * 2 == one.weight_bytes);
  CHECK(two.h2d_bytes == Approx(one.h2d_bytes / 2).epsilon(0.01));
  const auto s1 = spin::sim::summary_json(one);
  const auto s2 = spin::sim::summary_json(two);
  CHECK(s2["tpot_s"]["mean"].get<double>() < s1["tpot_s"]["mean"].get<double>());
  CHECK(s2["ttft_s"]["mean"].get<double>() < s1["ttft_s"]["mean"].get<double>());
  CHECK(s2["hit_ratio"] == s1["hit_ratio"]);  // the policy sees every head either way

  spin::config::Config c = config();
  c.model.kv_heads = 4;
  CHECK_THROWS_WITH(spin::sim::CostModel(c.model, c.hardware, 8),
                    Catch::Contains("tensor_parallel") && Catch::Contains("4 KV heads"));
}

TEST_CASE("bench sim: prints the exact and sampled runs with their errors", "[unit][sim]") {
  const auto r =
      run_spin({"bench", "sim", "--requests", "1", "--max-output-tokens", "8", "--threads", "2"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find("exact                         1") != std::string::npos);
  CHECK(r.out.find("sampled 1/64") != std::string::npos);
  CHECK(r.out.find("0.00%     0.00%     0.00%     0.00%") != std::string::npos);  // exact vs exact
  CHECK(r.out.find("cpu s") != std::string::npos);
  // One-token outputs have no TPOT and the hit ratio of nothing: no error, not NaN.
  const auto one = run_spin({"bench", "sim", "--requests", "1", "--max-output-tokens", "1",
                             "--threads", "1", "--sampling", "2"});
  REQUIRE(one.status == 0);
  CHECK(one.out.find("nan") == std::string::npos);
  CHECK(one.out.find("0.00%     0.00%       n/a       n/a") != std::string::npos);
}

TEST_CASE("bench sim: --skip-single-thread and --sampling choose the runs", "[unit][sim]") {
  const auto r = run_spin({"bench", "sim", "--requests", "1", "--max-output-tokens", "8",
                           "--threads", "2", "--skip-single-thread", "--sampling", "4", "16"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find("exact                         1") == std::string::npos);
  CHECK(r.out.find("exact                         2") != std::string::npos);
  CHECK(r.out.find("sampled 1/4 ") != std::string::npos);
  CHECK(r.out.find("sampled 1/16") != std::string::npos);
  CHECK(r.out.find("sampled 1/2 ") == std::string::npos);
  CHECK(r.out.find("sampled 1/64") == std::string::npos);

  const auto bad = run_spin({"bench", "sim", "--sampling", "0"});
  CHECK(bad.status != 0);
  CHECK(bad.err.find("--sampling: expected at least 2, got 0") != std::string::npos);
}
