#include <fmt/format.h>
#include <fmt/ranges.h>
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/version.h"
#include "sim/cli/command.h"
#include "spin_build_config.h"
#include "tests/support.h"

using spin::test::run_spin;

TEST_CASE("cli: --help lists the commands and list families", "[unit][cli]") {
  const auto r = run_spin({"--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find("Usage: spin <command>") != std::string::npos);
  CHECK(r.out.find("gpu info") != std::string::npos);
  CHECK(r.out.find("bench gpu") != std::string::npos);
}

TEST_CASE("cli: the device commands say when the build has no CUDA", "[unit][cli]") {
  for (const char* command : {"gpu info", "bench gpu"}) {
    std::vector<std::string> args;
    std::istringstream words(command);
    for (std::string w; words >> w;) args.push_back(w);
    const auto help = run_spin([&] {
      auto a = args;
      a.push_back("--help");
      return a;
    }());
    CHECK(help.status == 0);
#if !SPIN_HAVE_CUDA
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    CHECK(r.err.find("built without CUDA") != std::string::npos);
    CHECK(help.out.find("built without CUDA") != std::string::npos);
    // The CUDA build's options are not an "unrecognised option" here: the build is the problem.
    auto with_option = args;
    with_option.push_back("--skip-transfers");
    CHECK(run_spin(with_option).err.find("built without CUDA") != std::string::npos);
#endif
  }
}

TEST_CASE("cli: every command's --help fits in 100 columns", "[unit][cli]") {
  const auto top = run_spin({"--help"});
  REQUIRE(top.status == 0);
  std::vector<std::vector<std::string>> commands;
  std::istringstream lines(top.out);
  bool in_commands = false;
  for (std::string line; std::getline(lines, line);) {
    CHECK(line.size() <= 100);
    if (line == "Commands:") {
      in_commands = true;
    } else if (line.empty()) {
      in_commands = false;
    } else if (in_commands && line.rfind("  ", 0) == 0 && line[2] != ' ') {
      // "  trace info    print ...": the name ends at the first two spaces after it.
      std::istringstream name(line.substr(2, line.find("  ", 2) - 2));
      std::vector<std::string>& words = commands.emplace_back();
      for (std::string w; name >> w;) words.push_back(w);
    }
  }
  CHECK(commands.size() >= 16);
  for (std::vector<std::string> args : commands) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    args.push_back("--help");
    const auto r = run_spin(args);
    CHECK(r.status == 0);
    CHECK(r.out.find("Usage: spin ") == 0);
    std::istringstream help(r.out);
    for (std::string line; std::getline(help, line);) {
      INFO(line);
      CHECK(line.size() <= 100);
    }
  }
}

TEST_CASE("cli: --version prints the version and the git commit", "[unit][cli]") {
  const auto r = run_spin({"--version"});
  CHECK(r.status == 0);
  CHECK(r.out.find(std::string(spin::version())) != std::string::npos);
  CHECK(r.out.find("commit") != std::string::npos);
}

TEST_CASE("cli: an unknown command is an error that points to --help", "[unit][cli]") {
  const auto r = run_spin({"frobnicate"});
  CHECK(r.status == 2);
  CHECK(r.err == "spin: error: unknown command 'frobnicate'; run spin --help for the list\n");
}

TEST_CASE("cli: a typo of a command, an option or a registered name gets a suggestion",
          "[unit][cli]") {
  const auto error_of = [](const std::vector<std::string>& args) {
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    return r.err;
  };
  CHECK(error_of({"trace", "inf"}) ==
        "spin: error: unknown command 'trace inf'; run spin --help for the list; did you mean "
        "'trace info'?\n");
  CHECK(error_of({"simm"}) ==
        "spin: error: unknown command 'simm'; run spin --help for the list; did you mean "
        "'sim'?\n");
  CHECK(error_of({"sim", "--tarce", "x"}) ==
        "spin: error: spin sim: unrecognised option '--tarce'; see spin sim --help; did you mean "
        "'--trace'?\n");
  CHECK(error_of({"sim", "--zzz"}) ==
        "spin: error: spin sim: unrecognised option '--zzz'; see spin sim --help\n");
  CHECK(error_of({"replay", "--policy", "lur"}) ==
        "spin: error: --policy lur: cache.policy: expected a registered replacement policy, one "
        "of bucketed-lru, lru, fifo, prev-step, belady (spin --list policies); did you mean "
        "'lru'?\n");
  CHECK(error_of({"sim", "--mode", "spin:shadowkvv"}) ==
        "spin: error: --mode spin:shadowkvv: serving.mode: expected spin:<algo> with <algo> one "
        "of shadowkv, retroinfer, seer, quest, token (spin --list modes); did you mean "
        "'spin:shadowkv'?\n");
  CHECK(error_of({"sim", "--mode", "dense:x"}) ==
        "spin: error: --mode dense:x: serving.mode: expected dense without an algorithm "
        "(it takes none) (spin --list modes); did you mean 'dense'?\n");
  CHECK(error_of({"sim", "--mode", "sparse"}) ==
        "spin: error: --mode sparse: serving.mode: expected one of dense, dense-offload, "
        "sparse-original:<algo>, spin:<algo>, oracle:<algo>, ideal:<algo> (spin --list modes)\n");
  CHECK(error_of({"trace", "gen", "--algorithm", "sedr", "--out", "x.spt"}) ==
        "spin: error: --algorithm sedr: generator.algorithm: expected one of shadowkv, "
        "retroinfer, seer, quest, token (spin --list trace-algorithms); did you mean 'seer'?\n");
  CHECK(error_of({"trace", "gen", "--workload", "longbench", "--out", "x.spt"}) ==
        "spin: error: --workload longbench: generator.workload.name: expected one of "
        "longbench-v2, longgenbench, fixed, list (spin --list workloads); did you mean "
        "'longbench-v2'?\n");
  // A shorthand's enum value is named as typed, not as the quoted YAML it becomes.
  CHECK(error_of({"replay", "--pool-scope", "streem"}) ==
        "spin: error: --pool-scope streem: cache.pool_scope: unknown value 'streem'; did you "
        "mean 'stream'? (expected one of stream, request-layer, request)\n");
}

TEST_CASE("cli: a command group without its command is an error that lists the group",
          "[unit][cli]") {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"trace"}, {"bench", "--threads", "2"}, {"config"}}) {
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind(
              fmt::format("spin: error: spin {}: a command is missing; choose one of:\n", args[0]),
              0) == 0);
  }
  CHECK(run_spin({"trace"}).err.find("  trace gen ") != std::string::npos);
}

