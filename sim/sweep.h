// Parameter sweeps (`spin sweep`; docs/sweeps.md): a sweep file's points, and running them into
// one output folder that survives being killed at any moment.
//
// Expansion: the points are the cartesian product of the axes (a grid: the cartesian product of
// its keys, first key slowest; a zip: parallel lists), times the seeds; each point is a list of
// --set overrides on the base config. Running: each point's output is written into
// points/pNNNNNN.tmp/ and renamed to points/pNNNNNN/ when complete, with point.json (status and
// the hash of its inputs: resolved config, trace bytes, program version); results.csv is rewritten
// atomically at most once a second and at the end. The output folder is locked (flock) while a
// sweep or merge writes it. A rerun removes stale .tmp folders, keeps finished points whose
// inputs are unchanged, and runs the rest (failed points are retried), so no point is lost,
// duplicated or half written.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/config/config.h"

namespace spin::sim {

struct SweepPoint {
  std::size_t index = 0;
  std::vector<std::pair<std::string, std::string>> values;  // swept key path → value as written
  std::vector<std::string> sets() const;                    // "key=value"
};

struct Sweep {
  std::filesystem::path file;
  std::optional<std::filesystem::path> base;  // empty: the built-in default config
  std::vector<std::string> set;               // applied to every point, before its own values
  std::vector<std::string> set_within_swept;  // `set:` entries inside a swept section: after them
  std::vector<std::string> swept_keys;        // in column order
  std::vector<SweepPoint> points;

  // The point's config: base, then `set`, then its values, then `set_within_swept`, then `extra`
  // (e.g. CLI --set).
  config::Config config(const SweepPoint& point, const std::vector<std::string>& extra = {}) const;
};

// Reads and expands a sweep file; InputError names file:line:column and the key for anything
// malformed, and the point for a value the config rejects.
Sweep load_sweep(const std::filesystem::path& file,
                 const std::vector<std::string>& extra_sets = {});

struct SweepShard {
  std::uint32_t index = 0, count = 1;  // runs the points with point % count == index
};
// Parses "i/N" (0 <= i < N); InputError otherwise.
SweepShard parse_shard(const std::string& text);

struct SweepOptions {
  unsigned jobs = 1;
  SweepShard shard;
  std::vector<std::string> extra_sets;
  bool timeline = true;  // write each point's timeline.json (an output, not an input: resume
                         // keeps points finished either way)
  // Called after each point, from the thread that ran it, one call at a time: (done, failed,
  // skipped, total). An exception from it ends the sweep as any error does.
  std::function<void(std::size_t, std::size_t, std::size_t, std::size_t)> progress;
};

struct SweepStats {
  std::size_t total = 0;    // points of this shard
  std::size_t skipped = 0;  // finished before, inputs unchanged
  std::size_t ran = 0;
  std::size_t failed = 0;  // of those run
  int rank = 0;            // MPI rank (run_sweep_mpi); 0 otherwise
};

// Runs the shard's points into `out` (created if missing).
SweepStats run_sweep(const Sweep& sweep, const std::filesystem::path& out,
                     const SweepOptions& options);

// Whether this spin was built with MPI (meson option `mpi`).
bool sweep_mpi_available();

// The same under mpirun: rank 0 hands points to the other ranks as they ask (dynamic load
// balancing) and writes results.csv; every rank writes the folders of the points it ran. Returns
// rank 0's totals on rank 0. Throws InputError when built without MPI.
SweepStats run_sweep_mpi(const Sweep& sweep, const std::filesystem::path& out,
                         const SweepOptions& options);

struct MergeStats {
  std::size_t points = 0;                   // rows merged (finished points, ok or failed)
  std::optional<std::size_t> sweep_points;  // from the shards' shard.json (all must have one)
  std::vector<std::size_t> missing;         // points of the sweep no shard has
};

// Joins shard folders into `out`: point folders copied, results.csv rows merged by point. The
// shards must come from the same sweep (equal sweep.yaml, and where shard.json records them, the
// same point count, --set list and base config text); a point in two shards must agree. Points no
// shard has are reported, not an error: the merged folder holds the rest. Every shard's rows are
// checked (point number, folder, agreement) before anything is written: a merge that throws leaves
// `out` unchanged. Errors name the results.csv and line at fault.
MergeStats merge_sweeps(const std::vector<std::filesystem::path>& shards,
                        const std::filesystem::path& out);

}  // namespace spin::sim
