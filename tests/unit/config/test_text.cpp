#include <array>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/text.h"

using spin::closest_match;
using spin::edit_distance;

TEST_CASE("text: edit_distance counts insertions, deletions, substitutions and transpositions",
          "[unit][config]") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("abc", "") == 3);
  CHECK(edit_distance("layers", "layers") == 0);
  CHECK(edit_distance("layerz", "layers") == 1);
  CHECK(edit_distance("bf61", "bf16") == 1);  // one transposition
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("ca", "abc") == 3);  // no edit of a transposed pair
}

TEST_CASE("text: closest_match proposes only a plausible typo, the first one on ties",
          "[unit][config]") {
  const std::vector<std::string> keys = {"preset", "layers", "kv_heads", "query_heads"};
  CHECK(closest_match("layerz", keys) == "layers");
  CHECK(closest_match("kv_head", keys) == "kv_heads");
  CHECK(closest_match("Layers", keys) == "layers");
  CHECK_FALSE(closest_match("frobnicate", keys).has_value());
  CHECK_FALSE(closest_match("x", std::vector<std::string>{}).has_value());
  // Short words allow one edit: "fp9" is one from "fp8", "int4" is far from everything.
  constexpr std::array<std::string_view, 3> dtypes = {"bf16", "fp16", "fp8"};
  CHECK(closest_match("fp9", dtypes) == "fp8");
  CHECK_FALSE(closest_match("int4", dtypes).has_value());
  CHECK(closest_match("xp16", dtypes) == "fp16");  // one edit from fp16, two from bf16
  CHECK(closest_match("ab", std::vector<std::string>{"aa", "bb"}) == "aa");
}
