#include "sim/cli/sweep_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>

#include "sim/cli/config_commands.h"
#include "sim/sweep.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

std::string duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60)
                   : fmt::format("{}m{:02}s", s / 60, s % 60);
}

int sweep_command(const Args& args) {
  po::options_description options("Options");
  options.add_options()("sweep", po::value<std::string>()->value_name("SWEEP.yaml"),
                        "the sweep file (docs/sweeps.md); also the first positional argument")(
      "out", po::value<std::string>()->value_name("DIR"),
      "output folder: results.csv, sweep.yaml and points/pNNNNNN/ (required unless --dry-run)")(
      "jobs",
      po::value<unsigned>()->default_value(std::max(1u, std::thread::hardware_concurrency())),
      "points run at once (each on one thread)")(
      "shard", po::value<std::string>()->value_name("i/N"),
      "run only the points with point % N == i (job arrays; join with spin sweep merge)")(
      "set", po::value<std::vector<std::string>>()->composing()->value_name("KEY=VALUE"),
      "override applied to every point, after the sweep's own values (repeatable; not of a swept "
      "key)")("dry-run", po::bool_switch(), "list the expanded points and exit")(
      "no-timeline", po::bool_switch(),
      "do not write each point's timeline.json (large studies: the Perfetto timelines are most of "
      "the output and ~10% of the run time)")(
      "mpi", po::bool_switch(),
      "run under mpirun: rank 0 hands points to the other ranks as they ask and writes "
      "results.csv (mpirun -n K spin sweep ... --mpi; needs a build with MPI)");
  po::positional_options_description positional;
  positional.add("sweep", 1);
  const auto vm = parse_options(
      args, "sweep",
      "SWEEP.yaml --out DIR [--jobs N] [--shard i/N] [--set KEY=VALUE]... [--no-timeline] "
      "[--dry-run]",
      "Runs `spin sim` at every point of a sweep file (a base config and axes: grids, zips,\n"
      "ranges, seeds) and collects one row per point in DIR/results.csv (the swept keys and every\n"
      "summary metric). Points run in parallel; each point's full output goes to its own folder.\n"
      "Killing the sweep at any moment and running it again finishes the missing points only:\n"
      "points whose inputs (resolved config, trace bytes, program version) are unchanged are not\n"
      "recomputed, failed points are retried. A failing point is recorded with its error and does\n"
      "not stop the sweep.",
      options, positional);
  if (!vm) return 0;
  if (!vm->count("sweep")) throw InputError("spin sweep: name a sweep file (SWEEP.yaml)");
  const std::vector<std::string> sets =
      vm->count("set") ? (*vm)["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const sim::Sweep sweep = sim::load_sweep((*vm)["sweep"].as<std::string>(), sets);
  sim::SweepOptions so;
  so.extra_sets = sets;
  so.jobs = thread_count(*vm, "jobs", "sweep");
  so.timeline = !(*vm)["no-timeline"].as<bool>();
  if (vm->count("shard")) so.shard = sim::parse_shard((*vm)["shard"].as<std::string>());
  if ((*vm)["dry-run"].as<bool>()) {
    std::size_t listed = 0;
    for (const sim::SweepPoint& p : sweep.points) {
      if (p.index % so.shard.count != so.shard.index) continue;
      std::cout << fmt::format("{:>6}  {}\n", p.index, fmt::join(p.sets(), "  "));
      ++listed;
    }
    std::cout << (so.shard.count > 1
                      ? fmt::format("{} of the sweep's {} points (shard {}/{})\n", listed,
                                    sweep.points.size(), so.shard.index, so.shard.count)
                      : fmt::format("{} point{}\n", listed, listed == 1 ? "" : "s"));
    return 0;
  }
  if (!vm->count("out")) throw InputError("spin sweep: --out DIR is required (or --dry-run)");
  // Without base:, the points read the built-in default's trace unless set otherwise: a missing
  // one would fail every point, late.
  if (!sweep.points.empty()) {
    check_built_in_trace(sweep.base.has_value(), sweep.config(sweep.points.front(), sets), "sweep",
                         "give the sweep a base: config or set: [trace.path=FILE]");
  }
  const bool tty = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  size_t first_done = SIZE_MAX;
  so.progress = [&](size_t done, size_t failed, size_t skipped, size_t total) {
    if (first_done == SIZE_MAX) first_done = done;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const size_t ran = done - first_done;
    const std::string eta =
        ran > 0 ? duration(elapsed / static_cast<double>(ran) * static_cast<double>(total - done))
                : std::string("?");
    std::cerr << fmt::format(
                     "{}sweep: {}/{} points done ({} failed, {} kept from before), {} left{}",
                     tty ? "\r" : "", done, total, failed, skipped, eta, tty ? "   " : "\n")
              << std::flush;
  };
  const bool mpi = (*vm)["mpi"].as<bool>();
  const sim::SweepStats stats = mpi ? sim::run_sweep_mpi(sweep, (*vm)["out"].as<std::string>(), so)
                                    : sim::run_sweep(sweep, (*vm)["out"].as<std::string>(), so);
  if (stats.rank != 0) return 0;  // rank 0 reports for all
  if (tty) std::cerr << "\n";
  std::cout << fmt::format(
      "{} points: {} run ({} failed), {} kept from an earlier run; results in {}/results.csv\n",
      stats.total, stats.ran, stats.failed, stats.skipped, (*vm)["out"].as<std::string>());
  return stats.failed ? 1 : 0;
}

int merge_command(const Args& args) {
  po::options_description options("Options");
  options.add_options()("shards", po::value<std::vector<std::string>>()->value_name("DIR"),
                        "shard output folders (positional)")(
      "out", po::value<std::string>()->value_name("DIR"), "the merged folder (required)");
  po::positional_options_description positional;
  positional.add("shards", -1);
  const auto vm = parse_options(
      args, "sweep merge", "DIR... --out DIR",
      "Joins the output folders of `spin sweep --shard i/N` runs of one sweep: their point\n"
      "folders are copied and their results.csv rows merged in point order. Exits with status 1\n"
      "(after merging the rest) when points of the sweep are in no shard.",
      options, positional);
  if (!vm) return 0;
  if (!vm->count("shards") || !vm->count("out"))
    throw InputError("spin sweep merge: name the shard folders and --out DIR");
  std::vector<std::filesystem::path> shards;
  for (const auto& s : (*vm)["shards"].as<std::vector<std::string>>()) shards.emplace_back(s);
  const std::string out = (*vm)["out"].as<std::string>();
  const sim::MergeStats stats = sim::merge_sweeps(shards, out);
  if (!stats.sweep_points) {
    std::cout << fmt::format(
        "merged {} folders into {}: {} points (the shards do not record the sweep's point count: "
        "written by an older spin)\n",
        shards.size(), out, stats.points);
    return 0;
  }
  std::cout << fmt::format("merged {} folders into {}: {} of {} points\n", shards.size(), out,
                           stats.points, *stats.sweep_points);
  if (stats.missing.empty()) return 0;
  constexpr std::size_t kListed = 20;
  const std::size_t listed = std::min(kListed, stats.missing.size());
  std::cerr << fmt::format(
      "spin sweep merge: {} points are in no shard: {}{} (a shard missing, or not finished: "
      "run it again, then merge again)\n",
      stats.missing.size(), fmt::join(stats.missing.begin(), stats.missing.begin() + listed, ", "),
      stats.missing.size() > listed ? ", ..." : "");
  return 1;
}

}  // namespace

void register_sweep_commands(Registry& registry) {
  registry.add(Command{"sweep", "run a simulation at every point of a sweep file into one table",
                       sweep_command});
  registry.add(Command{"sweep merge", "join the outputs of sharded sweep runs", merge_command});
}

}  // namespace spin::cli
