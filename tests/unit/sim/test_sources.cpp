// The TraceSource implementations agree: a generator, the file it writes, and both read into
// memory give the same records, and replay gives the same counts on each.
#include <catch2/catch.hpp>

#include "common/trace/file_source.h"
#include "common/trace/memory_source.h"
#include "sim/replay.h"
#include "tests/support.h"
#include "traces/gen/generator.h"

namespace {

spin::gen::TraceGenConfig small_config(const std::string& algorithm) {
  spin::gen::TraceGenConfig g;
  g.generator.algorithm = algorithm;
  g.generator.seed = 7;
  g.model.layers = 2;
  g.generator.workload.name = "fixed";
  g.generator.workload.requests = 2;
  g.generator.workload.prompt_tokens = 4096;
  g.generator.workload.output_tokens = 1100;  // RetroInfer re-indexes after 1024 generated tokens
  return g;
}

}  // namespace

TEST_CASE("sources: generator, its file and their in-memory copies yield the same records",
          "[unit][sim]") {
  for (const std::string algorithm : {"shadowkv", "retroinfer"}) {
    INFO(algorithm);
    spin::test::TempDir dir;
    const spin::gen::Generator generator(small_config(algorithm));
    spin::gen::copy_to_file(generator, dir / "g.spt");
    const spin::trace::FileSource file(dir / "g.spt");
    const spin::trace::TraceData from_generator = spin::trace::materialize(generator, 0, 2);
    const spin::trace::TraceData from_file = spin::trace::materialize(file, 0, 2);
    CHECK(from_generator.header == from_file.header);
    REQUIRE(from_generator.requests.size() == 2);
    CHECK(from_generator.requests == from_file.requests);
    CHECK(from_generator == spin::trace::read_all(dir / "g.spt"));
    if (algorithm == "retroinfer") {
      const auto& map = from_generator.requests[0].maps.at(0);
      CHECK(!map.growth().empty());  // the re-index is in the copy
    }

    const spin::trace::MemorySource memory(from_file);
    spin::sim::ReplayOptions options;
    options.threads = 1;
    const auto a = spin::sim::replay(generator, options);
    const auto b = spin::sim::replay(file, options);
    const auto c = spin::sim::replay(memory, options);
    CHECK(a.total.hits == b.total.hits);
    CHECK(a.total.misses == b.total.misses);
    CHECK(b.total.hits == c.total.hits);
    CHECK(b.total.victims == c.total.victims);
    CHECK(a.total.accesses > 0);
  }
}

TEST_CASE("memory source: out-of-range requests, layers and heads are errors", "[unit][sim]") {
  const spin::trace::MemorySource memory(
      spin::trace::read_all(spin::test::source_path("traces/sample.spt")));
  CHECK_THROWS_WITH(memory.open_layer(4, 0), Catch::Contains("no request 4 layer 0"));
  CHECK_THROWS_WITH(memory.open_layer(0, 40), Catch::Contains("no request 0 layer 40"));
  const uint32_t head = 8;
  CHECK_THROWS_WITH(memory.open_layer(0, 0, std::span<const uint32_t>(&head, 1)),
                    Catch::Contains("no KV head 8"));
}