TEST_CASE("cli: output that cannot be written is an error, not a quiet success", "[unit][cli]") {
  // Standard output on a full disk: every write fails.
  struct Full : std::streambuf {
    int overflow(int) override { return traits_type::eof(); }
  } full;
  std::ostringstream err;
  auto* const old_out = std::cout.rdbuf(&full);
  auto* const old_err = std::cerr.rdbuf(err.rdbuf());
  const int status = spin::cli::run_cli({"config", "show"});
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  std::cout.clear();
  CHECK(status == 2);
  CHECK(err.str() == "spin: error: cannot write the output to standard output\n");
}

TEST_CASE("cli: options that cannot go together are refused, not ignored", "[unit][cli]") {
  const std::string trace = spin::test::source_path("traces/sample.spt").string();
  const auto error = [](const std::vector<std::string>& args) {
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    return r.err;
  };
  CHECK(error({"trace", "gen", "--requests", "2", "--duration", "3", "--out", "x.spt"}) ==
        "spin: error: --requests and --duration exclude each other: --duration S generates "
        "Poisson arrivals for S seconds, --requests N generates N requests\n");
  CHECK(error({"trace", "stats", trace, "--algorithm", "seer"}) ==
        "spin: error: trace stats: --algorithm is a generator option, which applies with --gen, "
        "not to a trace FILE\n");
  CHECK(error({"sim", "--steps"}) ==
        "spin: error: spin sim: --steps is about the files written into the --out folder; give "
        "--out DIR\n");
  CHECK(error({"sim", "--timeline-layers", "2"}).find("--timeline-layers is about the files") !=
        std::string::npos);
  CHECK(error({"trace", "gen", "--workload", "list", "--set", "generator.workload.list=[0,10,2]",
               "--rate", "2", "--out", "x.spt"}) ==
        "spin: error: --rate 2: generator.workload.rate_rps: expected no rate_rps with workload "
        "list (the list gives the arrivals)\n");
  // Given at its default value, which the config cannot tell from no value: the option says.
  CHECK(error({"trace", "gen", "--workload", "list", "--set", "generator.workload.list=[0,10,2]",
               "--requests", "16", "--out", "x.spt"}) ==
        "spin: error: --requests does not apply to workload list, whose list gives every request "
        "with its arrival\n");
  CHECK(error({"sim", "--config", trace}) ==
        fmt::format("spin: error: {}: a binary file, not a YAML config file; a trace goes in "
                    "--trace or a run config's trace.path\n",
                    trace));
  CHECK(error({"trace", "gen", "--config", trace, "--out", "x.spt"}) ==
        fmt::format("spin: error: {}: a binary file, not a YAML generator config file; a trace "
                    "goes in --trace or a run config's trace.path\n",
                    trace));
  CHECK(
      error({"sweep", trace, "--dry-run"}).find(trace + ": a binary file, not a YAML sweep file") !=
      std::string::npos);
  const spin::test::TempDir dir;
  const std::filesystem::path utf16 = dir / "utf16.yaml";
  spin::test::write_file(utf16, std::string("\xff\xfes\0e\0e\0d\0:\0 \0001\0", 16));
  CHECK(error({"sim", "--config", utf16.string()}) ==
        fmt::format("spin: error: {}: a UTF-16 text file; save it as UTF-8\n", utf16.string()));
  CHECK(error({"--version", "--list"}) ==
        "spin: error: spin --version: expected no arguments after it\n");
}

