// Parameter sweeps: expansion, results, resuming after a kill, sharding and merging, failures.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "sim/sweep.h"
#include "tests/support.h"

using spin::test::read_file;
using spin::test::run_spin;
using spin::test::source_path;
using spin::test::write_file;

namespace {

std::string sweep_text(const std::string& axes, const std::string& extra = "") {
  return "base: " + source_path("configs/default.yaml").string() + "\n" + extra + "axes:\n" + axes;
}

size_t lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST_CASE("sweep: grids, zips, ranges and seeds expand in order", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml", sweep_text("  - grid:\n"
                                        "      serving.mode: [dense, \"spin:shadowkv\"]\n"
                                        "      cache.buffer_ratio: {from: 1, to: 2, step: 0.5}\n"
                                        "  - zip:\n"
                                        "      hardware: [h100-sxm, h200]\n"
                                        "      serving.max_batch_tokens: [4096, 8192]\n",
                                        "seeds: [3, 4]\n"));
  const spin::sim::Sweep s = spin::sim::load_sweep(dir / "s.yaml");
  REQUIRE(s.points.size() == 2 * 3 * 2 * 2);
  CHECK(s.swept_keys == std::vector<std::string>{"serving.mode", "cache.buffer_ratio", "hardware",
                                                 "serving.max_batch_tokens", "seed"});
  CHECK(s.points[0].sets() == std::vector<std::string>{"serving.mode=dense", "cache.buffer_ratio=1",
                                                       "hardware=h100-sxm",
                                                       "serving.max_batch_tokens=4096", "seed=3"});
  CHECK(s.points[1].values.back().second == "4");
  CHECK(s.points[2].values[2].second == "h200");
  CHECK(s.points[2].values[3].second == "8192");  // zipped with h200
  CHECK(s.points[4].values[1].second == "1.5");
  CHECK(s.points[12].values[0].second == "\"spin:shadowkv\"");
  CHECK(s.config(s.points[23]).serving.mode == "spin:shadowkv");
  CHECK(s.config(s.points[23]).seed == 4);
  // Quoted strings reach the config as written: quotes and backslashes included.
  write_file(dir / "q.yaml", sweep_text("  - grid:\n"
                                        "      hardware.transfer.source: [\"c\\\"d\", 'a\\tb']\n"));
  const spin::sim::Sweep q = spin::sim::load_sweep(dir / "q.yaml");
  REQUIRE(q.points.size() == 2);
  CHECK(q.config(q.points[0]).hardware.transfer.source == "c\"d");
  CHECK(q.config(q.points[1]).hardware.transfer.source == "a\\tb");
  // Range values are rounded to the decimals written (0.1 steps: 0.3, not 0.30000000000000004);
  // the step defaults to 1.
  write_file(dir / "r.yaml",
             sweep_text("  - grid:\n"
                        "      cache.buffer_ratio: {from: 1.1, to: 1.5, step: 0.1}\n"
                        "      serving.max_batch_requests: {from: 1, to: 2}\n"));
  const spin::sim::Sweep r = spin::sim::load_sweep(dir / "r.yaml");
  REQUIRE(r.points.size() == 10);
  for (size_t i = 0; i < 10; ++i) {
    CHECK(r.points[i].values[0].second == fmt::format("1.{}", 1 + i / 2));
    CHECK(r.points[i].values[1].second == fmt::format("{}", 1 + i % 2));
  }
}

