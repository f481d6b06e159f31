#include "common/atomic_file.h"

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>

#include "common/error.h"

namespace spin {
namespace {

// The partial files being written, for the signal handler below: a fixed table of C strings that
// their PartialFiles own. A partial file beyond the 64th at once is still written atomically;
// only its removal on a signal is lost.
std::array<std::atomic<const char*>, 64> live_partials{};

// SIGINT, SIGTERM or SIGHUP (Ctrl-C, kill, a closed terminal) while partial files are written:
// removes them (unlink is async-signal-safe), then dies of the signal as it would have.
extern "C" void remove_partials_on_signal(int signal) {
  for (const std::atomic<const char*>& slot : live_partials) {
    if (const char* path = slot.load(std::memory_order_acquire)) ::unlink(path);
  }
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  ::sigemptyset(&fallback.sa_mask);
  ::sigaction(signal, &fallback, nullptr);
  ::raise(signal);
}

// Installs the handler where the signal has its default action (one ignored, as under nohup, or
// handled by someone else, is left alone). Three system calls per partial file.
void install_signal_cleanup() {
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction current {};
    if (::sigaction(signal, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) continue;
    struct sigaction cleanup {};
    cleanup.sa_handler = remove_partials_on_signal;
    ::sigemptyset(&cleanup.sa_mask);
    ::sigaction(signal, &cleanup, nullptr);
  }
}

// The slot that now holds `path`, or live_partials.size() where all are taken.
std::size_t track_partial(const char* path) {
  install_signal_cleanup();
  for (std::size_t i = 0; i < live_partials.size(); ++i) {
    const char* empty = nullptr;
    if (live_partials[i].compare_exchange_strong(empty, path, std::memory_order_acq_rel)) return i;
  }
  return live_partials.size();
}

void untrack_partial(std::size_t slot) {
  if (slot < live_partials.size()) live_partials[slot].store(nullptr, std::memory_order_release);
}

}  // namespace

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
  if (!stream_) {
    const int error = errno;
    in_place_ = true;  // not created here (e.g. a folder of that name): not removed either
    fail(partial_, std::strerror(error));
  }
  if (!in_place_) {
    partial_name_ = partial_.string();
    live_slot_ = track_partial(partial_name_.c_str());
  }
}

void PartialFile::check_written() {
  if (!stream_) fail(partial_, std::strerror(errno));
}

PartialFile::~PartialFile() {
  if (committed_ || in_place_) return;
  stream_.close();
  std::error_code ignored;
  std::filesystem::remove(partial_, ignored);
  untrack_partial(live_slot_);
}

void PartialFile::commit() {
  stream_.close();
  if (!stream_) fail(partial_, std::strerror(errno));
  committed_ = in_place_;
  if (in_place_) return;
  std::error_code ec;
  std::filesystem::rename(partial_, file_, ec);
  if (ec) fail(file_, ec.message());
  untrack_partial(live_slot_);
  committed_ = true;
}

void PartialFile::fail(const std::filesystem::path& path, const std::string& reason) {
  stream_.close();
  std::error_code ignored;
  if (!in_place_) {
    std::filesystem::remove(partial_, ignored);
    untrack_partial(live_slot_);
    in_place_ = true;  // removed: the destructor has nothing left to do
  }
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
