#include "common/atomic_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "common/error.h"

namespace spin {

void write_file_atomically(const std::filesystem::path& file, std::string_view contents,
                           std::string_view what) {
  const std::filesystem::path temporary = file.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      throw InputError(
          fmt::format("cannot write {} to '{}': {}", what, temporary.string(), reason));
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, file, ec);
  if (ec) {
    const std::string reason = ec.message();
    std::filesystem::remove(temporary, ec);
    throw InputError(fmt::format("cannot write {} to '{}': {}", what, file.string(), reason));
  }
}

}  // namespace spin