TEST_CASE("cli: an unknown list family names the known ones", "[unit][cli]") {
  const auto r = run_spin({"--list", "nonsense"});
  CHECK(r.status == 2);
  CHECK(r.err.find("unknown family 'nonsense'") != std::string::npos);
  CHECK(run_spin({"--list", "model"}).err.find("(did you mean 'models'?)") != std::string::npos);
}

TEST_CASE("cli: bad numbers, paths and files are input errors, found before the work",
          "[unit][cli]") {
  const spin::test::TempDir dir;
  const auto error_of = [](const std::vector<std::string>& args) {
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    return r.err;
  };
  // A negative count would wrap to 2^32 − 1 (or 2^64 − 1).
  CHECK(error_of({"bench", "core", "--steps", "-1"}) ==
        "spin: error: spin bench core: --steps: expected a non-negative integer, got '-1'; see "
        "spin bench core --help\n");
  CHECK(error_of({"bench", "sim", "--sampling", "-2"})
            .find("--sampling: expected a "
                  "non-negative integer") != std::string::npos);
  CHECK(error_of({"sim", "--threads", "5000"}) ==
        "spin: error: spin sim: --threads: expected 1 to 1024, got 5000\n");
  CHECK(error_of({"replay", "--threads", "0"}) ==
        "spin: error: spin replay: --threads: expected 1 to 1024, got 0\n");
  CHECK(error_of({"bench", "core", "--context-tokens", "0"}) ==
        "spin: error: spin bench core: --context-tokens: expected at least 1, got 0\n");
  // Counts that would time nothing, refused before the table's header is printed.
  for (const auto& [args, message] :
       {std::pair{std::vector<std::string>{"bench", "gen", "--steps", "0"},
                  "spin bench gen: --steps: expected at least 1, got 0"},
        {{"bench", "gen", "--prompt-tokens", "0"},
         "spin bench gen: --prompt-tokens: expected at least 1, got 0"},
        {{"bench", "trace", "--selections", "0"},
         "spin bench trace: --selections: expected at least 1, got 0"},
        {{"bench", "trace", "--repeats", "0"},
         "spin bench trace: --repeats: expected at least 1, got 0"}}) {
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err == fmt::format("spin: error: {}\n", message));
  }
  // A missing positional argument shows the usage, not the hidden option's name.
  CHECK(error_of({"trace", "info"}) ==
        "spin: error: spin trace info: an argument is missing; usage: spin trace info FILE "
        "[--json] [--verify]\n");
  // A positional argument given twice, or one too many: the usage, not Boost's wording.
  CHECK(error_of({"replay", "a.spt", "--trace", "b.spt"}) ==
        "spin: error: spin replay: --trace is given twice (the positional argument is --trace "
        "too: give one); usage: spin replay [TRACE] [--config FILE] [--set KEY=VALUE]... "
        "[options]\n");
  CHECK(error_of({"trace", "info", "a.spt", "b.spt"}) ==
        "spin: error: spin trace info: too many arguments; usage: spin trace info FILE [--json] "
        "[--verify]\n");
  // An output folder that is a file: the path and why, as an input error (not an internal one).
  spin::test::write_file(dir / "file", "x");
  CHECK(error_of({"sim", "--out", (dir / "file").string()}).find("Not a directory") !=
        std::string::npos);
  CHECK(error_of({"replay", spin::test::source_path("traces/sample.spt").string(), "--out",
                  (dir / "file").string()}) ==
        fmt::format("spin: error: cannot create the output folder (--out) '{}': Not a directory\n",
                    (dir / "file").string()));
  // A config where replay takes a trace.
  CHECK(error_of({"replay", (dir / "run.yaml").string()})
            .find("a config file where a trace was expected") != std::string::npos);
  // A trace written over a directory is refused before it is generated; none is left behind.
  CHECK(error_of({"trace", "gen", "--out", dir.path().string(), "--requests", "1"}) ==
        fmt::format("spin: error: cannot write the trace to '{}': it is a directory\n",
                    dir.path().string()));
  CHECK(!std::filesystem::exists(dir.path().string() + ".partial"));
  // Import onto its own input.
  const auto jsonl = dir / "t.jsonl";
  REQUIRE(run_spin({"trace", "export", spin::test::source_path("traces/sample.spt").string(),
                    "--format", "jsonl", "--out", jsonl.string()})
              .status == 0);
  CHECK(error_of({"trace", "import", jsonl.string(), "--out", jsonl.string()})
            .find("is the input file") != std::string::npos);
  // Other outputs onto the input trace are refused before anything is written: the trace stays.
  const auto spt = dir / "t.spt";
  std::filesystem::copy_file(spin::test::source_path("traces/sample.spt"), spt);
  const std::string trace_bytes = spin::test::read_file(spt);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"trace", "export", spt.string(), "--format", "csv", "--out",
                                 spt.string()},
        {"replay", spt.string(), "--json", spt.string()},
        {"replay", spt.string(), "--decision-log", spt.string()},
        {"trace", "stats", spt.string(), "--json", spt.string()}}) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    CHECK(error_of(args).find("is the input file") != std::string::npos);
    CHECK(spin::test::read_file(spt) == trace_bytes);
  }
  // Nor may an output be a config, a CSV's metadata, or the other output.
  const auto yaml = dir / "g.yaml";
  const std::string config = "generator:\n  workload: {requests: 1, max_output_tokens: 4}\n";
  spin::test::write_file(yaml, config);
  spin::test::write_file(dir / "r.yaml",
                         "model: qwen3-14b\nhardware: h100-sxm\ntrace:\n  path: t.spt\n");
  const auto exported = dir / "e.csv";
  REQUIRE(run_spin({"trace", "export", spt.string(), "--format", "csv", "--out", exported.string()})
              .status == 0);
  // A CSV of some streams gets no metadata: imported, the others would read back as empty.
  const auto part = dir / "part.csv";
  const auto filtered = run_spin(
      {"trace", "export", spt.string(), "--format", "csv", "--out", part.string(), "--layer", "1"});
  CHECK(filtered.status == 0);
  CHECK(filtered.err.find("has no metadata file: it cannot be imported back") != std::string::npos);
  CHECK(std::filesystem::exists(part));
  CHECK_FALSE(std::filesystem::exists(part.string() + ".meta.jsonl"));
  const std::string meta = exported.string() + ".meta.jsonl";
  const std::string meta_bytes = spin::test::read_file(meta);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"trace", "gen", "--config", yaml.string(), "--out", yaml.string()},
        {"trace", "stats", "--gen", "--config", yaml.string(), "--json", yaml.string()},
        {"replay", "--config", (dir / "r.yaml").string(), "--json", (dir / "r.yaml").string()},
        {"trace", "import", exported.string(), "--out", meta}}) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    CHECK(error_of(args).find("is the input file") != std::string::npos);
  }
  CHECK(spin::test::read_file(yaml) == config);
  CHECK(spin::test::read_file(meta) == meta_bytes);
  CHECK(error_of({"replay", spt.string(), "--json", (dir / "x.json").string(), "--decision-log",
                  (dir / "." / "x.json").string()}) ==
        "spin: error: replay: --json and --decision-log name the same file; give two files\n");
  CHECK(error_of({"trace", "import", jsonl.string(), "--out", (dir / "y.spt").string(), "--meta",
                  meta}) ==
        "spin: error: trace import: --meta names a CSV's metadata file; JSON Lines carry their "
        "own\n");
  // A CSV without its metadata file says what the file is and where it goes.
  const auto lone_csv = dir / "lone.csv";
  spin::test::write_file(lone_csv, "request,layer,step,head,partition\n");
  CHECK(error_of({"trace", "import", lone_csv.string(), "--out", (dir / "l.spt").string()}) ==
        fmt::format("spin: error: trace import: {0}: a CSV trace (one row per selected partition) "
                    "takes its header and request lines from a metadata file, and {0}.meta.jsonl "
                    "does not exist; write it (traces/README.md, \"CSV\") or give its path with "
                    "--meta FILE\n",
                    lone_csv.string()));
  // A failed export leaves no output behind (the filter is checked while writing).
  const auto csv = dir / "r.csv";
  CHECK(error_of({"trace", "export", spt.string(), "--format", "csv", "--request", "999", "--out",
                  csv.string()})
            .find("no request has id 999") != std::string::npos);
  CHECK(!std::filesystem::exists(csv));
  CHECK(!std::filesystem::exists(csv.string() + ".partial"));
  // Nor does a replay that fails on a corrupted chunk leave a decision log.
  std::string corrupted = trace_bytes;
  corrupted[400000] ^= 1;  // inside a selection chunk of the last request
  spin::test::write_file(spt, corrupted);
  const auto log = dir / "decisions.txt";
  CHECK(error_of({"replay", spt.string(), "--decision-log", log.string()}).find("corrupted") !=
        std::string::npos);
  CHECK(!std::filesystem::exists(log));
  CHECK(!std::filesystem::exists(log.string() + ".partial"));
  // Writer options out of range name the option, not the library's field nor a line of the input.
  CHECK(
      error_of({"trace", "import", jsonl.string(), "--out", (dir / "z.spt").string(),
                "--zstd-level", "99"})
          .rfind(
              "spin: error: zstd compression level (--zstd-level): expected 0 (no compression) to",
              0) == 0);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"trace", "import", jsonl.string(), "--out",
                                 (dir / "z.spt").string(), "--chunk-selections", "0"},
        {"bench", "trace", "--selections", "1000", "--chunk-selections", "0"}}) {
    CHECK(error_of(args) ==
          "spin: error: selections per chunk (--chunk-selections): expected at least 1, got 0\n");
  }
  // A trace without a retrieval budget cannot size a cache.
  std::string text = spin::test::read_file(jsonl);
  const std::string budget = "\"budget_ratio\":0.0156";
  REQUIRE(text.find(budget) != std::string::npos);
  text.replace(text.find(budget), budget.size(), "\"budget_ratio\":0");
  spin::test::write_file(dir / "none.jsonl", text);
  REQUIRE(run_spin({"trace", "import", (dir / "none.jsonl").string(), "--out",
                    (dir / "none.spt").string()})
              .status == 0);
  CHECK(error_of({"replay", (dir / "none.spt").string()}).find("has no retrieval budget") !=
        std::string::npos);
}