TEST_CASE("sweep: malformed files and rejected values name the place", "[unit][sim]") {
  spin::test::TempDir dir;
  const auto error = [&](const std::string& text) {
    write_file(dir / "s.yaml", text);
    try {
      spin::sim::load_sweep(dir / "s.yaml");
    } catch (const spin::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(error("axis: []\n").find("s.yaml:1:1: unknown key 'axis'") != std::string::npos);
  CHECK(error("base: nope.yaml\naxes:\n  - grid:\n      seed: [1]\n")
            .find("s.yaml:1:7: base: no config file ") != std::string::npos);
  CHECK(error(sweep_text("  - zip:\n      seed: [1, 2]\n      cache.buckets: [8]\n"))
            .find("zip: cache.buckets has 1 values but seed has 2") != std::string::npos);
  CHECK(
      error(sweep_text("  - grid:\n      cache.buckets: {from: 4, to: 1}\n")).find("to >= from") !=
      std::string::npos);
  const std::string bad = error(sweep_text("  - grid:\n      cache.bucketz: [8]\n"));
  CHECK(bad.find("point 0 (cache.bucketz=8)") != std::string::npos);
  CHECK(bad.find("did you mean") != std::string::npos);
  // A seed swept twice; more points than a sweep may have (each range alone is short enough).
  CHECK(error(sweep_text("  - grid:\n      seed: [1, 2]\n", "seeds: [3]\n"))
            .find("seeds: key seed is swept by an axis too") != std::string::npos);
  CHECK(error(sweep_text("  - grid:\n      cache.buckets: {from: 1, to: 1000}\n"
                         "      serving.max_batch_requests: {from: 1, to: 1000}\n"))
            .find("s.yaml:5:7: the sweep expands to more than 100000 points") != std::string::npos);
  // The override at fault is named by its place in the sweep file: the axis key, the set entry.
  CHECK(bad.find("s.yaml:4:7: point 0 (cache.bucketz=8): --set cache.bucketz=8: unknown key") !=
        std::string::npos);
  CHECK(error(sweep_text("  - grid:\n      cache.buckets: [8]\n",
                         "set:\n  - serving.max_batch_requests=0\n"))
            .find("s.yaml:3:5: point 0 (cache.buckets=8): --set serving.max_batch_requests=0: ") !=
        std::string::npos);
  CHECK(error(sweep_text("  - grid:\n      cache.buckets: [8]\n", "seeds: [a]\n"))
            .find("s.yaml:2:8: point 0 (cache.buckets=8, seed=a): --set seed=a: ") !=
        std::string::npos);
  // A shard is i/N exactly, without spaces.
  for (const std::string shard : {" 1/2", "1/2 ", "1 /2"})
    CHECK_THROWS_WITH(spin::sim::parse_shard(shard), Catch::Contains("expected i/N"));
  CHECK(spin::sim::parse_shard("1/2").index == 1);
}

TEST_CASE("sweep: runs every point once, records failures, and keeps finished points on rerun",
          "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml",
             sweep_text("  - grid:\n"
                        "      serving.mode: [dense, \"spin:shadowkv\"]\n"
                        "      hardware.hbm_gib: [80, 20]\n"));  // 20: weights do not fit
  const auto first =
      run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "o").string(), "--jobs", "2"});
  CHECK(first.status == 1);  // a point failed
  CHECK(first.out.find("4 points: 4 run (2 failed)") != std::string::npos);
  const std::string csv = read_file(dir / "o" / "results.csv");
  CHECK(lines(csv) == 5);
  CHECK(csv.rfind("point,status,error,folder,serving.mode,hardware.hbm_gib,mode,", 0) == 0);
  CHECK(csv.find("\n0,ok,,points/p000000,dense,80,dense,") != std::string::npos);
  CHECK(csv.find("\n1,failed,") != std::string::npos);
  CHECK(csv.find("do not fit") != std::string::npos);
  CHECK(std::filesystem::exists(dir / "o" / "points" / "p000002" / "timeline.json"));

  const auto again = run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "o").string()});
  CHECK(again.out.find("4 points: 2 run (2 failed), 2 kept from an earlier run") !=
        std::string::npos);
  CHECK(read_file(dir / "o" / "results.csv") == csv);
  // A changed input (here a --set for every point) recomputes.
  const auto changed = run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "o").string(),
                                 "--set", "serving.max_batch_tokens=4096"});
  CHECK(changed.out.find("4 points: 4 run") != std::string::npos);
  // --no-timeline leaves the timelines out and nothing else; the finished points are kept.
  std::filesystem::remove_all(dir / "o" / "points" / "p000000");
  const auto lean = run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "o").string(),
                              "--set", "serving.max_batch_tokens=4096", "--no-timeline"});
  CHECK(lean.out.find("4 points: 3 run (2 failed), 1 kept from an earlier run") !=
        std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "o" / "points" / "p000000" / "timeline.json"));
  CHECK(std::filesystem::exists(dir / "o" / "points" / "p000000" / "summary.json"));
  CHECK(std::filesystem::exists(dir / "o" / "points" / "p000002" / "timeline.json"));
}

