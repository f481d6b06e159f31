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

TEST_CASE("text: byte counts in the largest unit that keeps them at least 1, three digits",
          "[unit][config]") {
  CHECK(spin::binary_bytes(0) == "0 B");
  CHECK(spin::binary_bytes(1023) == "1023 B");
  CHECK(spin::binary_bytes(1024) == "1.00 KiB");
  CHECK(spin::binary_bytes(1.44 * (1ull << 30)) == "1.44 GiB");
  CHECK(spin::binary_bytes(44.2 * (1ull << 30)) == "44.2 GiB");
  CHECK(spin::binary_bytes(256.0 * (1ull << 30)) == "256 GiB");
  CHECK(spin::binary_bytes(3.0 * (1ull << 60)) == "3072 PiB");  // no unit past PiB
  CHECK(spin::decimal_bytes(999) == "999 B");
  CHECK(spin::decimal_bytes(951e3) == "951 kB");
  CHECK(spin::decimal_bytes(243.2e6) == "243 MB");
  CHECK(spin::decimal_bytes(5.405e9) == "5.41 GB");
  CHECK(spin::decimal_bytes(12.34e12) == "12.3 TB");
  // Rounding that reaches the next unit, or the next digit, moves there: never "1000 MB".
  CHECK(spin::decimal_bytes(999.6e6) == "1.00 GB");
  CHECK(spin::decimal_bytes(999.7) == "1.00 kB");
  CHECK(spin::decimal_bytes(9.996e9) == "10.0 GB");
  CHECK(spin::decimal_bytes(99.96e9) == "100 GB");
  CHECK(spin::binary_bytes(1023.9 * 1024) == "1.00 MiB");
  CHECK(spin::binary_bytes(1016.4 * (1 << 20)) == "1016 MiB");  // binary units reach 1023
}

TEST_CASE("text: csv_field quotes only fields that need it, doubling quotes", "[unit][config]") {
  CHECK(spin::csv_field("plain") == "plain");
  CHECK(spin::csv_field("") == "");
  CHECK(spin::csv_field("a, b") == "\"a, b\"");
  CHECK(spin::csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(spin::csv_field("two\nlines") == "\"two\nlines\"");
}
