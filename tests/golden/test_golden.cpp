// Whole commands against reviewed golden outputs in tests/golden/data/. A difference is either a
// regression or an intended change: regenerate with scripts/update_golden.sh and review the diff.
#include <catch2/catch.hpp>

#include "tests/support.h"

using spin::test::read_file;
using spin::test::run_spin;
using spin::test::source_path;

namespace {

void check_golden(const std::vector<std::string>& args, const std::string& golden) {
  const auto r = run_spin(args);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out == read_file(source_path("tests/golden/data/" + golden)));
}

}  // namespace

TEST_CASE("golden: the default run (spin replay) prints the reviewed table", "[golden]") {
  check_golden({"replay", "--threads", "2"}, "replay_default.txt");
}

TEST_CASE("golden: Belady on the sample trace prints the reviewed table", "[golden]") {
  check_golden({"replay", "--policy", "belady", "--threads", "1"}, "replay_belady.txt");
}

TEST_CASE("golden: trace info of the sample trace", "[golden]") {
  check_golden({"trace", "info", "traces/sample.spt"}, "trace_info_sample.txt");
}
