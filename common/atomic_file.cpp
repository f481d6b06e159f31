#include "common/atomic_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>

#include "common/error.h"

namespace spin {

PartialFile::PartialFile(std::filesystem::path file, std::string_view what)
    : file_(std::move(file)), partial_(file_.string() + ".partial"), what_(what) {
  stream_.open(partial_, std::ios::binary | std::ios::trunc);
  if (!stream_) fail(partial_, std::strerror(errno));
}

PartialFile::~PartialFile() {
  if (committed_) return;
  stream_.close();
  std::error_code ignored;
  std::filesystem::remove(partial_, ignored);
}

void PartialFile::commit() {
  stream_.close();
  if (!stream_) fail(partial_, std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(partial_, file_, ec);
  if (ec) fail(file_, ec.message());
  committed_ = true;
}

void PartialFile::fail(const std::filesystem::path& path, const std::string& reason) {
  stream_.close();
  std::error_code ignored;
  std::filesystem::remove(partial_, ignored);
  throw InputError(fmt::format("cannot write {} to '{}': {}", what_, path.string(), reason));
}

void write_file_atomically(const std::filesystem::path& file, std::string_view contents,
                           std::string_view what) {
  PartialFile out(file, what);
  out.stream() << contents;
  out.commit();
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