TEST_CASE("cli: a --set wins over the shorthand option of the same key", "[unit][cli]") {
  const std::string trace = spin::test::source_path("traces/sample.spt").string();
  const auto replay = run_spin({"replay", trace, "--set", "cache.policy=fifo", "--policy", "lru"});
  CHECK(replay.status == 0);
  CHECK(replay.out.find("policy fifo,") != std::string::npos);
  const auto sim = run_spin({"sim", "--trace", trace, "--set", "serving.mode=dense", "--mode",
                             "spin:shadowkv", "--no-timeline"});
  CHECK(sim.status == 0);
  CHECK(sim.out.rfind("mode dense:", 0) == 0);
}

TEST_CASE("cli: a name given to a shorthand option is taken as typed, not as YAML", "[unit][cli]") {
  // 'spin:' would be a YAML mapping; the shorthand's value is the name 'spin:'.
  const auto sim = run_spin({"sim", "--mode", "spin:"});
  CHECK(sim.status == 2);
  CHECK(sim.err.find("--mode 'spin:': serving.mode: expected spin:<algo> with <algo> one of") !=
        std::string::npos);
  const auto gen = run_spin({"trace", "gen", "--workload", "x: \"y\"", "--out", "unused.spt"});
  CHECK(gen.status == 2);
  CHECK(gen.err.find("--workload 'x: \"y\"': generator.workload.name: expected one of") !=
        std::string::npos);
}

