#include "common/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <span>
#include <sstream>
#include <vector>

#include "common/error.h"

namespace spin {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // Three rolling rows of the classic dynamic programme: row i-2 is needed for transpositions.
  std::vector<std::size_t> two_back(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], two_back[j - 2] + 1);
      }
    }
    std::swap(two_back, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string read_text_file(const std::filesystem::path& file, std::string_view what) {
  const std::string name = what.empty() ? fmt::format("'{}'", file.string())
                                        : fmt::format("{} '{}'", what, file.string());
  if (std::filesystem::is_directory(file)) {
    throw InputError(fmt::format("cannot read {}: it is a directory", name));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(fmt::format("cannot read {}: {}", name, std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw InputError(fmt::format("cannot read {}: {}", name, std::strerror(errno)));
  return text.str();
}

std::string yaml_quoted(std::string_view text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + '"';
}

namespace {

// `bytes` in units[u] = step^u bytes, the largest that keeps it ≥ 1 once rounded to three
// significant digits (999.7 MB is "1.00 GB", 9.996 GB "10.0 GB").
std::string scaled_bytes(double bytes, double step, std::span<const std::string_view> units) {
  const auto decimals = [](double v) { return v >= 100 ? 0 : v >= 10 ? 1 : 2; };
  const auto round_to = [](double v, int d) {
    const double scale = std::pow(10.0, d);
    return std::round(v * scale) / scale;
  };
  std::size_t u = 0;
  while (bytes >= step && u + 1 < units.size()) bytes /= step, ++u;
  double r = round_to(bytes, u == 0 ? 0 : decimals(bytes));
  if (r >= step && u + 1 < units.size()) {  // rounded up to the next unit
    bytes /= step;
    ++u;
    r = round_to(bytes, decimals(bytes));
  }
  if (u == 0) return fmt::format("{:.0f} B", r);
  return fmt::format("{:.{}f} {}", r, decimals(r), units[u]);
}

}  // namespace

std::string binary_bytes(double bytes) {
  static constexpr std::string_view kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled_bytes(bytes, 1024, kUnits);
}

std::string decimal_bytes(double bytes) {
  static constexpr std::string_view kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  return scaled_bytes(bytes, 1000, kUnits);
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(text);
  std::string q = "\"";
  for (const char c : text) q += c == '"' ? std::string_view("\"\"") : std::string_view(&c, 1);
  return q + "\"";
}

}  // namespace spin
