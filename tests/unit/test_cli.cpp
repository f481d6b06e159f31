#include <catch2/catch.hpp>

#include "common/version.h"
#include "tests/support.h"

using spin::test::run_spin;

TEST_CASE("cli: --help lists the commands and list families", "[unit][cli]") {
  const auto r = run_spin({"--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find("Usage: spin <command>") != std::string::npos);
  CHECK(r.out.find("gpu info") != std::string::npos);
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