TEST_CASE("sweep: shards merged give the table of the whole sweep", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml", sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2, 3, 4, 5]\n"));
  REQUIRE(run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "all").string()}).status ==
          0);
  for (const char* shard : {"0/2", "1/2"}) {
    const auto r = run_spin({"sweep", (dir / "s.yaml").string(), "--out",
                             (dir / ("s" + std::string(1, shard[0]))).string(), "--shard", shard});
    REQUIRE(r.status == 0);
  }
  CHECK(lines(read_file(dir / "s0" / "results.csv")) == 4);  // points 0, 2, 4
  const auto merged = run_spin({"sweep", "merge", (dir / "s1").string(), (dir / "s0").string(),
                                "--out", (dir / "m").string()});
  REQUIRE(merged.status == 0);
  CHECK(merged.out.find(": 5 of 5 points") != std::string::npos);
  CHECK(read_file(dir / "m" / "results.csv") == read_file(dir / "all" / "results.csv"));
  CHECK(std::filesystem::exists(dir / "m" / "points" / "p000003" / "summary.json"));
  // A shard left out: the others are merged, the missing points named, and the status is 1.
  const auto part =
      run_spin({"sweep", "merge", (dir / "s0").string(), "--out", (dir / "p").string()});
  CHECK(part.status == 1);
  CHECK(part.out.find(": 3 of 5 points") != std::string::npos);
  CHECK(part.err.find("2 points are in no shard: 1, 3 ") != std::string::npos);
  CHECK(lines(read_file(dir / "p" / "results.csv")) == 4);
  // Shards of sweeps with different point counts are not merged.
  write_file(dir / "s1" / "shard.json", R"({"shard": "1/2", "sweep_points": 6})");
  const std::string differ = "the sweep has 6 points here, 5 in " +
                             (dir / "s0" / "shard.json").string() + ": not shards of one sweep";
  CHECK(run_spin({"sweep", "merge", (dir / "s0").string(), (dir / "s1").string(), "--out",
                  (dir / "q").string()})
            .err.find(differ) != std::string::npos);
  // The count named is the one read, not the first shard's (an older shard without shard.json).
  std::filesystem::copy(dir / "s0", dir / "old", std::filesystem::copy_options::recursive);
  std::filesystem::remove(dir / "old" / "shard.json");
  CHECK(run_spin({"sweep", "merge", (dir / "old").string(), (dir / "s0").string(),
                  (dir / "s1").string(), "--out", (dir / "r").string()})
            .err.find(differ) != std::string::npos);
  CHECK(run_spin({"sweep", "x.yaml", "--out", "o", "--shard", "2/2"}).status == 2);
}

namespace {

// Shards 0/2 and 1/2 of a 4-point sweep in dir/s0 and dir/s1; returns s1's results.csv.
std::string two_shards(const std::filesystem::path& dir) {
  write_file(dir / "s.yaml", sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2, 3, 4]\n"));
  for (const char* shard : {"0/2", "1/2"}) {
    const auto r = run_spin({"sweep", (dir / "s.yaml").string(), "--out",
                             (dir / ("s" + std::string(1, shard[0]))).string(), "--shard", shard,
                             "--no-timeline"});
    REQUIRE(r.status == 0);
  }
  const std::string table = read_file(dir / "s1" / "results.csv");
  REQUIRE(lines(table) == 3);  // the header, points 1 and 3
  return table;
}

}  // namespace

TEST_CASE("sweep: a folder that held another sweep keeps none of its points", "[unit][sim]") {
  spin::test::TempDir dir;
  const auto points = [&](const std::filesystem::path& out) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(out / "points"))
      names.push_back(e.path().filename().string());
    std::ranges::sort(names);
    return names;
  };
  write_file(dir / "a.yaml", sweep_text("  - grid:\n      cache.buffer_ratio: [5, 6, 7]\n"));
  write_file(dir / "b.yaml", sweep_text("  - grid:\n      cache.buffer_ratio: [4]\n"));
  REQUIRE(
      run_spin({"sweep", (dir / "a.yaml").string(), "--out", (dir / "o").string(), "--no-timeline"})
          .status == 0);
  REQUIRE(points(dir / "o").size() == 3);
  REQUIRE(
      run_spin({"sweep", (dir / "b.yaml").string(), "--out", (dir / "o").string(), "--no-timeline"})
          .status == 0);
  CHECK(points(dir / "o") == std::vector<std::string>{"p000000"});

  // A shard run into a whole sweep's folder keeps only its own points.
  REQUIRE(run_spin({"sweep", (dir / "a.yaml").string(), "--out", (dir / "o").string(),
                    "--no-timeline", "--shard", "1/2"})
              .status == 0);
  CHECK(points(dir / "o") == std::vector<std::string>{"p000001"});

  // A merge over another sweep's merged folder: its points are replaced or removed.
  two_shards(dir.path());
  REQUIRE(
      run_spin({"sweep", (dir / "a.yaml").string(), "--out", (dir / "m").string(), "--no-timeline"})
          .status == 0);
  REQUIRE(
      run_spin({"sweep", "merge", (dir / "s0").string(), "--out", (dir / "m").string()}).status ==
      1);  // points 1 and 3 are in no shard
  CHECK(points(dir / "m") == std::vector<std::string>{"p000000", "p000002"});
  for (const char* p : {"p000000", "p000002"}) {
    CHECK(read_file(dir / "m" / "points" / p / "point.json") ==
          read_file(dir / "s0" / "points" / p / "point.json"));
  }
}

