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

OutputTarget output_target(const std::filesystem::path& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  OutputTarget target{file};
  if (fs::is_symlink(file, ec)) {
    if (fs::exists(file, ec)) {
      target.path = fs::canonical(file, ec);
      if (ec) target.path = file;
    } else {  // a dangling link: its target is created
      const fs::path to = fs::read_symlink(file, ec);
      if (!ec) target.path = to.is_absolute() ? to : file.parent_path() / to;
    }
  }
  const fs::file_status status = fs::status(target.path, ec);
  target.in_place =
      !ec && fs::exists(status) && !fs::is_regular_file(status) && !fs::is_directory(status);
  return target;
}

PartialFile::PartialFile(std::filesystem::path file, std::string_view what) : what_(what) {
  const OutputTarget target = output_target(file);
  file_ = target.path;
  in_place_ = target.in_place;
  partial_ = in_place_ ? file_ : std::filesystem::path(file_.string() + ".partial");
  std::error_code ec;
  if (std::filesystem::is_directory(file_, ec)) {
    in_place_ = true;  // nothing to remove
    fail(file_, "it is a directory");
  }
  stream_.open(partial_, std::ios::binary | std::ios::trunc);
  if (!stream_) fail(partial_, std::strerror(errno));
}

void PartialFile::check_written() {
  if (!stream_) fail(partial_, std::strerror(errno));
}

PartialFile::~PartialFile() {
  if (committed_ || in_place_) return;
  stream_.close();
  std::error_code ignored;
  std::filesystem::remove(partial_, ignored);
}

void PartialFile::commit() {
  stream_.close();
  if (!stream_) fail(partial_, std::strerror(errno));
  committed_ = in_place_;
  if (in_place_) return;
  std::error_code ec;
  std::filesystem::rename(partial_, file_, ec);
  if (ec) fail(file_, ec.message());
  committed_ = true;
}

void PartialFile::fail(const std::filesystem::path& path, const std::string& reason) {
  stream_.close();
  std::error_code ignored;
  if (!in_place_) std::filesystem::remove(partial_, ignored);
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