TEST_CASE("cli: an error in a shorthand option's value names the option as typed", "[unit][cli]") {
  // Not the `--set KEY=VALUE` it stands for, which the user never typed.
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"sim", "--mode", "bogus"}, "--mode bogus: serving.mode: expected one of dense,"},
      {{"replay", "--buffer-ratio", "-1"}, "--buffer-ratio -1: cache.buffer_ratio: -1 is out of"},
      {{"replay", "--pool-scope", "x"}, "--pool-scope x: cache.pool_scope: expected one of"},
      {{"trace", "gen", "--out", "unused.spt", "--rate", "-1"},
       "--rate -1: generator.workload.rate_rps: -1 is out of range"},
      {{"bench", "core", "--layers", "70000"},
       "--layers 70000: model.layers: 70000 is out of range; expected an integer >= 1 and <= "
       "65535"},
      {{"bench", "core", "--policies", "lru", "lur"}, "--policies lur: cache.policy: expected"},
  };
  for (const auto& [args, message] : cases) {
    CAPTURE(args);
    const auto r = run_spin(args);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("spin: error: " + message, 0) == 0);
  }
  // A later --set of the same key is named as the --set.
  const auto set = run_spin({"replay", "--policy", "lru", "--set", "cache.policy=lur"});
  CHECK(set.err.rfind("spin: error: --set cache.policy=lur: cache.policy:", 0) == 0);
}

