#include "common/atomic_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>

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

void create_output_folder(const std::filesystem::path& dir, std::string_view what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec && !std::filesystem::is_directory(dir, ec)) {
    ec = std::make_error_code(std::errc::not_a_directory);
  }
  if (ec) {
    throw InputError(fmt::format("cannot create {} '{}': {}", what, dir.string(), ec.message()));
  }
}

void refuse_input_as_output(const std::filesystem::path& input, const std::filesystem::path& output,
                            std::string_view option) {
  std::error_code ec;
  if (std::filesystem::equivalent(input, output, ec)) {
    throw InputError(fmt::format("{} {} is the input file {}; the output must go to another file",
                                 option, output.string(), input.string()));
  }
}

}  // namespace spin
