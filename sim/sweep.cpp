#include "sim/sweep.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "common/atomic_file.h"
#include "common/config/schema.h"
#include "common/error.h"
#include "common/text.h"
#include "common/version.h"
#include "sim/sim_outputs.h"
#include "sim/simulator.h"
#include "sim/trace_source.h"
#include "spin_build_config.h"

#if SPIN_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (its C++ bindings warn under -Wextra)
#include <mpi.h>
#endif

namespace spin::sim {
namespace fs = std::filesystem;
using config::Node;

namespace {

// A value as --set takes it: a scalar's text, or a flow list.
std::string value_text(const Node& n) {
  if (n.kind == Node::Kind::kScalar) return n.quoted ? yaml_quoted(n.text) : n.text;
  if (n.kind == Node::Kind::kList) {
    std::vector<std::string> items;
    for (const Node& i : n.items) items.push_back(value_text(i));
    return fmt::format("[{}]", fmt::join(items, ", "));
  }
  throw InputError(fmt::format("{}: expected a value (a scalar or a list)", n.where()));
}

double number(const Node& n, std::string_view what) {
  if (n.kind == Node::Kind::kScalar) {
    try {
      size_t used = 0;
      const double v = std::stod(n.text, &used);
      if (used == n.text.size() && std::isfinite(v)) return v;
    } catch (const std::exception&) {
    }
  }
  throw InputError(fmt::format("{}: {} must be a number", n.where(), what));
}

// Digits after the decimal point of a number as written ("0.25" 2, "5e-3" 3, "40" 0).
int decimals(const std::string& text) {
  const std::size_t e = text.find_first_of("eE");
  const std::string mantissa = text.substr(0, e);
  const std::size_t dot = mantissa.find('.');
  int digits = dot == std::string::npos ? 0 : static_cast<int>(mantissa.size() - dot - 1);
  if (e != std::string::npos) digits -= std::atoi(text.c_str() + e + 1);
  return std::max(digits, 0);
}

std::string format_number(double v) {
  if (v == std::floor(v) && std::abs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

// The values of one axis key: a list, a range {from, to, step}, or one scalar.
std::vector<std::string> axis_values(const Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (n.kind == Node::Kind::kList) {
    for (const Node& i : n.items) out.push_back(value_text(i));
  } else if (n.kind == Node::Kind::kMapping) {
    for (const auto& e : n.entries) {
      if (e.key.text != "from" && e.key.text != "to" && e.key.text != "step")
        throw InputError(fmt::format("{}: {}: unknown range key '{}'; expected from, to, step",
                                     e.key.where(), key, e.key.text));
    }
    const Node* from = n.find("from");
    const Node* to = n.find("to");
    const Node* step = n.find("step");
    if (!from || !to)
      throw InputError(fmt::format("{}: {}: a range needs from and to", n.where(), key));
    const double a = number(*from, key + ".from"), b = number(*to, key + ".to");
    const double s = step ? number(*step, key + ".step") : 1.0;
    if (!(s > 0) || b < a)
      throw InputError(
          fmt::format("{}: {}: a range needs step > 0 and to >= from", n.where(), key));
    const auto count = static_cast<long long>(std::floor((b - a) / s + 1e-9)) + 1;
    if (count > 100000)
      throw InputError(
          fmt::format("{}: {}: a range of {} values is too long", n.where(), key, count));
    // Each value rounded to the decimals of from and step as written, so that 0.1 steps give
    // 0.3, not 0.30000000000000004.
    const int digits = std::max(decimals(from->text), step ? decimals(step->text) : 0);
    const double scale = std::pow(10.0, std::min(digits, 15));
    for (long long i = 0; i < count; ++i) {
      const double v = a + static_cast<double>(i) * s;
      out.push_back(format_number(digits > 15 ? v : std::round(v * scale) / scale));
    }
  } else {
    out.push_back(value_text(n));
  }
  if (out.empty()) throw InputError(fmt::format("{}: {}: no values", n.where(), key));
  return out;
}

using Assignment = std::vector<std::pair<std::string, std::string>>;

// The generated trace's seed, which `seeds:` sets with `seed`.
constexpr std::string_view kGeneratorSeed = "trace.generator.seed";

// The most points a sweep may have (a typo in a range should not exhaust the memory).
constexpr std::size_t kMaxPoints = 100'000;

std::vector<Assignment> expand_axis(const Node& axis) {
  if (axis.kind != Node::Kind::kMapping || axis.entries.size() != 1 ||
      (axis.entries[0].key.text != "grid" && axis.entries[0].key.text != "zip")) {
    throw InputError(
        fmt::format("{}: an axis is a mapping with one key, grid or zip", axis.where()));
  }
  const bool grid = axis.entries[0].key.text == "grid";
  const Node& body = axis.entries[0].value;
  if (body.kind != Node::Kind::kMapping || body.entries.empty())
    throw InputError(fmt::format("{}: expected a mapping of key paths to values", body.where()));
  std::vector<Assignment> out;
  if (grid) {
    out.push_back({});
    for (const auto& e : body.entries) {
      std::vector<Assignment> next;
      const std::vector<std::string> values = axis_values(e.value, e.key.text);
      if (out.size() * values.size() > kMaxPoints)
        throw InputError(
            fmt::format("{}: the sweep expands to more than {} points", e.key.where(), kMaxPoints));
      for (const Assignment& a : out) {
        for (const std::string& v : values) {
          Assignment b = a;
          b.emplace_back(e.key.text, v);
          next.push_back(std::move(b));
        }
      }
      out = std::move(next);
    }
    return out;
  }
  std::vector<std::vector<std::string>> columns;
  for (const auto& e : body.entries) {
    columns.push_back(axis_values(e.value, e.key.text));
    if (columns.back().size() != columns.front().size()) {
      throw InputError(fmt::format("{}: zip: {} has {} values but {} has {}", e.key.where(),
                                   e.key.text, columns.back().size(), body.entries[0].key.text,
                                   columns.front().size()));
    }
  }
  for (size_t i = 0; i < columns.front().size(); ++i) {
    Assignment a;
    for (size_t k = 0; k < columns.size(); ++k)
      a.emplace_back(body.entries[k].key.text, columns[k][i]);
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<std::string> parse_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(std::move(cur));
  return out;
}

// A CSV table: its records, the header first, and the line each starts on (1-based).
struct CsvTable {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::size_t> lines;
};

// Records of a CSV table (the header first) whose quoted fields may hold newlines. Each record
// must have the header's fields and end with a newline, as the sweep writes them: a file that
// ends inside one was cut short. Errors name the file and the line the record starts on.
CsvTable read_csv(const fs::path& file) {
  const std::string text = read_text_file(file);
  CsvTable table;
  std::string record;
  bool quoted = false;
  std::size_t line = 1, record_line = 1;
  for (char c : text) {
    if (c == '"') quoted = !quoted;
    if (c == '\n' && !quoted) {
      table.rows.push_back(parse_csv_line(record));
      table.lines.push_back(record_line);
      if (table.rows.back().size() != table.rows.front().size())
        throw InputError(fmt::format("{}:{}: expected {} fields, as in the header, got {}",
                                     file.string(), record_line, table.rows.front().size(),
                                     table.rows.back().size()));
      record.clear();
      record_line = line + 1;
    } else {
      record += c;
    }
    if (c == '\n') ++line;
  }
  if (!record.empty())
    throw InputError(fmt::format(
        "{}:{}: the file ends inside this record; expected a newline at its end (the file is "
        "cut short; running the shard again rewrites it)",
        file.string(), record_line));
  return table;
}

// What every point of a sweep shares beyond sweep.yaml, so that merge can tell shards of one
// sweep from shards run with other overrides or another base file: the --set list, and a hash of
// the base config's text (empty for the built-in default).
struct SweepInputs {
  std::vector<std::string> sets;
  std::string base_xxh64;
  bool operator==(const SweepInputs&) const = default;
};

SweepInputs sweep_inputs(const Sweep& sweep, const std::vector<std::string>& extra_sets) {
  SweepInputs inputs{extra_sets, ""};
  if (sweep.base) {
    const std::string text = read_text_file(*sweep.base);
    inputs.base_xxh64 = fmt::format("{:016x}", XXH64(text.data(), text.size(), 0));
  }
  return inputs;
}

std::string describe(const SweepInputs& inputs) {
  return fmt::format("--set [{}], base file {}", fmt::join(inputs.sets, " "),
                     inputs.base_xxh64.empty() ? "none" : "xxh64 " + inputs.base_xxh64);
}

// shard.json: which shard of the sweep a folder holds, the sweep's point count and, where known,
// its inputs (for merge).
void write_shard_record(const fs::path& dir, const SweepShard& shard, std::size_t sweep_points,
                        const std::optional<SweepInputs>& inputs) {
  nlohmann::ordered_json record = {{"shard", fmt::format("{}/{}", shard.index, shard.count)},
                                   {"sweep_points", sweep_points}};
  if (inputs) {
    record["sets"] = inputs->sets;
    record["base_xxh64"] = inputs->base_xxh64;
  }
  write_file_atomically(dir / "shard.json", record.dump(2) + "\n", "the shard record");
}

// An exclusive lock on an output folder for as long as it lives, so that two sweeps (or merges)
// into one folder do not write over each other's files; the system releases it when the process
// ends, however it ends.
class FolderLock {
 public:
  explicit FolderLock(const fs::path& dir) {
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0)
      throw InputError(fmt::format("cannot open the output folder '{}': {}", dir.string(),
                                   std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(fd_);
      throw InputError(error == EWOULDBLOCK
                           ? fmt::format("the output folder '{}' is in use by another spin sweep "
                                         "or sweep merge; wait for it to end, or write elsewhere",
                                         dir.string())
                           : fmt::format("cannot lock the output folder '{}': {}", dir.string(),
                                         std::strerror(error)));
    }
  }
  ~FolderLock() { ::close(fd_); }
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

// An output folder named by --out: not the empty path (which would write into the current one).
void check_output_folder(const fs::path& out) {
  if (out.empty()) throw InputError("--out: expected a folder, got an empty path");
}

void flatten(const nlohmann::ordered_json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) {
      flatten(value, name, out);
    } else if (value.is_string()) {
      out.emplace_back(name, value.get<std::string>());
    } else if (!value.is_array()) {
      out.emplace_back(name, value.dump());
    }
  }
}

// A value as the user meant it, without the quotes (and escapes, yaml_quoted) that keep a
// string a string for --set.
std::string display(const std::string& v) {
  if (v.size() < 2 || v.front() != '"' || v.back() != '"') return v;
  std::string text;
  for (std::size_t i = 1; i + 1 < v.size(); ++i) {
    if (v[i] == '\\' && i + 2 < v.size()) ++i;
    text += v[i];
  }
  return text;
}

std::string point_name(size_t index) { return fmt::format("p{:06}", index); }
// A point's folder as results.csv names it, relative to the sweep's folder.
std::string point_folder(size_t index) { return "points/" + point_name(index); }

// Removes the point folders of `dir`/points (pNNNNNN) whose point `keep` rejects: those of
// another sweep or shard run into the same folder before, which results.csv does not list.
void remove_points_except(const fs::path& dir, const std::function<bool(size_t)>& keep) {
  for (const auto& entry : fs::directory_iterator(dir / "points")) {
    const std::string name = entry.path().filename().string();
    size_t index = 0;
    const auto digits = name.size() > 1 ? std::string_view(name).substr(1) : std::string_view{};
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    const bool point = name.size() == 7 && name[0] == 'p' && ec == std::errc{} &&
                       end == digits.data() + digits.size();
    if (point && !keep(index)) fs::remove_all(entry.path());
  }
}

// The columns every results.csv starts with, before the swept keys and the metrics.
constexpr std::array<std::string_view, 4> kPointColumns = {"point", "status", "error", "folder"};

struct Row {
  bool ok = false;
  std::string error;
  std::vector<std::pair<std::string, std::string>> metrics;
};

class Runner {
 public:
  Runner(const Sweep& sweep, const fs::path& out, const SweepOptions& options)
      : sweep_(sweep), out_(out), options_(options) {}

  // Locks the folder, removes stale .tmp folders, keeps finished points whose inputs are
  // unchanged, writes results.csv, and returns the points left to run.
  std::deque<const SweepPoint*> prepare() {
    check_output_folder(out_);
    create_output_folder(out_ / "points", "the sweep's points folder");
    lock_.emplace(out_);
    write_file_atomically(out_ / "sweep.yaml", read_text_file(sweep_.file), "the sweep file");
    write_shard_record(out_, options_.shard, sweep_.points.size(),
                       sweep_inputs(sweep_, options_.extra_sets));
    for (const auto& entry : fs::directory_iterator(out_ / "points")) {
      if (entry.path().extension() == ".tmp") fs::remove_all(entry.path());
    }
    remove_points_except(out_, [&](size_t index) {
      return index < sweep_.points.size() && index % options_.shard.count == options_.shard.index;
    });
    std::deque<const SweepPoint*> todo;
    for (const SweepPoint& p : sweep_.points) {
      if (p.index % options_.shard.count != options_.shard.index) continue;
      ++stats_.total;
      const std::string inputs = inputs_hash(p);
      inputs_[p.index] = inputs;
      if (auto row = finished_row(p, inputs)) {
        rows_[p.index] = std::move(*row);
        ++stats_.skipped;
      } else {
        todo.push_back(&p);
      }
    }
    write_results();
    report();
    return todo;
  }

  // Hash of everything a point's result depends on: its resolved config, the trace's bytes, and
  // the program.
  std::string inputs_hash(const SweepPoint& p) {
    const config::Config cfg = sweep_.config(p, options_.extra_sets);
    const std::string trace = trace_source_name(cfg.trace);
    if (!trace_hashes_.count(trace)) {
      trace_hashes_[trace] = !cfg.trace.path || fs::exists(*cfg.trace.path)
                                 ? trace_source_hash(cfg.trace)
                                 : std::string("missing");
    }
    const std::string text = fmt::format("{}\n{}\n{}\n{}", config::to_yaml(cfg),
                                         trace_hashes_[trace], version(), git_commit());
    return fmt::format("{:016x}", XXH64(text.data(), text.size(), 0));
  }

  // Runs points on `jobs` threads. An error outside a point's simulation (its folder or the table
  // cannot be written) stops every thread from taking more points and is thrown here, after the
  // points under way have ended.
  SweepStats run() {
    std::deque<const SweepPoint*> todo = prepare();
    std::mutex take;
    std::exception_ptr error;
    auto work = [&] {
      for (;;) {
        const SweepPoint* p;
        {
          std::lock_guard lock(take);
          if (todo.empty() || error) return;
          p = todo.front();
          todo.pop_front();
        }
        try {
          record(p->index, run_point(*p, inputs_.at(p->index)));
        } catch (...) {
          std::lock_guard lock(take);
          if (!error) error = std::current_exception();
          return;
        }
      }
    };
    const unsigned jobs = std::max(1u, options_.jobs);
    std::vector<std::jthread> workers;
    for (unsigned j = 1; j < jobs; ++j) workers.emplace_back(work);
    work();
    workers.clear();
    if (error) std::rethrow_exception(error);
    finish();
    return stats_;
  }

  // Runs the point and writes its folder (points/pNNNNNN/, through a .tmp folder); `inputs` is
  // its inputs_hash().
  Row run_point(const SweepPoint& p, const std::string& inputs) {
    const fs::path final_dir = out_ / "points" / point_name(p.index);
    const fs::path tmp = out_ / "points" / (point_name(p.index) + ".tmp");
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nlohmann::ordered_json meta = {{"point", p.index}, {"inputs_xxh64", inputs}};
    nlohmann::ordered_json values = nlohmann::ordered_json::object();
    for (const auto& [k, v] : p.values) values[k] = display(v);
    meta["values"] = values;
    Row row;
    try {
      const config::Config cfg = sweep_.config(p, options_.extra_sets);
      const std::unique_ptr<trace::TraceSource> source = open_trace_source(cfg);
      SimOptions so;
      so.threads = 1;
      so.timeline = options_.timeline;
      const SimResult result = simulate(cfg, *source, so);
      write_sim_outputs(tmp, cfg, result);
      meta["status"] = "ok";
      row = ok_row(tmp);
    } catch (const std::exception& e) {
      meta["status"] = "failed";
      meta["error"] = e.what();
      row.error = e.what();
    }
    write_file_atomically(tmp / "point.json", meta.dump(2) + "\n", "the point record");
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    return row;
  }

  // The row of a point another process ran (MPI), read back from its folder.
  Row row_from_folder(std::size_t index) {
    const fs::path dir = out_ / "points" / point_name(index);
    const auto meta = nlohmann::ordered_json::parse(read_text_file(dir / "point.json"));
    if (meta.at("status") == "ok") return ok_row(dir);
    Row row;
    row.error = meta.value("error", std::string("failed"));
    return row;
  }

  SweepStats stats() const { return stats_; }

  // Keeps a finished point's row; results.csv is rewritten at most once a second (a rerun
  // rebuilds it from the point folders, so a kill loses none) and by finish().
  void record(std::size_t index, Row row) {
    std::lock_guard lock(mutex_);
    ++stats_.ran;
    if (!row.ok) ++stats_.failed;
    rows_[index] = std::move(row);
    const auto now = std::chrono::steady_clock::now();
    if (now - written_ >= std::chrono::seconds(1)) {
      write_results();
      written_ = now;
    }
    report();
  }

  // Writes results.csv with every row.
  void finish() {
    std::lock_guard lock(mutex_);
    write_results();
  }

 private:
  void report() {
    if (options_.progress)
      options_.progress(stats_.ran + stats_.skipped, stats_.failed, stats_.skipped, stats_.total);
  }

  std::optional<Row> finished_row(const SweepPoint& p, const std::string& inputs) {
    const fs::path dir = out_ / "points" / point_name(p.index);
    try {
      const auto meta = nlohmann::ordered_json::parse(read_text_file(dir / "point.json"));
      if (meta.at("inputs_xxh64") != inputs || meta.at("status") != "ok") return std::nullopt;
      return ok_row(dir);
    } catch (const std::exception&) {
      return std::nullopt;  // absent or unreadable: run it again
    }
  }

  static Row ok_row(const fs::path& dir) {
    Row row;
    row.ok = true;
    flatten(nlohmann::ordered_json::parse(read_text_file(dir / "summary.json")), "", row.metrics);
    return row;
  }

  void write_results() {
    std::vector<std::string> metric_names;
    std::set<std::string> seen;
    for (const auto& [index, row] : rows_) {
      for (const auto& [k, v] : row.metrics) {
        if (seen.insert(k).second) metric_names.push_back(k);
      }
    }
    std::string csv = fmt::format("{}", fmt::join(kPointColumns, ","));
    const auto add = [&csv](const std::string& field) {
      csv += ',';
      csv += csv_field(field);
    };
    for (const std::string& k : sweep_.swept_keys) add(k);
    for (const std::string& k : metric_names) add(k);
    csv += "\n";
    for (const auto& [index, row] : rows_) {
      const SweepPoint& p = sweep_.points[index];
      csv += fmt::format("{},{},{},{}", index, row.ok ? "ok" : "failed", csv_field(row.error),
                         point_folder(index));
      for (const std::string& k : sweep_.swept_keys) {
        std::string v;
        for (const auto& [pk, pv] : p.values) {
          if (pk == k) v = display(pv);
        }
        add(v);
      }
      std::map<std::string, std::string> m(row.metrics.begin(), row.metrics.end());
      for (const std::string& k : metric_names) add(m.count(k) ? m[k] : "");
      csv += "\n";
    }
    write_file_atomically(out_ / "results.csv", csv, "the results table");
  }

  const Sweep& sweep_;
  fs::path out_;
  SweepOptions options_;
  SweepStats stats_;
  std::mutex mutex_;
  std::map<size_t, Row> rows_;
  std::map<size_t, std::string> inputs_;
  std::map<std::string, std::string> trace_hashes_;
  std::chrono::steady_clock::time_point written_ = std::chrono::steady_clock::now();
  std::optional<FolderLock> lock_;
};

}  // namespace

std::vector<std::string> SweepPoint::sets() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : values) out.push_back(k + "=" + v);
  return out;
}

config::Config Sweep::config(const SweepPoint& point, const std::vector<std::string>& extra) const {
  std::vector<std::string> sets = set;
  for (std::string& s : point.sets()) sets.push_back(std::move(s));
  sets.insert(sets.end(), set_within_swept.begin(), set_within_swept.end());
  sets.insert(sets.end(), extra.begin(), extra.end());
  return base ? config::load_config(*base, sets) : config::default_config(sets);
}

Sweep load_sweep(const fs::path& file, const std::vector<std::string>& extra_sets) {
  Sweep sweep;
  sweep.file = file;
  const Node root = config::parse_yaml(config::read_yaml_file(file, "sweep file"),
                                       std::make_shared<const config::Source>(config::Source{
                                           file.string(), true, fs::absolute(file).parent_path()}));
  if (root.kind != Node::Kind::kMapping)
    throw InputError(fmt::format("{}: a sweep file is a mapping (base, command, set, axes, seeds)",
                                 root.where()));
  for (const auto& e : root.entries) {
    static const std::set<std::string> known = {"base", "command", "set", "axes", "seeds"};
    if (!known.count(e.key.text))
      throw InputError(fmt::format("{}: unknown key '{}'; expected base, command, set, axes, seeds",
                                   e.key.where(), e.key.text));
  }
  if (const Node* base = root.find("base")) {
    if (base->kind != Node::Kind::kScalar)
      throw InputError(fmt::format("{}: base: expected a config file path", base->where()));
    sweep.base = fs::absolute(file).parent_path() / base->text;
    if (!fs::is_regular_file(*sweep.base))
      throw InputError(fmt::format("{}: base: no config file {} (relative to the sweep file)",
                                   base->where(), sweep.base->string()));
  }
  if (const Node* command = root.find("command")) {
    if (command->kind != Node::Kind::kScalar || command->text != "sim")
      throw InputError(fmt::format("{}: command: only sim is supported", command->where()));
  }
  // Where the sweep file gives each override, by the start of the errors it causes
  // ("--set KEY=VALUE:"); an axis key's values by "--set KEY=".
  std::map<std::string, std::string> written_at;
  if (const Node* set = root.find("set")) {
    if (set->kind != Node::Kind::kList)
      throw InputError(fmt::format("{}: set: expected a list of KEY=VALUE", set->where()));
    for (const Node& s : set->items) {
      sweep.set.push_back(value_text(s));
      written_at.emplace("--set " + sweep.set.back() + ":", s.where());
    }
  }
  std::vector<Assignment> points{{}};
  if (const Node* axes = root.find("axes")) {
    if (axes->kind != Node::Kind::kList)
      throw InputError(fmt::format("{}: axes: expected a list of grid or zip axes", axes->where()));
    for (const Node& axis : axes->items) {
      const std::vector<Assignment> values = expand_axis(axis);
      for (const auto& e : axis.entries.front().value.entries)
        written_at.emplace("--set " + e.key.text + "=", e.key.where());
      for (const auto& [k, v] : values.front()) {
        if (std::find(sweep.swept_keys.begin(), sweep.swept_keys.end(), k) !=
            sweep.swept_keys.end())
          throw InputError(fmt::format("{}: key {} is swept by two axes", axis.where(), k));
        sweep.swept_keys.push_back(k);
      }
      std::vector<Assignment> next;
      for (const Assignment& a : points) {
        for (const Assignment& b : values) {
          Assignment c = a;
          c.insert(c.end(), b.begin(), b.end());
          next.push_back(std::move(c));
        }
      }
      points = std::move(next);
      if (points.size() > kMaxPoints)
        throw InputError(
            fmt::format("{}: the sweep expands to more than {} points", axis.where(), kMaxPoints));
    }
  }
  // The sweep's `set:` comes before the point's values: a section there is the base the axis
  // changes. An entry inside a swept section (`hardware.pcie_h2d_gbps` with `hardware` swept by
  // preset name) would be replaced by every point's section, so it comes after them instead.
  const auto within_swept = [&](const std::string& set) {
    const std::string key = set.substr(0, set.find('='));
    return std::ranges::any_of(
        sweep.swept_keys, [&](const std::string& swept) { return key.starts_with(swept + "."); });
  };
  std::erase_if(sweep.set, [&](const std::string& s) {
    if (!within_swept(s)) return false;
    sweep.set_within_swept.push_back(s);
    return true;
  });
  // A --set of a swept key, or of a section holding one, comes after the point's values and
  // would replace them while results.csv still names them; so would a `set:` entry of a swept
  // key (before them, the axis would ignore it).
  std::vector<std::string> overridden = sweep.swept_keys;  // with the generator's seed, below
  const auto refuse_overriding_swept = [&](const std::string& set, const std::string& where,
                                           bool after_points) {
    const std::string key = set.substr(0, set.find('='));
    for (const std::string& swept : overridden) {
      if (swept == key || (after_points && swept.starts_with(key + ".")))
        throw InputError(fmt::format(
            "{}: {} {} {}, which the sweep sweeps; sweep it or set it, not both", where, set,
            after_points ? "would override every point's" : "is ignored by every point's", swept));
    }
  };
  if (const Node* seeds = root.find("seeds")) {
    for (const std::string_view key : {std::string_view("seed"), kGeneratorSeed}) {
      if (std::ranges::find(sweep.swept_keys, key) != sweep.swept_keys.end())
        throw InputError(fmt::format("{}: seeds: key {} is swept by an axis too; give it once",
                                     seeds->where(), key));
    }
    const std::vector<std::string> values = axis_values(*seeds, "seeds");
    written_at.emplace("--set seed=", seeds->where());
    written_at.emplace(fmt::format("--set {}=", kGeneratorSeed), seeds->where());
    sweep.swept_keys.push_back("seed");
    if (points.size() * values.size() > kMaxPoints)
      throw InputError(
          fmt::format("{}: the sweep expands to more than {} points", seeds->where(), kMaxPoints));
    overridden.push_back("seed");
    overridden.emplace_back(kGeneratorSeed);
    std::vector<Assignment> next;
    for (const Assignment& a : points) {
      // A generated trace is drawn again with each seed, so that the seeds are replicates of the
      // workload too, not only of the simulation's own choices. (A point whose config is invalid
      // is reported below.)
      bool generated = false;
      try {
        generated = sweep.config(SweepPoint{0, a}, extra_sets).trace.generator.has_value();
      } catch (const InputError&) {
      }
      for (const std::string& s : values) {
        Assignment c = a;
        c.emplace_back("seed", s);
        if (generated) c.emplace_back(kGeneratorSeed, s);
        next.push_back(std::move(c));
      }
    }
    points = std::move(next);
  }
  // Entries moved after the points' values override like a --set.
  for (const Node& s : root.find("set") ? root.find("set")->items : std::vector<Node>{}) {
    const std::string text = value_text(s);
    refuse_overriding_swept(
        text, s.where(),
        std::ranges::find(sweep.set_within_swept, text) != sweep.set_within_swept.end());
  }
  for (const std::string& s : extra_sets) refuse_overriding_swept(s, "--set " + s, true);
  // Two points of the same values (a value given twice, also as 1 and 1.0) would run one
  // configuration twice and weigh it double in every mean.
  std::map<std::string, std::size_t> seen;
  for (size_t i = 0; i < points.size(); ++i) {
    std::string canonical;
    for (const auto& [k, v] : points[i]) {
      double number = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), number);
      canonical +=
          k + "=" +
          (ec == std::errc{} && end == v.data() + v.size() ? fmt::format("{}", number) : v) + "\n";
    }
    if (const auto [at, fresh] = seen.emplace(canonical, i); !fresh)
      throw InputError(fmt::format(
          "{}: points {} and {} have the same values ({}); give each "
          "value once",
          file.string(), at->second, i, fmt::join(SweepPoint{i, points[i]}.sets(), ", ")));
  }
  for (size_t i = 0; i < points.size(); ++i) {
    SweepPoint p{i, std::move(points[i])};
    try {
      sweep.config(p, extra_sets);
    } catch (const InputError& e) {
      // The place in the sweep file of the override at fault, else the file.
      const std::string_view what = e.what();
      std::string where = file.string();
      for (const auto& [start, at] : written_at) {
        if (what.starts_with(start)) where = at;
      }
      throw InputError(
          fmt::format("{}: point {} ({}): {}", where, i, fmt::join(p.sets(), ", "), e.what()));
    }
    sweep.points.push_back(std::move(p));
  }
  return sweep;
}