TEST_CASE("sweep: merge names the shard whose results.csv is cut short, and not the other",
          "[unit][sim]") {
  spin::test::TempDir dir;
  const std::string whole = two_shards(dir.path());
  const std::filesystem::path cut = dir / "s1" / "results.csv";
  // The message of merging the shards when s1's results.csv keeps its first `size` bytes.
  const auto merge_error = [&](std::size_t size) {
    write_file(cut, whole.substr(0, size));
    const auto r = run_spin({"sweep", "merge", (dir / "s1").string(), (dir / "s0").string(),
                             "--out", (dir / "m").string()});
    CHECK(r.status == 2);
    CHECK(r.err.find((dir / "s0").string()) == std::string::npos);
    return r.err;
  };
  const std::string cut_short =
      ": the file ends inside this record; expected a newline at its end (the file is cut short";
  CHECK(merge_error(whole.size() - 20).find(cut.string() + ":3" + cut_short) != std::string::npos);
  CHECK(merge_error(whole.find('\n') / 2).find(cut.string() + ":1" + cut_short) !=
        std::string::npos);
}

TEST_CASE("sweep: merge checks every shard's rows before it writes anything, naming the row",
          "[unit][sim]") {
  spin::test::TempDir dir;
  const std::string whole = two_shards(dir.path());
  const std::filesystem::path table = dir / "s1" / "results.csv";
  const std::size_t row3 = whole.find("\n3,") + 1;
  REQUIRE(row3 > 0);
  // The message of merging s0, then s1 holding `text`; the merge writes nothing at all.
  const auto merge_error = [&](const std::string& text) {
    write_file(table, text);
    const auto r = run_spin({"sweep", "merge", (dir / "s0").string(), (dir / "s1").string(),
                             "--out", (dir / "m").string()});
    CHECK(r.status == 2);
    CHECK_FALSE(std::filesystem::exists(dir / "m"));
    return r.err;
  };
  const auto with = [&](std::size_t at, std::size_t size, const std::string& text) {
    return std::string(whole).replace(at, size, text);
  };
  const std::string at3 = table.string() + ":3: ";
  CHECK(merge_error(with(row3, 1, "x3")).find(at3 + "point 'x3': expected a point number") !=
        std::string::npos);
  CHECK(merge_error(with(row3, 1, "7")).find(at3 + "point 7: the sweep has 4 points (0 to 3)") !=
        std::string::npos);
  const std::size_t folder = whole.find("points/p000003");
  CHECK(merge_error(with(folder, 7, "../"))
            .find(at3 + "folder '../p000003': expected points/p000003 for point 3") !=
        std::string::npos);
  std::filesystem::rename(dir / "s1" / "points" / "p000003", dir / "p3");
  CHECK(merge_error(whole).find(at3 + "point 3's folder " +
                                (dir / "s1" / "points" / "p000003").string() + " is missing") !=
        std::string::npos);
  std::filesystem::rename(dir / "p3", dir / "s1" / "points" / "p000003");
  // Point 0 in both shards, with rows that differ: both rows are named.
  std::filesystem::copy(dir / "s0" / "points" / "p000000", dir / "s1" / "points" / "p000000",
                        std::filesystem::copy_options::recursive);
  const std::string s0 = read_file(dir / "s0" / "results.csv");
  std::string row0 = s0.substr(s0.find('\n') + 1);
  row0 = row0.substr(0, row0.find('\n') + 1);
  REQUIRE(row0.find("0,ok,") == 0);
  CHECK(merge_error(whole + "0,failed," + row0.substr(5))
            .find(table.string() + ":4: point 0 differs from its row at " +
                  (dir / "s0" / "results.csv").string() + ":2") != std::string::npos);
  // The same row in both shards merges.
  write_file(table, whole + row0);
  CHECK(run_spin({"sweep", "merge", (dir / "s0").string(), (dir / "s1").string(), "--out",
                  (dir / "m").string()})
            .status == 0);
  CHECK(lines(read_file(dir / "m" / "results.csv")) == 5);
}

