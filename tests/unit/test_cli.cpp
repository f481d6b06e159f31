#include <fmt/format.h>
#include <fmt/ranges.h>
#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "common/version.h"
#include "tests/support.h"

using spin::test::run_spin;

TEST_CASE("cli: --help lists the commands and list families", "[unit][cli]") {
  const auto r = run_spin({"--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find("Usage: spin <command>") != std::string::npos);
  CHECK(r.out.find("gpu info") != std::string::npos);
}

TEST_CASE("cli: every command's --help fits in 100 columns", "[unit][cli]") {
  const auto top = run_spin({"--help"});
  REQUIRE(top.status == 0);
  std::vector<std::vector<std::string>> commands;
  std::istringstream lines(top.out);
  bool in_commands = false;
  for (std::string line; std::getline(lines, line);) {
    CHECK(line.size() <= 100);
    if (line == "Commands:") {
      in_commands = true;
    } else if (line.empty()) {
      in_commands = false;
    } else if (in_commands && line.rfind("  ", 0) == 0 && line[2] != ' ') {
      // "  trace info    print ...": the name ends at the first two spaces after it.
      std::istringstream name(line.substr(2, line.find("  ", 2) - 2));
      std::vector<std::string>& words = commands.emplace_back();
      for (std::string w; name >> w;) words.push_back(w);
    }
  }
  CHECK(commands.size() >= 16);
  for (std::vector<std::string> args : commands) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    args.push_back("--help");
    const auto r = run_spin(args);
    CHECK(r.status == 0);
    CHECK(r.out.find("Usage: spin ") == 0);
    std::istringstream help(r.out);
    for (std::string line; std::getline(help, line);) {
      INFO(line);
      CHECK(line.size() <= 100);
    }
  }
}

TEST_CASE("cli: --version prints the version and the git commit", "[unit][cli]") {
  const auto r = run_spin({"--version"});
  CHECK(r.status == 0);
  CHECK(r.out.find(std::string(spin::version())) != std::string::npos);
  CHECK(r.out.find("commit") != std::string::npos);
}

TEST_CASE("cli: an unknown command is an error that points to --help", "[unit][cli]") {
  const auto r = run_spin({"frobnicate"});
  CHECK(r.status == 2);
  CHECK(r.err == "spin: error: unknown command 'frobnicate'; run spin --help for the list\n");
}

TEST_CASE("cli: an unknown list family names the known ones", "[unit][cli]") {
  const auto r = run_spin({"--list", "nonsense"});
  CHECK(r.status == 2);
  CHECK(r.err.find("unknown family 'nonsense'") != std::string::npos);
}