SweepShard parse_shard(const std::string& text) {
  unsigned i = 0, n = 0;
  char slash = 0;
  std::istringstream in(text);
  in >> std::noskipws;  // " 1/2" is not a shard
  if (!(in >> i >> slash >> n) || slash != '/' || !in.eof() || n == 0 || i >= n)
    throw InputError(fmt::format("--shard {}: expected i/N with 0 <= i < N, e.g. 0/4", text));
  return {i, n};
}

SweepStats run_sweep(const Sweep& sweep, const fs::path& out, const SweepOptions& options) {
  return Runner(sweep, out, options).run();
}

bool sweep_mpi_available() { return SPIN_HAVE_MPI; }

#if SPIN_HAVE_MPI
// Rank 0 hands out points one at a time to whichever rank asks (dynamic load balancing) and
// writes results.csv from the folders the ranks wrote; the others run points. Messages are one
// int64: a worker sends the point it finished (-1 at first), rank 0 answers with the next point
// (-1: stop).
SweepStats run_sweep_mpi(const Sweep& sweep, const fs::path& out, const SweepOptions& options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(nullptr, nullptr);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Runner runner(sweep, out, options);
  SweepStats stats;
  constexpr int kReport = 1, kAssign = 2;
  if (size == 1) {
    stats = runner.run();
  } else if (rank == 0) {
    std::deque<const SweepPoint*> todo = runner.prepare();
    int active = size - 1;
    while (active > 0) {
      long long finished = -1;
      MPI_Status status;
      MPI_Recv(&finished, 1, MPI_LONG_LONG, MPI_ANY_SOURCE, kReport, MPI_COMM_WORLD, &status);
      if (finished >= 0)
        runner.record(static_cast<size_t>(finished),
                      runner.row_from_folder(static_cast<size_t>(finished)));
      long long next = -1;
      if (!todo.empty()) {
        next = static_cast<long long>(todo.front()->index);
        todo.pop_front();
      } else {
        --active;
      }
      MPI_Send(&next, 1, MPI_LONG_LONG, status.MPI_SOURCE, kAssign, MPI_COMM_WORLD);
    }
    runner.finish();
    stats = runner.stats();
  } else {
    long long finished = -1;
    for (;;) {
      MPI_Send(&finished, 1, MPI_LONG_LONG, 0, kReport, MPI_COMM_WORLD);
      long long next = -1;
      MPI_Recv(&next, 1, MPI_LONG_LONG, 0, kAssign, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (next < 0) break;
      const SweepPoint& p = sweep.points.at(static_cast<size_t>(next));
      runner.run_point(p, runner.inputs_hash(p));
      ++stats.ran;
      finished = next;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Finalize();
  stats.rank = rank;
  return stats;
}
#else
SweepStats run_sweep_mpi(const Sweep&, const fs::path&, const SweepOptions&) {
  throw InputError("--mpi: this spin was built without MPI (install libopenmpi-dev and rebuild)");
}
#endif

namespace {

// A point's row in a shard's results.csv, and where it was read.
struct ShardRow {
  std::vector<std::string> fields;
  fs::path shard;
  std::string where;  // "FILE:LINE"
};

// The point number of a results.csv row: a whole number below `points` where the sweep's point
// count is known. Errors name the row (`where`, "FILE:LINE").
std::size_t row_point(const std::string& field, const std::string& where,
                      std::optional<std::size_t> points) {
  std::size_t point = 0;
  const char* end = field.data() + field.size();
  const auto [stop, ec] = std::from_chars(field.data(), end, point);
  if (field.empty() || ec != std::errc{} || stop != end)
    throw InputError(
        fmt::format("{}: point '{}': expected a point number (0, 1, 2, ...)", where, field));
  if (points && point >= *points)
    throw InputError(fmt::format("{}: point {}: the sweep has {} points (0 to {})", where, point,
                                 *points, *points - 1));
  return point;
}

}  // namespace

MergeStats merge_sweeps(const std::vector<fs::path>& shards, const fs::path& out) {
  if (shards.empty()) throw InputError("sweep merge: name at least one shard folder");
  check_output_folder(out);
  std::optional<SweepInputs> inputs;  // from the first shard.json that records them
  fs::path inputs_file;
  std::vector<std::string> header;
  fs::path header_file;  // the results.csv that gave `header`
  fs::path points_file;  // the shard.json that gave stats.sweep_points
  std::map<std::size_t, ShardRow> rows;
  std::string sweep_text;
  MergeStats stats;
  bool all_recorded = true;
  // Every shard is read and checked before anything is written: a merge that fails leaves `out`
  // as it was.
  for (const fs::path& shard : shards) {
    // shard.json: the sweep's point count (outputs of older versions have none).
    const fs::path record_file = shard / "shard.json";
    std::optional<std::size_t> shard_points;
    if (fs::exists(record_file)) {
      const auto record = nlohmann::json::parse(read_text_file(record_file), nullptr,
                                                /*allow_exceptions=*/false);
      if (!record.is_object() || !record.contains("sweep_points") ||
          !record["sweep_points"].is_number_unsigned())
        throw InputError(fmt::format("{}: expected an object with \"sweep_points\", a count",
                                     record_file.string()));
      shard_points = record["sweep_points"].get<std::size_t>();
      if (stats.sweep_points && *stats.sweep_points != *shard_points)
        throw InputError(fmt::format(
            "{}: the sweep has {} points here, {} in {}: not shards of "
            "one sweep",
            record_file.string(), *shard_points, *stats.sweep_points, points_file.string()));
      stats.sweep_points = shard_points;
      points_file = record_file;
      // The overrides and base file (records of older versions have none).
      if (record.contains("sets") && record.contains("base_xxh64")) {
        const SweepInputs these{record["sets"].get<std::vector<std::string>>(),
                                record["base_xxh64"].get<std::string>()};
        if (inputs && these != *inputs)
          throw InputError(fmt::format("{}: run with {}; {}: with {}: not shards of one sweep",
                                       record_file.string(), describe(these), inputs_file.string(),
                                       describe(*inputs)));
        inputs = these;
        inputs_file = record_file;
      }
    } else {
      all_recorded = false;
    }
    const fs::path results = shard / "results.csv";
    const CsvTable table = read_csv(results);
    if (table.rows.empty())
      throw InputError(fmt::format("{}: results.csv is empty", shard.string()));
    const std::string text = read_text_file(shard / "sweep.yaml");
    if (sweep_text.empty()) sweep_text = text;
    if (text != sweep_text)
      throw InputError(fmt::format("{}: sweep.yaml differs from {}'s: not shards of one sweep",
                                   shard.string(), shards.front().string()));
    const auto& h = table.rows.front();
    if (h.size() < kPointColumns.size() ||
        !std::equal(kPointColumns.begin(), kPointColumns.end(), h.begin()))
      throw InputError(fmt::format("{}:1: expected the columns {} first, as spin sweep writes them",
                                   results.string(), fmt::join(kPointColumns, ", ")));
    // Headers agree on the common prefix; a shard without finished points has no metric columns.
    const auto& shorter = h.size() < header.size() ? h : header;
    if (!std::equal(shorter.begin(), shorter.end(),
                    (h.size() < header.size() ? header : h).begin()))
      throw InputError(
          fmt::format("{}: columns differ from {}'s", results.string(), header_file.string()));
    if (h.size() > header.size()) {
      header = h;
      header_file = results;
    }
    for (size_t r = 1; r < table.rows.size(); ++r) {
      ShardRow row{table.rows[r], shard, fmt::format("{}:{}", results.string(), table.lines[r])};
      const std::size_t point = row_point(row.fields[0], row.where, shard_points);
      const std::string folder = point_folder(point);
      if (row.fields[3] != folder)
        throw InputError(fmt::format("{}: folder '{}': expected {} for point {}", row.where,
                                     row.fields[3], folder, point));
      if (!fs::is_directory(shard / folder))
        throw InputError(
            fmt::format("{}: point {}'s folder {} is missing (the shard is "
                        "incomplete: running it again restores it)",
                        row.where, point, (shard / folder).string()));
      const auto [at, fresh] = rows.try_emplace(point, row);
      // A shard of failed points only has no metric columns: its rows are the others' without
      // their empty metric fields.
      const auto padded = [](std::vector<std::string> f, std::size_t size) {
        f.resize(std::max(f.size(), size));
        return f;
      };
      const std::size_t width = std::max(at->second.fields.size(), row.fields.size());
      if (!fresh && padded(at->second.fields, width) != padded(row.fields, width))
        throw InputError(fmt::format("{}: point {} differs from its row at {}", row.where, point,
                                     at->second.where));
    }
  }
  // Then the point folders (each through a .tmp folder renamed when complete, as the sweep writes
  // them; a folder merged before is kept where its point.json is the shard's), then the tables.
  // Folders of points the merge does not hold (another sweep's, merged there before) go.
  create_output_folder(out / "points", "the merged sweep's points folder");
  const FolderLock lock(out);
  remove_points_except(out, [&](size_t index) { return rows.count(index) > 0; });
  for (const auto& [point, row] : rows) {
    const fs::path to = out / row.fields[3];
    const auto record = [](const fs::path& folder) {
      return fs::exists(folder / "point.json") ? read_text_file(folder / "point.json") : "";
    };
    if (fs::exists(to) && record(to) == record(row.shard / row.fields[3])) continue;
    fs::remove_all(to);
    fs::path partial = to;
    partial += ".tmp";
    fs::remove_all(partial);
    fs::copy(row.shard / row.fields[3], partial, fs::copy_options::recursive);
    fs::rename(partial, to);
  }
  std::string csv;
  const auto line = [&](const std::vector<std::string>& fields) {
    std::vector<std::string> f(header.size());
    for (size_t i = 0; i < fields.size() && i < f.size(); ++i) f[i] = csv_field(fields[i]);
    csv += fmt::format("{}\n", fmt::join(f, ","));
  };
  line(header);
  for (const auto& [point, row] : rows) line(row.fields);
  write_file_atomically(out / "sweep.yaml", sweep_text, "the sweep file");
  write_file_atomically(out / "results.csv", csv, "the results table");
  stats.points = rows.size();
  if (!all_recorded) stats.sweep_points.reset();
  if (stats.sweep_points) {
    for (std::size_t p = 0; p < *stats.sweep_points; ++p)
      if (!rows.count(p)) stats.missing.push_back(p);
    write_shard_record(out, SweepShard{}, *stats.sweep_points, inputs);
  } else {
    std::error_code ignored;
    fs::remove(out / "shard.json", ignored);  // a record of an earlier merge there
  }
  return stats;
}

}  // namespace spin::sim