TEST_CASE("sweep: killed mid-run, a rerun finishes the missing points, none lost or duplicated",
          "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml",
             sweep_text("  - grid:\n      cache.buffer_ratio: {from: 1, to: 12, step: 1}\n"
                        "      serving.mode: [\"spin:shadowkv\", \"oracle:shadowkv\", "
                        "\"ideal:shadowkv\"]\n",
                        "seeds: [1, 2, 3]\n"));
  const std::string spin_exe = std::string(SPIN_BUILD_DIR) + "/spin";
  const std::string out = (dir / "o").string();
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    freopen("/dev/null", "w", stderr);
    freopen("/dev/null", "w", stdout);
    execl(spin_exe.c_str(), spin_exe.c_str(), "sweep", (dir / "s.yaml").c_str(), "--out",
          out.c_str(), "--jobs", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill it once a few points are done, in the middle of others.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  size_t done = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (std::filesystem::exists(dir / "o" / "results.csv"))
      done = lines(read_file(dir / "o" / "results.csv")) - 1;
    if (done >= 3) break;
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(done >= 3);
  REQUIRE(done < 108);  // still running when killed

  const auto rerun = run_spin({"sweep", (dir / "s.yaml").string(), "--out", out, "--jobs", "2"});
  REQUIRE(rerun.status == 0);
  CHECK(rerun.out.find("108 points:") != std::string::npos);
  // Points finished before the kill are kept (one more may have finished as it was killed).
  const bool kept = rerun.out.find(std::to_string(done) + " kept from") != std::string::npos ||
                    rerun.out.find(std::to_string(done + 1) + " kept from") != std::string::npos;
  CHECK(kept);
  const std::string csv = read_file(dir / "o" / "results.csv");
  CHECK(lines(csv) == 109);
  for (int p = 0; p < 108; ++p) {
    const std::string row = "\n" + std::to_string(p) + ",ok,";
    const size_t at = csv.find(row);
    CHECK(at != std::string::npos);
    CHECK(csv.find(row, at + 1) == std::string::npos);
  }
  for (const auto& e : std::filesystem::directory_iterator(dir / "o" / "points"))
    CHECK(e.path().extension() != ".tmp");
}

TEST_CASE("sweep: under mpirun with 2 ranks the table equals the local run's", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml",
             sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2, 3, 4, 5, 6]\n"));
  if (!spin::sim::sweep_mpi_available()) {
    const auto r =
        run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "m").string(), "--mpi"});
    CHECK(r.status == 2);
    CHECK(r.err.find("built without MPI") != std::string::npos);
    return;
  }
  REQUIRE(
      run_spin({"sweep", (dir / "s.yaml").string(), "--out", (dir / "local").string()}).status ==
      0);
  // Open MPI refuses root without these; its shared-memory transport may not use CMA in a
  // container; and its own allocations would trip LeakSanitizer in sanitizer builds.
  const std::string command =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 "
      "ASAN_OPTIONS=detect_leaks=0 mpirun -n 2 " +
      std::string(SPIN_BUILD_DIR) + "/spin sweep " + (dir / "s.yaml").string() + " --out " +
      (dir / "mpi").string() + " --mpi > " + (dir / "log").string() + " 2>&1";
  const int status = std::system(command.c_str());
  INFO(read_file(dir / "log"));
  REQUIRE(status == 0);
  CHECK(read_file(dir / "log").find("6 points: 6 run (0 failed)") != std::string::npos);
  CHECK(read_file(dir / "mpi" / "results.csv") == read_file(dir / "local" / "results.csv"));
}

TEST_CASE("sweep: every shipped sweep file loads and each point's config validates",
          "[unit][sim]") {
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(source_path("configs/sweeps"))) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path());
    ++files;
    const spin::sim::Sweep s = spin::sim::load_sweep(entry.path());
    CHECK(!s.points.empty());
    for (const auto& p : s.points) CHECK_NOTHROW(s.config(p));
  }
  CHECK(files >= 9);
}

