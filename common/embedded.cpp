#include "common/embedded.h"

#include <algorithm>

namespace spin {

std::optional<std::string_view> embedded_file(std::string_view name) {
  const auto files = embedded_files();
  const auto it =
      std::lower_bound(files.begin(), files.end(), name,
                       [](const EmbeddedFile& f, std::string_view n) { return f.name < n; });
  if (it == files.end() || it->name != name) return std::nullopt;
  return it->contents;
}

}  // namespace spin
