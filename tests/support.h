// Helpers shared by the test suites.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace spin::test {

// Result of running the `spin` CLI in-process: exit status and what it printed.
struct CliRun {
  int status;
  std::string out;
  std::string err;
};

// Runs `spin ARGS...` in this process (sim/cli/command.h) and captures std::cout and std::cerr.
CliRun run_spin(const std::vector<std::string>& args);

// A fresh, empty directory under the system temp folder, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& contents);

// Path of a file in the source tree, e.g. source_path("configs/default.yaml").
std::filesystem::path source_path(const std::string& relative);

}  // namespace spin::test