TEST_CASE("cli: the built-in default run outside the source tree says where its trace is",
          "[unit][cli]") {
  const spin::test::TempDir dir;
  const std::filesystem::path here = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const auto sim = run_spin({"sim"});
  const auto replay = run_spin({"replay"});
  const auto missing = run_spin({"sim", "--trace", "missing.spt"});
  // A sweep without base: is refused before its first point, with its own fix.
  spin::test::write_file(dir / "s.yaml", "axes: [{grid: {cache.buffer_ratio: [1, 2]}}]\n");
  const auto sweep = run_spin({"sweep", "s.yaml", "--out", "out"});
  const auto dry = run_spin({"sweep", "s.yaml", "--dry-run"});  // reads no trace
  std::filesystem::current_path(here);
  CHECK(dry.status == 0);
  CHECK(dry.out.ends_with("\n2 points\n"));
  CHECK(sweep.status == 2);
  CHECK(sweep.err.rfind("spin: error: spin sweep: the built-in default config replays", 0) == 0);
  CHECK(
      sweep.err.ends_with("run spin in the source tree, or give the sweep a base: config or set: "
                          "[trace.path=FILE]\n"));
  CHECK(!std::filesystem::exists(dir / "out"));
  for (const auto& [r, name] : {std::pair{sim, "sim"}, {replay, "replay"}}) {
    CHECK(r.status == 2);
    CHECK(r.err.rfind(fmt::format("spin: error: spin {}: the built-in default config replays the "
                                  "bundled sample trace traces/sample.spt",
                                  name),
                      0) == 0);
  }
  // A trace the user names is reported as it is, with the key that named it.
  CHECK(missing.err ==
        fmt::format("spin: error: trace.path: no trace file {} (given by the config's trace.path "
                    "or --trace)\n",
                    (dir / "missing.spt").string()));
}