TEST_CASE("sweep: overrides of swept keys and points given twice are refused", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(
      dir / "s.yaml",
      sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2]\n      hardware.hbm_gib: [80]\n",
                 "set: [hardware=h200]\n"));  // a section the axis then changes: fine
  CHECK(spin::sim::load_sweep(dir / "s.yaml").config({0, {}}).hardware.preset == "h200");
  // A `set:` entry inside a section an axis sets by preset name applies on top of each point's
  // section (before it, the preset would replace it).
  write_file(dir / "p.yaml", sweep_text("  - grid:\n      hardware: [a100-80gb-pcie, h100-sxm]\n"
                                        "      model: [qwen3-14b]\n",
                                        "set: [hardware.pcie_h2d_gbps=1, model.dtype=fp8, "
                                        "cache.buckets=32]\n"));
  const spin::sim::Sweep presets = spin::sim::load_sweep(dir / "p.yaml");
  CHECK(presets.set == std::vector<std::string>{"cache.buckets=32"});
  for (const auto& p : presets.points) {
    const spin::config::Config c = presets.config(p);
    CHECK(c.hardware.pcie_h2d_gbps == 1);
    CHECK(c.model.dtype == spin::config::Dtype::kFp8);
    CHECK(c.cache.buckets == 32);
  }
  CHECK(presets.config(presets.points[0]).hardware.preset == "a100-80gb-pcie");
  CHECK(presets.config(presets.points[1]).hardware.preset == "h100-sxm");
  // Coming after the points, such an entry may not hold another swept key: it would override it.
  write_file(dir / "q.yaml",
             sweep_text("  - grid:\n      hardware: [a100-80gb-pcie, h100-sxm]\n      "
                        "hardware.transfer.source: [aaa, bbb]\n",
                        "set:\n  - hardware.transfer={\"source\":\"zzz\",\"page_bytes\":[2048],"
                        "\"gather_gbps\":[7],\"per_page_copy_gbps\":[1]}\n"));
  CHECK_THROWS_WITH(spin::sim::load_sweep(dir / "q.yaml"),
                    Catch::Contains("would override every point's hardware.transfer.source"));
  // A --set comes after the points' values: of a swept key, or a section holding one, it would
  // replace them while results.csv names them.
  for (const std::string set : {"cache.buffer_ratio=3", "cache=null", "hardware=h100-sxm"}) {
    INFO(set);
    CHECK_THROWS_WITH(
        spin::sim::load_sweep(dir / "s.yaml", {set}),
        Catch::StartsWith(fmt::format("--set {0}: {0} would override every point's", set)));
  }
  CHECK_NOTHROW(spin::sim::load_sweep(dir / "s.yaml", {"cache.buckets=32"}));
  // --dry-run counts what it lists.
  const auto dry = run_spin({"sweep", (dir / "s.yaml").string(), "--dry-run", "--shard", "1/2"});
  CHECK(dry.out.ends_with("\n1 of the sweep's 2 points (shard 1/2)\n"));
  CHECK(run_spin({"sweep", (dir / "s.yaml").string(), "--dry-run"}).out.ends_with("\n2 points\n"));
  const auto refused = [&](const std::string& text, const std::string& message) {
    write_file(dir / "t.yaml", text);
    CHECK_THROWS_WITH(spin::sim::load_sweep(dir / "t.yaml"), Catch::Contains(message));
  };
  // `set:` comes before them: the same key there would be ignored.
  refused(
      sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2]\n", "set: [cache.buffer_ratio=3]\n"),
      "t.yaml:2:7: cache.buffer_ratio=3 is ignored by every point's cache.buffer_ratio");
  // The same values twice, also written as different numbers, would weigh one run double.
  refused(sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2, 1.0]\n"),
          "points 0 and 2 have the same values (cache.buffer_ratio=1.0)");
  refused(sweep_text("  - grid:\n      serving.mode: [dense, dense]\n"), "points 0 and 1");
  refused(sweep_text("  - grid:\n      cache.buffer_ratio: [1]\n", "seeds: [3, 3]\n"),
          "points 0 and 1");
}

