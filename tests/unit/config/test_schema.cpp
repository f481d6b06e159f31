// The schema mechanism on a section of its own (common/config/schema.h), independent of the
// sections Config has: booleans, optional sections, defaults, and the three visitors agreeing.
#include <array>
#include <catch2/catch.hpp>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/config/schema.h"
#include "common/error.h"

namespace {

using namespace spin::config;

enum class Shape { kRound, kSquare };
constexpr std::array<EnumName<Shape>, 2> kShapeNames = {
    {{Shape::kRound, "round"}, {Shape::kSquare, "square"}}};
std::span<const EnumName<Shape>> enum_names(Shape) { return kShapeNames; }

struct Inner {
  std::vector<std::uint64_t> sizes_bytes = {1, 2};
  Shape shape = Shape::kSquare;

  template <class V>
  void visit(V& v) {
    v.field("sizes_bytes", sizes_bytes, "sizes, bytes", at_least(1));
    v.field("shape", shape, "a shape");
  }
};

struct Outer {
  bool flag = false;
  std::uint8_t small = 7;
  double ratio = 0.5;
  Inner inner;

  template <class V>
  void visit(V& v) {
    v.field("flag", flag, "a switch");
    v.field("small", small, "a small count", at_most(200));
    v.field("ratio", ratio, "a fraction", at_least(0).at_most(1));
    v.field("inner", inner, "a nested section");
    v.check("ratio", "below 1 when flag is on", [&] { return !flag || ratio < 1; });
  }
};

Outer parse(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return parse_config<Outer>(yaml, std::make_shared<const Source>(Source{"t.yaml", true, {}}),
                             sets);
}

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    parse(yaml, sets);
  } catch (const spin::InputError& e) {
    return e.what();
  }
  FAIL("no InputError for:\n" << yaml);
  return "";
}

}  // namespace

TEST_CASE("config schema: absent keys and sections keep their defaults", "[unit][config]") {
  const Outer o = parse("flag: false\n");
  CHECK(o.small == 7);
  CHECK(o.ratio == 0.5);
  CHECK(o.inner.sizes_bytes == std::vector<std::uint64_t>{1, 2});
  CHECK(o.inner.shape == Shape::kSquare);
  const Outer set = parse("flag: false\n", {"inner.shape=round", "small=200"});
  CHECK(set.inner.shape == Shape::kRound);
  CHECK(set.small == 200);
}

TEST_CASE("config schema: booleans are true or false, unquoted", "[unit][config]") {
  CHECK(parse("flag: true\n").flag);
  CHECK(parse("flag: True\n").flag);
  CHECK_FALSE(parse("flag: FALSE\n").flag);
  CHECK(error_of("flag: yes\n") == "t.yaml:1:7: flag: expected true or false, got 'yes'");
  CHECK(error_of("flag: \"true\"\n") ==
        "t.yaml:1:7: flag: expected true or false, got the string \"true\"");
  CHECK(error_of("flag: 1\n") == "t.yaml:1:7: flag: expected true or false, got '1'");
}

TEST_CASE("config schema: narrow integers, bounded numbers and section rules", "[unit][config]") {
  CHECK(error_of("small: 256\n") ==
        "t.yaml:1:8: small: 256 is out of range; expected an integer >= 0 and <= 200 (at most "
        "255)");
  CHECK(error_of("small: 201\n") ==
        "t.yaml:1:8: small: 201 is out of range; expected an integer >= 0 and <= 200");
  CHECK(error_of("ratio: 1.5\n") ==
        "t.yaml:1:8: ratio: 1.5 is out of range; expected a number >= 0 and <= 1");
  CHECK(error_of("flag: true\nratio: 1\n") ==
        "t.yaml:2:8: ratio: expected below 1 when flag is on");
  CHECK(error_of("inner: square\n") ==
        "t.yaml:1:8: inner: expected a mapping of keys, got 'square'");
}

TEST_CASE("config schema: emitted YAML reloads to the same values; key listing matches",
          "[unit][config]") {
  Outer o;
  o.flag = true;
  o.ratio = 0.25;
  o.inner.sizes_bytes = {4096, 1ull << 40};
  o.inner.shape = Shape::kRound;
  const std::string yaml = emit_yaml(o);
  CHECK(yaml ==
        "flag: true                            # a switch\n"
        "small: 7                              # a small count\n"
        "ratio: 0.25                           # a fraction\n"
        "inner:                                # a nested section\n"
        "  sizes_bytes: [4096, 1099511627776]  # sizes, bytes\n"
        "  shape: round                        # a shape\n");
  const Outer again = parse(yaml);
  CHECK(emit_yaml(again) == yaml);

  const auto rows = list_keys(Outer{});
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].path == "flag");
  CHECK(rows[0].type == "true or false");
  CHECK(rows[0].default_value == "false");
  CHECK(rows[3].path == "inner");
  CHECK(rows[3].type == "a mapping");
  CHECK(rows[4].path == "inner.sizes_bytes");
  CHECK(rows[4].type == "a list of integers >= 1");
  CHECK(rows[4].default_value == "[1, 2]");
  CHECK(rows[5].type == "one of round, square");
}

TEST_CASE("config schema: strings are quoted in YAML only where they must be", "[unit][config]") {
  using spin::config::detail::format_string;
  CHECK(format_string("qwen3-14b") == "qwen3-14b");
  CHECK(format_string("/data/traces/a.spt") == "/data/traces/a.spt");
  CHECK(format_string("") == "\"\"");
  CHECK(format_string("true") == "\"true\"");
  CHECK(format_string("No") == "\"No\"");
  CHECK(format_string("12") == "\"12\"");
  CHECK(format_string("a b") == "\"a b\"");
  CHECK(format_string("say \"hi\"\n\t\x01") == "\"say \\\"hi\\\"\\n\\t\\x01\"");
}