TEST_CASE("cli: sim --out used again keeps no optional output of the earlier run", "[unit][cli]") {
  const spin::test::TempDir dir;
  const std::string trace = spin::test::source_path("traces/sample.spt").string();
  const std::string out = (dir / "out").string();
  REQUIRE(run_spin({"sim", "--trace", trace, "--out", out, "--steps"}).status == 0);
  CHECK(std::filesystem::exists(dir / "out" / "steps.csv"));
  CHECK(std::filesystem::exists(dir / "out" / "timeline.json"));
  REQUIRE(run_spin({"sim", "--trace", trace, "--out", out, "--no-timeline"}).status == 0);
  CHECK(std::filesystem::exists(dir / "out" / "summary.json"));
  CHECK_FALSE(std::filesystem::exists(dir / "out" / "steps.csv"));
  CHECK_FALSE(std::filesystem::exists(dir / "out" / "timeline.json"));
}

TEST_CASE("cli: sim says why a run has no statistics", "[unit][cli]") {
  const auto r = run_spin({"sim", "--trace", spin::test::source_path("traces/sample.spt").string(),
                           "--set", "hardware.host_memory_gib=0.0001"});
  CHECK(r.status == 0);
  CHECK(r.out.find("0 of 4 requests finished (4 rejected") != std::string::npos);
  CHECK(r.out.find("\nrejected     4 requests are too large for the mode's memory even alone; "
                   "the first, request 0: its KV at 8256 tokens takes 1.26 GiB of host memory, "
                   "which holds 105 KiB (hardware.host_memory_gib)") != std::string::npos);
  CHECK(r.out.find("\nno request finished: TTFT, TPOT") != std::string::npos);
  const auto fine =
      run_spin({"sim", "--trace", spin::test::source_path("traces/sample.spt").string()});
  CHECK(fine.status == 0);
  CHECK(fine.out.find("rejected  ") == std::string::npos);
  CHECK(fine.out.find("no request finished") == std::string::npos);
  CHECK(fine.out.find("selected     no page") == std::string::npos);
  CHECK(fine.out.find("offload  ") == std::string::npos);
  CHECK(fine.out.find("sampling  ") == std::string::npos);
  CHECK(fine.out.find("\ncache        hit ratio 0.9419; PCIe 243 MB host to HBM (951 kB per "
                      "output token), 5.41 GB HBM to host\n") != std::string::npos);
  // A sampled run says that its policy figures are estimates; a dense one that it has no cache.
  const auto sampled =
      run_spin({"sim", "--trace", spin::test::source_path("traces/sample.spt").string(), "--set",
                "sim.stream_sampling=0.125"});
  CHECK(sampled.out.find("\nsampling     the policy ran on 0.125 of the layers "
                         "(sim.stream_sampling 0.125): hit ratio, PCIe bytes") !=
        std::string::npos);
  const auto dense = run_spin(
      {"sim", "--trace", spin::test::source_path("traces/sample.spt").string(), "--mode", "dense"});
  CHECK(dense.out.find("\ncache        none, all KV in HBM (hit ratio written as 0); PCIe 0 B") !=
        std::string::npos);
  // A device-to-host link too slow for the prompts' KV (1.25 GiB each) to reach host during
  // their prefill.
  const auto slow =
      run_spin({"sim", "--trace", spin::test::source_path("traces/sample.spt").string(), "--set",
                "hardware.pcie_d2h_gbps=0.5"});
  CHECK(slow.status == 0);
  CHECK(slow.out.find("\noffload      4 prompts stayed in HBM past their prefill until their "
                      "copy to host ended (up to 3.75 GiB at once)") != std::string::npos);
  // Partitions of 8K tokens on 2K prompts: each touches the static region, none is selected.
  const auto empty = run_spin(
      {"sim", "--set", "trace.path=", "--set", "trace.generator.workload.name=fixed", "--set",
       "trace.generator.workload.prompt_tokens=2048", "--set",
       "trace.generator.workload.output_tokens=4", "--set", "trace.generator.workload.requests=1",
       "--set", "trace.generator.geometry.partition_tokens=8192"});
  CHECK(empty.status == 0);
  CHECK(empty.out.find("\nselected     no page: the trace selects nothing outside the static") !=
        std::string::npos);
}

