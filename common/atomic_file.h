// Output files and folders: writing a file so that nothing half-written is ever at its path (a
// run's resolved config, JSON results, exported traces, decision logs: the contents go to
// FILE.partial in the same folder, which is renamed over FILE once complete and removed on
// failure), creating an output folder, and refusing an output that is the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace spin {

// Where a write to `file` goes. A symbolic link is followed (its target is written, the link
// stays). An existing file that is not a regular one (a device such as /dev/stdout's, a pipe) is
// written in place: it cannot be replaced by a rename, nor should it be.
struct OutputTarget {
  std::filesystem::path path;
  bool in_place = false;
};
OutputTarget output_target(const std::filesystem::path& file);

// A file written as FILE.partial and renamed to FILE by commit(). Destroyed before commit()
// (an exception on the way), it removes FILE.partial and leaves FILE as it was; so does SIGINT,
// SIGTERM or SIGHUP while it is written (where the signal had its default action: the process
// then dies of it as it would have). FILE is output_target(file): a link's target, or a device or
// pipe written in place (no partial file). Errors throw InputError "cannot write <what> to
// '<path>': <reason>", a directory at FILE too; a FILE.partial that could not be opened (a folder
// of that name) is not removed.
class PartialFile {
 public:
  PartialFile(std::filesystem::path file, std::string_view what);
  ~PartialFile();
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;

  std::ostream& stream() { return stream_; }
  // Throws (and removes FILE.partial) where a write to the stream has failed, e.g. a full disk.
  void check_written();
  // Closes the stream, checks that every write succeeded and renames FILE.partial to FILE.
  void commit();

 private:
  [[noreturn]] void fail(const std::filesystem::path& path, const std::string& reason);

  std::filesystem::path file_;
  std::filesystem::path partial_;
  std::string partial_name_;  // partial_ as the signal handler reads it
  std::size_t live_slot_ = SIZE_MAX;
  std::string what_;
  std::ofstream stream_;
  bool in_place_ = false;
  bool committed_ = false;
};

// `contents` through a PartialFile.
void write_file_atomically(const std::filesystem::path& file, std::string_view contents,
                           std::string_view what);

// Creates folder `dir` and its parents where missing. Throws InputError "cannot create <what>
// '<dir>': <reason>" where that fails, e.g. where `dir` is a file.
void create_output_folder(const std::filesystem::path& dir, std::string_view what);

// Throws InputError "<option> <output> is the input file ..." where `output` names the same
// file as `input` (writing it would destroy the input while it is read).
void refuse_input_as_output(const std::filesystem::path& input, const std::filesystem::path& output,
                            std::string_view option);

}  // namespace spin