TEST_CASE("sweep: seeds draw a generated trace again", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml",
             "set: [trace.path=, trace.generator.workload.requests=1]\n"
             "axes:\n  - grid:\n      cache.buffer_ratio: [1]\nseeds: [3, 4]\n");
  const spin::sim::Sweep s = spin::sim::load_sweep(dir / "s.yaml");
  REQUIRE(s.points.size() == 2);
  CHECK(s.config(s.points[1]).seed == 4);
  CHECK(s.config(s.points[1]).trace.generator->seed == 4);
  CHECK(s.swept_keys.back() == "seed");  // one column: the generator's seed follows it
  CHECK_THROWS_WITH(spin::sim::load_sweep(dir / "s.yaml", {"trace.generator.seed=9"}),
                    Catch::Contains("would override every point's trace.generator.seed"));
  // A trace file keeps its selections: only `seed` changes.
  write_file(dir / "f.yaml",
             sweep_text("  - grid:\n      cache.buffer_ratio: [1]\n", "seeds: [3, 4]\n"));
  CHECK(spin::sim::load_sweep(dir / "f.yaml").points[1].sets() ==
        std::vector<std::string>{"cache.buffer_ratio=1", "seed=4"});
}

TEST_CASE("sweep: one folder, one writer; an error in a worker reaches the caller", "[unit][sim]") {
  spin::test::TempDir dir;
  write_file(dir / "s.yaml", sweep_text("  - grid:\n      cache.buffer_ratio: [1, 2, 3, 4]\n"));
  const spin::sim::Sweep s = spin::sim::load_sweep(dir / "s.yaml");
  spin::sim::SweepOptions options;
  CHECK_THROWS_WITH(spin::sim::run_sweep(s, "", options),
                    "--out: expected a folder, got an empty path");
  // Another process (here this one, through another descriptor) holds the folder.
  std::filesystem::create_directories(dir / "o");
  const int held = ::open((dir / "o").c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX) == 0);
  CHECK_THROWS_WITH(spin::sim::run_sweep(s, dir / "o", options),
                    Catch::Contains("is in use by another spin sweep or sweep merge"));
  ::close(held);
  // An exception in a worker thread (here from the progress callback) ends the sweep with it,
  // instead of terminating the process.
  options.jobs = 2;
  int calls = 0;
  options.progress = [&](std::size_t, std::size_t, std::size_t, std::size_t) {
    if (++calls == 3) throw spin::InputError("the progress line failed");
  };
  CHECK_THROWS_WITH(spin::sim::run_sweep(s, dir / "o", options), "the progress line failed");
  // The points that finished are kept; a rerun completes the table.
  options.progress = nullptr;
  const spin::sim::SweepStats again = spin::sim::run_sweep(s, dir / "o", options);
  CHECK(again.ran + again.skipped == 4);
  CHECK(again.skipped >= 1);
  CHECK(lines(read_file(dir / "o" / "results.csv")) == 5);
}

TEST_CASE("sweep: merge refuses shards run with other overrides, and accepts failed rows",
          "[unit][sim]") {
  spin::test::TempDir dir;
  // Point 1 fails (the weights do not fit in 20 GiB).
  write_file(dir / "s.yaml", sweep_text("  - grid:\n      hardware.hbm_gib: [80, 20]\n"));
  const auto sweep = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"sweep", (dir / "s.yaml").string(), "--out",
                                     (dir / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_spin(args).status;
  };
  REQUIRE(sweep("all", {}) == 1);
  REQUIRE(sweep("s0", {"--shard", "0/2", "--set", "serving.max_batch_tokens=4096"}) == 0);
  REQUIRE(sweep("s1", {"--shard", "1/2"}) == 1);  // its only point failed: no metric columns
  const auto merged = run_spin({"sweep", "merge", (dir / "s0").string(), (dir / "s1").string(),
                                "--out", (dir / "m").string()});
  CHECK(merged.status == 2);
  CHECK(merged.err.find("not shards of one sweep") != std::string::npos);
  CHECK(merged.err.find("--set [serving.max_batch_tokens=4096]") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "m"));
  // The failed point's row agrees with the whole sweep's, which has metric columns.
  const auto with_all = run_spin({"sweep", "merge", (dir / "all").string(), (dir / "s1").string(),
                                  "--out", (dir / "m").string()});
  CHECK(with_all.status == 0);
  CHECK(read_file(dir / "m" / "results.csv") == read_file(dir / "all" / "results.csv"));
  CHECK(run_spin({"sweep", "merge", (dir / "all").string(), "--out", ""}).status == 2);
}
