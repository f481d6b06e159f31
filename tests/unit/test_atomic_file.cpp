// PartialFile and write_file_atomically (common/atomic_file.h): nothing half-written is ever at
// the output's path, and a failure leaves the path as it was.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "common/atomic_file.h"
#include "common/error.h"
#include "tests/support.h"

using spin::PartialFile;

TEST_CASE("atomic_file: a PartialFile appears at its path only on commit", "[unit][cli]") {
  spin::test::TempDir dir;
  const std::filesystem::path file = dir / "out.txt";
  const std::filesystem::path partial = dir / "out.txt.partial";
  {
    PartialFile out(file, "the test output");
    out.stream() << "new";
    CHECK(std::filesystem::exists(partial));
    CHECK_FALSE(std::filesystem::exists(file));
    out.commit();
  }
  CHECK(spin::test::read_file(file) == "new");
  CHECK_FALSE(std::filesystem::exists(partial));

  // An exception before commit: the partial file goes, the earlier file stays as it was.
  try {
    PartialFile out(file, "the test output");
    out.stream() << "half";
    throw std::runtime_error("the producer failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(spin::test::read_file(file) == "new");
  CHECK_FALSE(std::filesystem::exists(partial));

  spin::write_file_atomically(file, "whole", "the test output");
  CHECK(spin::test::read_file(file) == "whole");
  CHECK_FALSE(std::filesystem::exists(partial));
}

TEST_CASE("atomic_file: a PartialFile that cannot be written names the path and the reason",
          "[unit][cli]") {
  spin::test::TempDir dir;
  try {
    PartialFile out(dir / "missing" / "out.txt", "the test output");
    FAIL("no error");
  } catch (const spin::InputError& e) {
    CHECK(std::string(e.what()) == "cannot write the test output to '" +
                                       (dir / "missing" / "out.txt.partial").string() +
                                       "': No such file or directory");
  }
  // A write that fails (a full device) is reported by commit(), which leaves nothing behind.
  if (std::filesystem::exists("/dev/full")) {
    const std::filesystem::path link = dir / "full";
    std::filesystem::create_symlink("/dev/full", dir / "full.partial");
    PartialFile out(link, "the test output");
    out.stream() << std::string(1 << 16, 'x');
    CHECK_THROWS_WITH(out.commit(), Catch::Contains("cannot write the test output to '" +
                                                    (dir / "full.partial").string() + "'"));
    CHECK_FALSE(std::filesystem::exists(dir / "full"));
  }
}

TEST_CASE("atomic_file: a link's target is written, a device in place", "[unit][cli]") {
  spin::test::TempDir dir;
  spin::test::write_file(dir / "target.json", "old");
  std::filesystem::create_symlink(dir / "target.json", dir / "link.json");
  spin::write_file_atomically(dir / "link.json", "new", "the test output");
  CHECK(std::filesystem::is_symlink(dir / "link.json"));
  CHECK(spin::test::read_file(dir / "target.json") == "new");
  // A dangling link: its target is created.
  std::filesystem::create_symlink("made.json", dir / "dangling.json");
  spin::write_file_atomically(dir / "dangling.json", "made", "the test output");
  CHECK(std::filesystem::is_symlink(dir / "dangling.json"));
  CHECK(spin::test::read_file(dir / "made.json") == "made");
  // A device is written, not replaced by a regular file (nor is a link to one).
  if (std::filesystem::is_character_file("/dev/null")) {
    std::filesystem::create_symlink("/dev/null", dir / "null");
    spin::write_file_atomically(dir / "null", "gone", "the test output");
    CHECK(std::filesystem::is_character_file("/dev/null"));
    CHECK(std::filesystem::is_symlink(dir / "null"));
    CHECK_FALSE(std::filesystem::exists("/dev/null.partial"));
  }
  if (std::filesystem::is_character_file("/dev/full")) {
    std::filesystem::create_symlink("/dev/full", dir / "full-link");
    CHECK_THROWS_WITH(spin::write_file_atomically(dir / "full-link", std::string(1 << 16, 'x'),
                                                  "the test output"),
                      Catch::Contains("cannot write the test output to '/dev/full'"));
    CHECK(std::filesystem::is_character_file("/dev/full"));
  }
  // A directory is refused before anything is written.
  CHECK_THROWS_WITH(
      spin::write_file_atomically(dir.path(), "x", "the test output"),
      "cannot write the test output to '" + dir.path().string() + "': it is a directory");
}

TEST_CASE("atomic_file: a folder in the partial file's place is reported and left alone",
          "[unit][cli]") {
  spin::test::TempDir dir;
  std::filesystem::create_directory(dir / "out.txt.partial");
  CHECK_THROWS_WITH(spin::write_file_atomically(dir / "out.txt", "x", "the test output"),
                    Catch::StartsWith("cannot write the test output to '" +
                                      (dir / "out.txt.partial").string() + "'"));
  CHECK(std::filesystem::is_directory(dir / "out.txt.partial"));
}

TEST_CASE("atomic_file: a signal while a PartialFile is written removes it", "[unit][cli]") {
  spin::test::TempDir dir;
  spin::test::write_file(dir / "out.txt", "old");
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) {
    INFO(signal);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // The signals' default actions, as in `spin` (the test runner handles them itself).
      for (const int s : {SIGINT, SIGTERM, SIGHUP}) std::signal(s, SIG_DFL);
      PartialFile out(dir / "out.txt", "the test output");
      out.stream() << "half" << std::flush;
      std::raise(signal);
      _exit(0);  // not reached: the signal ends the process
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == signal);
    CHECK_FALSE(std::filesystem::exists(dir / "out.txt.partial"));
    CHECK(spin::test::read_file(dir / "out.txt") == "old");
  }
}
