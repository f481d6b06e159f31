// SharedLibrary (common/shared_library.h): the run-time loader behind the executor's cuBLASLt. The
// failure messages are checked here, on any machine: the cuBLASLt search itself (exec/cublaslt.h)
// is checked by the gpu suite's [gemm] tests.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/shared_library.h"

using spin::InputError;
using spin::LibrarySearch;
using spin::SharedLibrary;

namespace {

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::string old_;
  bool had_ = false;
};

std::string open_error(const LibrarySearch& search) {
  try {
    SharedLibrary::open(search);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

LibrarySearch missing_search() {
  return LibrarySearch{"libspin-test (testing)",
                       "SPIN_TEST_LIBRARY",
                       {"libspin-test-missing.so.13", "/nonexistent-spin-*/lib64/libspin-test.so"},
                       nullptr,
                       "libspin-test lives nowhere"};
}

}  // namespace

TEST_CASE("shared library: a missing library names every candidate tried and how to override",
          "[unit][loader]") {
  const ScopedEnv env("SPIN_TEST_LIBRARY", nullptr);
  const std::string message = open_error(missing_search());
  CHECK_THAT(message, Catch::Contains("cannot load libspin-test (testing)"));
  CHECK_THAT(message, Catch::Contains("libspin-test-missing.so.13: "));
  CHECK_THAT(message, Catch::Contains("cannot open shared object file"));
  CHECK_THAT(message, Catch::Contains("/nonexistent-spin-*/lib64/libspin-test.so: no match"));
  CHECK_THAT(message, Catch::Contains("set SPIN_TEST_LIBRARY=/path/to/the/library"));
  CHECK_THAT(message, Catch::Contains("libspin-test lives nowhere"));
}

TEST_CASE("shared library: the environment variable overrides the search and is named on failure",
          "[unit][loader]") {
  const ScopedEnv env("SPIN_TEST_LIBRARY", "/nonexistent/libcublasLt.so.13");
  LibrarySearch search = missing_search();
  search.candidates.insert(search.candidates.begin(), "libm.so.6");  // would load, if tried
  const std::string message = open_error(search);
  CHECK_THAT(message, Catch::Contains("SPIN_TEST_LIBRARY=/nonexistent/libcublasLt.so.13: "));
  CHECK_THAT(message, Catch::Contains("No such file or directory"));
  CHECK_THAT(message, Catch::Contains("SPIN_TEST_LIBRARY is set, so nothing else was tried"));
  CHECK_THAT(message, !Catch::Contains("libm.so.6"));
  CHECK_THAT(message, !Catch::Contains("libspin-test-missing"));
}

TEST_CASE("shared library: opens the first acceptable candidate and resolves typed symbols",
          "[unit][loader]") {
  const ScopedEnv env("SPIN_TEST_LIBRARY", nullptr);
  LibrarySearch search = missing_search();
  search.candidates.push_back("libm.so.6");
  const SharedLibrary lib = SharedLibrary::open(search);
  CHECK(lib.path() == "libm.so.6");
  double (*cosine)(double) = nullptr;
  lib.resolve(cosine, "cos");
  REQUIRE(cosine != nullptr);
  CHECK(cosine(0.0) == 1.0);
  try {
    lib.symbol("spin_no_such_symbol");
    FAIL("a missing symbol was resolved");
  } catch (const InputError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("libm.so.6: symbol spin_no_such_symbol"));
  }
}

TEST_CASE("shared library: a candidate that accept() rejects is closed and reported",
          "[unit][loader]") {
  const ScopedEnv env("SPIN_TEST_LIBRARY", nullptr);
  LibrarySearch search = missing_search();
  search.candidates = {"libm.so.6"};
  search.accept = [](void*) { return std::string("major version 12, need 13"); };
  CHECK_THAT(open_error(search), Catch::Contains("libm.so.6: major version 12, need 13"));
}

TEST_CASE("shared library: glob candidates expand in descending order, bare names stay",
          "[unit][loader]") {
  CHECK(spin::expand_library_candidate("libfoo.so.1") == std::vector<std::string>{"libfoo.so.1"});
  CHECK(spin::expand_library_candidate("/nonexistent-spin-*/x.so").empty());
  const auto dirs = spin::expand_library_candidate("/{usr,pr[o]c}");
  CHECK(dirs.empty());  // braces are not expanded (no GLOB_BRACE): a literal name
  const auto both = spin::expand_library_candidate("/[pu][rs][or]*");
  REQUIRE(both.size() >= 2);  // /proc and /usr at least
  CHECK(std::is_sorted(both.rbegin(), both.rend()));
}
