// Whole commands against reviewed golden outputs in tests/golden/data/. A difference is either a
// regression or an intended change: regenerate with scripts/update_golden.sh and review the diff.
#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>

#include "tests/support.h"

using spin::test::read_file;
using spin::test::run_spin;
using spin::test::source_path;
using spin::test::TempDir;

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

TEST_CASE("golden: traces/make_sample.sh writes the bundled sample trace byte for byte",
          "[golden]") {
  // The script's `build/spin ...` command (continued over lines ending in a backslash), run
  // with its --out sent to a temporary file. A generator change that alters the sample fails
  // here: rerun the script, then scripts/update_golden.sh.
  std::string script = read_file(source_path("traces/make_sample.sh"));
  for (size_t at; (at = script.find("\\\n")) != std::string::npos;) script.replace(at, 2, " ");
  const size_t start = script.find("\nbuild/spin ");
  REQUIRE(start != std::string::npos);
  std::istringstream line(script.substr(start + 1, script.find('\n', start + 1) - start - 1));
  std::vector<std::string> args;
  for (std::string word; line >> word;) args.push_back(word);
  args.erase(args.begin());  // build/spin
  const TempDir dir;
  const auto out = std::find(args.begin(), args.end(), "--out");
  REQUIRE(out + 1 < args.end());
  CHECK(out[1] == "traces/sample.spt");
  out[1] = (dir / "sample.spt").string();
  const auto r = run_spin(args);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(read_file(dir / "sample.spt") == read_file(source_path("traces/sample.spt")));
}
