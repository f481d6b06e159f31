// Text helpers shared by every component. (Not named strings.h: meson puts common/ on the
// include path of spin_common, where that name would hide the C library's <strings.h>.)
//
// closest_match() backs the "unknown name 'x'; did you mean 'y'?" messages of the config parser,
// the plugin registries and the CLI: it proposes a candidate only when it is a plausible typo of
// the word (a few edits away), so a suggestion is never a wild guess.
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>

namespace spin {

// Optimal-string-alignment distance: the fewest single-character insertions, deletions,
// substitutions and transpositions of adjacent characters that turn a into b ("bf61" → "bf16"
// is 1). O(|a|·|b|) time, O(|b|) memory.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word` by edit_distance(), the first one on ties, provided it is a
// plausible typo of it: at most max(1, |word| / 3) edits away. Otherwise nullopt. `candidates` is
// any range of things convertible to std::string_view (std::vector<std::string>, ...).
template <std::ranges::input_range Range>
std::optional<std::string> closest_match(std::string_view word, const Range& candidates) {
  const std::size_t limit = std::max<std::size_t>(1, word.size() / 3);
  std::optional<std::string> best;
  std::size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    const std::string_view c(candidate);
    const std::size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best = std::string(c);
      best_distance = d;
    }
  }
  return best;
}

// "one of a, b, c": the names a value may take, for messages.
template <std::ranges::input_range Range>
std::string one_of(const Range& names) {
  std::string out = "one of ";
  bool first = true;
  for (const auto& n : names) {
    if (!first) out += ", ";
    out += std::string_view(n);
    first = false;
  }
  return out;
}

// "; did you mean 'y'?" where `word` is a plausible typo of a candidate (closest_match), else "";
// for messages that go on after the word.
template <std::ranges::input_range Range>
std::string did_you_mean(std::string_view word, const Range& candidates) {
  const std::optional<std::string> match = closest_match(word, candidates);
  return match ? "; did you mean '" + *match + "'?" : std::string();
}

// What a name check expected: "one of a, b, c (LISTED); did you mean 'x'?", where LISTED says
// where the names are listed (e.g. "spin --list workloads").
template <std::ranges::input_range Range>
std::string expected_name(std::string_view word, const Range& names, std::string_view listed) {
  return one_of(names) + " (" + std::string(listed) + ")" + did_you_mean(word, names);
}

// A byte count in the largest binary unit that keeps it ≥ 1, to three significant digits
// ("512 B", "1.31 MiB", "44.2 GiB").
std::string binary_bytes(double bytes);

// A byte count in the largest decimal unit that keeps it ≥ 1, to three significant digits
// ("512 B", "243 MB", "5.41 GB"), as transfer volumes are quoted next to GB/s.
std::string decimal_bytes(double bytes);

// `text` as one CSV field (RFC 4180): as it is, or in double quotes (quotes doubled) where it
// holds a comma, a quote or a line break.
std::string csv_field(std::string_view text);

// `text` as a YAML double-quoted scalar, e.g. a"b → "a\"b": the string as it is, never read
// as a mapping, a number or an escape sequence (a value written into a --set override).
std::string yaml_quoted(std::string_view text);

// The whole of a text file. Throws InputError "cannot read <what> 'FILE': <reason>" for a
// directory, a missing or unreadable file; `what` names the kind of file ("config file") or is
// empty.
std::string read_text_file(const std::filesystem::path& file, std::string_view what = {});

}  // namespace spin