TEST_CASE("cli: running out of memory is an error of its own (status 3), not a crash",
          "[unit][cli]") {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer aborts on a failed allocation instead of throwing std::bad_alloc.
  WARN("skipped under AddressSanitizer");
#else
  // The sample trace with a prompt of 10^9 tokens: one (request, layer) pool's cache alone would
  // take about 1.3 GB, more than the child below may map.
  const spin::test::TempDir dir;
  const auto jsonl = dir / "t.jsonl";
  REQUIRE(run_spin({"trace", "export", spin::test::source_path("traces/sample.spt").string(),
                    "--format", "jsonl", "--out", jsonl.string()})
              .status == 0);
  std::string text = spin::test::read_file(jsonl);
  const std::string prompt = "\"prompt_tokens\":8192";
  const auto at = text.find(prompt);
  REQUIRE(at != std::string::npos);
  text.replace(at, prompt.size(), "\"prompt_tokens\":1000000000");
  spin::test::write_file(jsonl, text);
  const auto spt = dir / "huge.spt";
  REQUIRE(run_spin({"trace", "import", jsonl.string(), "--out", spt.string()}).status == 0);
  // Replayed in a child whose address space may grow by 512 MiB only.
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t limit = static_cast<rlim_t>(pages) * sysconf(_SC_PAGESIZE) + (rlim_t{512} << 20);
    const rlimit rl{limit, limit};
    setrlimit(RLIMIT_AS, &rl);
    const auto r = run_spin({"replay", spt.string(), "--threads", "1"});
    _exit(r.status == 3 && r.err.rfind("spin: error: out of memory:", 0) == 0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
#endif
}
