#include "common/trace/interchange.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <ranges>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/policy/partition.h"

namespace spin::trace {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr int kInterchangeMajor = 1;
constexpr int kInterchangeMinor = 0;

// Output is collected in a string and written in large pieces.
class Out {
 public:
  explicit Out(std::ostream& out) : out_(out) {}
  ~Out() { flush(); }
  template <typename... T>
  void print(fmt::format_string<T...> f, T&&... args) {
    fmt::format_to(std::back_inserter(buf_), f, std::forward<T>(args)...);
    if (buf_.size() > (1 << 20)) flush();
  }
  void line(const ordered_json& j) {
    buf_ += j.dump();
    buf_ += '\n';
  }
  void flush() {
    out_.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    buf_.clear();
  }

 private:
  std::ostream& out_;
  std::string buf_;
};

// ---------------------------------------------------------------------------------------------
// JSON records with located errors

// The fields of one JSON object; errors name `where` ("in.jsonl:3: request line") and the key.
class Fields {
 public:
  Fields(const json& obj, std::string where, std::string prefix = "")
      : obj_(obj), where_(std::move(where)), prefix_(std::move(prefix)) {
    if (!obj_.is_object()) fail(fmt::format("expected a JSON object, got {}", obj_.type_name()));
  }
  [[noreturn]] void fail(std::string_view what) const {
    throw InputError(fmt::format("{}: {}", where_, what));
  }
  const json& get(const char* key) const {
    const auto it = obj_.find(key);
    if (it == obj_.end()) fail(fmt::format("field '{}{}' is missing", prefix_, key));
    return *it;
  }
  bool has(const char* key) const { return obj_.contains(key); }
  uint64_t u64(const char* key) const { return unsigned_value(get(key), name(key), UINT64_MAX); }
  uint32_t u32(const char* key) const {
    return static_cast<uint32_t>(unsigned_value(get(key), name(key), UINT32_MAX));
  }
  double number(const char* key) const {
    const json& v = get(key);
    if (!v.is_number())
      fail(fmt::format("field '{}' must be a number, got {}", name(key), v.dump()));
    return v.get<double>();
  }
  std::string str(const char* key) const {
    const json& v = get(key);
    if (!v.is_string())
      fail(fmt::format("field '{}' must be a string, got {}", name(key), v.dump()));
    return v.get<std::string>();
  }
  const json& array(const char* key) const {
    const json& v = get(key);
    if (!v.is_array())
      fail(fmt::format("field '{}' must be an array, got {}", name(key), v.type_name()));
    return v;
  }
  // An array of unsigned 32-bit integers, appended to `out`.
  void u32_list(const json& v, const std::string& what, std::vector<uint32_t>& out) const {
    if (!v.is_array())
      fail(fmt::format("field '{}' must be an array, got {}", what, v.type_name()));
    for (size_t i = 0; i < v.size(); ++i) {
      out.push_back(
          static_cast<uint32_t>(unsigned_value(v[i], fmt::format("{}[{}]", what, i), UINT32_MAX)));
    }
  }
  std::vector<uint32_t> u32_list(const char* key) const {
    std::vector<uint32_t> out;
    u32_list(get(key), name(key), out);
    return out;
  }
  Fields object(const char* key) const { return Fields(get(key), where_, name(key) + "."); }
  // Fails on a field not in `known` (a misspelt optional field would otherwise be dropped).
  void only(std::span<const std::string_view> known) const {
    for (const auto& [key, value] : obj_.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        fail(fmt::format("unknown field '{}{}' (expected {})", prefix_, key,
                         fmt::join(known, ", ")));
      }
    }
  }
  const std::string& where() const { return where_; }

 private:
  std::string name(const char* key) const { return prefix_ + key; }
  uint64_t unsigned_value(const json& v, const std::string& what, uint64_t max) const {
    if (!v.is_number_unsigned() || v.get<uint64_t>() > max) {
      fail(fmt::format("field '{}' must be an unsigned integer{}, got {}", what,
                       max == UINT64_MAX ? "" : " < 2^32", v.dump()));
    }
    return v.get<uint64_t>();
  }
  const json& obj_;
  std::string where_;
  std::string prefix_;
};

const char* kind_name(PartitionKind k) { return k == PartitionKind::kFixed ? "fixed" : "variable"; }

// The fields a line of each type may have (traces/README.md, "JSON Lines"); a request line of a
// CSV's metadata file also has csv_rows.
std::span<const std::string_view> line_fields(std::string_view type, bool csv_metadata = false) {
  static constexpr std::string_view kHeader[] = {"type",       "format", "version", "model",
                                                 "algorithms", "source", "seed"};
  static constexpr std::string_view kRequest[] = {
      "type",          "id",           "arrival_us", "prompt_tokens",
      "output_tokens", "decode_steps", "algorithm",  "csv_rows"};  // csv_rows last
  static constexpr std::string_view kPartitionMap[] = {"type", "request", "layer", "head",
                                                       "cluster_tokens"};
  static constexpr std::string_view kMapGrowth[] = {"type", "request", "layer",
                                                    "head", "step",    "cluster_tokens"};
  static constexpr std::string_view kStep[] = {"type", "request", "layer", "step", "selections"};
  if (type == "header") return kHeader;
  if (type == "request")
    return std::span(kRequest).first(std::size(kRequest) - (csv_metadata ? 0 : 1));
  if (type == "partition_map") return kPartitionMap;
  if (type == "map_growth") return kMapGrowth;
  return kStep;
}

TraceHeader header_from_json(const Fields& f) {
  const std::string format = f.str("format");
  if (format != "spin-trace")
    f.fail(fmt::format("field 'format' must be \"spin-trace\", got \"{}\"", format));
  const std::string version = f.str("version");
  int major = -1;
  std::from_chars(version.data(), version.data() + version.size(), major);
  if (major != kInterchangeMajor) {
    f.fail(fmt::format("unsupported interchange version \"{}\": this spin reads {}.x", version,
                       kInterchangeMajor));
  }
  f.only(line_fields("header"));
  TraceHeader h;
  const Fields m = f.object("model");
  static constexpr std::string_view kModelFields[] = {"name",     "layers",   "query_heads",
                                                      "kv_heads", "head_dim", "dtype_bytes"};
  m.only(kModelFields);
  h.model = {m.str("name"),     m.u32("layers"),   m.u32("query_heads"),
             m.u32("kv_heads"), m.u32("head_dim"), m.u32("dtype_bytes")};
  const json& algorithms = f.array("algorithms");
  for (size_t i = 0; i < algorithms.size(); ++i) {
    const Fields a(algorithms[i], f.where(), fmt::format("algorithms[{}].", i));
    static constexpr std::string_view kAlgorithmFields[] = {
        "name",        "partition",           "partition_tokens",
        "page_tokens", "budget_ratio",        "budget_tokens",
        "sink_tokens", "local_window_tokens", "reindex_interval_tokens"};
    a.only(kAlgorithmFields);
    AlgorithmInfo info;
    info.name = a.str("name");
    const std::string kind = a.str("partition");
    if (kind != "fixed" && kind != "variable") {
      a.fail(
          fmt::format("field 'algorithms[{}].partition' must be \"fixed\" or \"variable\", got "
                      "\"{}\"",
                      i, kind));
    }
    info.partition_kind = kind == "fixed" ? PartitionKind::kFixed : PartitionKind::kVariable;
    info.partition_tokens = a.u32("partition_tokens");
    info.page_tokens = a.u32("page_tokens");
    info.budget_ratio = a.number("budget_ratio");
    info.budget_tokens = a.u32("budget_tokens");
    info.sink_tokens = a.u32("sink_tokens");
    info.local_window_tokens = a.u32("local_window_tokens");
    info.reindex_interval_tokens = a.u32("reindex_interval_tokens");
    h.algorithms.push_back(std::move(info));
  }
  h.source = f.str("source");
  h.seed = f.u64("seed");
  try {
    validate_header(h);
  } catch (const InputError& e) {
    f.fail(e.what());
  }
  return h;
}

ordered_json request_to_json(const TraceHeader& h, const RequestInfo& r) {
  return {{"type", "request"},
          {"id", r.id},
          {"arrival_us", r.arrival_us},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens", r.output_tokens},
          {"decode_steps", r.decode_steps},
          {"algorithm", h.algorithms[r.algorithm].name}};
}

RequestInfo request_from_json(const TraceHeader& h, const Fields& f, bool csv_metadata) {
  f.only(line_fields("request", csv_metadata));
  RequestInfo r;
  r.id = f.u64("id");
  r.arrival_us = f.u64("arrival_us");
  r.prompt_tokens = f.u32("prompt_tokens");
  r.output_tokens = f.u32("output_tokens");
  r.decode_steps = f.u32("decode_steps");
  const std::string algo = f.str("algorithm");
  std::string known;
  for (size_t i = 0; i < h.algorithms.size(); ++i) {
    if (h.algorithms[i].name == algo) r.algorithm = static_cast<uint32_t>(i);
    known += fmt::format("{}{}", known.empty() ? "" : ", ", h.algorithms[i].name);
  }
  if (h.algorithms[r.algorithm].name != algo) {
    f.fail(fmt::format("algorithm \"{}\" is not in the header (known: {})", algo, known));
  }
  try {
    validate_request(h, r);
  } catch (const InputError& e) {
    f.fail(e.what());
  }
  return r;
}

ordered_json map_to_json(const char* type, uint64_t request, uint32_t layer, uint32_t head,
                         std::optional<uint32_t> step, std::vector<uint32_t> tokens) {
  ordered_json j = {{"type", type}, {"request", request}, {"layer", layer}, {"head", head}};
  if (step) j["step"] = *step;
  j["cluster_tokens"] = std::move(tokens);
  return j;
}

// ---------------------------------------------------------------------------------------------
// Walking a request's steps across layers

std::vector<LayerCursor> open_layers(const TraceReader& reader, size_t request,
                                     std::span<const uint32_t> layers,
                                     std::span<const uint32_t> heads) {
  std::vector<LayerCursor> cursors;
  for (uint32_t layer : layers) cursors.push_back(reader.open_layer(request, layer, heads));
  return cursors;
}

void advance(std::vector<LayerCursor>& cursors) {
  for (LayerCursor& c : cursors) {
    if (!c.next())
      throw InvariantError("trace export: a layer ended before the request's last step");
  }
}

std::vector<uint32_t> all_below(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// The layers or heads a filter selects, checked against the model.
std::vector<uint32_t> chosen(std::optional<uint32_t> one, uint32_t n, const char* what) {
  if (!one) return all_below(n);
  if (*one >= n) {
    throw InputError(fmt::format("{} {} out of range (the model has {} {}s)", what, *one, n, what));
  }
  return {*one};
}

// Requests that a filter keeps, as indices; an unknown request id is an error.
std::vector<size_t> chosen_requests(const TraceReader& reader, const StreamFilter& filter) {
  std::vector<size_t> out;
  for (size_t r = 0; r < reader.requests().size(); ++r) {
    if (!filter.request_id || reader.requests()[r].id == *filter.request_id) out.push_back(r);
  }
  if (filter.request_id && out.empty()) {
    throw InputError(
        fmt::format("{}: no request has id {}", reader.path().string(), *filter.request_id));
  }
  return out;
}

// csv_rows: the request line's csv_rows (the CSV's sidecar), if any.
void write_metadata(const TraceReader& reader, size_t r, Out& out, bool with_growth,
                    std::optional<uint64_t> csv_rows = std::nullopt) {
  const RequestInfo& info = reader.requests()[r];
  ordered_json request = request_to_json(reader.header(), info);
  if (csv_rows) request["csv_rows"] = *csv_rows;
  out.line(request);
  if (reader.algorithm_of(r).partition_kind != PartitionKind::kVariable) return;
  for (uint32_t layer = 0; layer < reader.header().model.layers; ++layer) {
    const LayerCursor c = reader.open_layer(r, layer);
    for (uint32_t head = 0; head < reader.header().model.kv_heads; ++head) {
      const PartitionMap& m = *c.partition_map(head);
      out.line(map_to_json("partition_map", info.id, layer, head, std::nullopt,
                           m.cluster_tokens(0, m.initial_clusters())));
      uint32_t first = m.initial_clusters();
      for (const PartitionMap::Growth& g : m.growth()) {
        if (with_growth) {
          out.line(map_to_json("map_growth", info.id, layer, head, g.step,
                               m.cluster_tokens(first, g.clusters)));
        }
        first = g.clusters;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reading text input line by line

class LineReader {
 public:
  explicit LineReader(const std::filesystem::path& path) : path_(path.string()), in_(path) {
    if (std::filesystem::is_directory(path)) {
      throw InputError(fmt::format("cannot open {}: it is a directory", path_));
    }
    if (!in_) throw InputError(fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
  }
  // The next line without its end-of-line; false at the end of the file.
  bool next(std::string& line) {
    if (!std::getline(in_, line)) return false;
    ++number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  size_t number() const { return number_; }
  std::string where() const { return fmt::format("{}:{}", path_, number_); }
  std::string where(size_t line) const { return fmt::format("{}:{}", path_, line); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ifstream in_;
  size_t number_ = 0;
};

// One line's JSON value. A key given twice in one object is an error (the JSON library would
// keep the last value silently).
json parse_json_line(const std::string& line, const std::string& where) {
  std::vector<std::vector<std::string>> open_keys;  // the keys of each open object
  std::optional<std::string> twice;
  const auto track = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_keys.pop_back();
    } else if (event == json::parse_event_t::key) {
      std::vector<std::string>& keys = open_keys.back();
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!twice && std::find(keys.begin(), keys.end(), key) != keys.end()) twice = key;
      keys.push_back(key);
    }
    return true;
  };
  json j;
  try {
    j = json::parse(line, track);
  } catch (const json::exception& e) {  // a syntax error, or a number out of a double's range
    std::string what = e.what();
    if (const size_t at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
    throw InputError(fmt::format("{}: not valid JSON: {}", where, what));
  }
  if (twice) throw InputError(fmt::format("{}: the field '{}' is given twice", where, *twice));
  return j;
}

// Runs a writer call; an InputError gets `where` in front.
template <typename F>
void located(const std::string& where, F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}: {}", where, e.what()));
  }
}

// Creates the writer from the first line, which must be the header.
void start_writer(const Fields& f, const std::filesystem::path& out, const WriterOptions& options,
                  std::optional<TraceWriter>& w) {
  if (f.str("type") != "header") {
    f.fail(
        fmt::format("the first line must be the header (\"type\": \"header\"), got \"type\": "
                    "\"{}\"",
                    f.str("type")));
  }
  const TraceHeader header = header_from_json(f);
  located(f.where(), [&] { validate_header(header); });
  w.emplace(out, header, options);  // its errors are the output's: not at this line
}

const char* const kLineTypes = "header, request, partition_map, map_growth, step";

// Rejects a line whose type is not one of `allowed` (the header is only ever the first line).
void check_type(const Fields& f, const std::string& type,
                std::initializer_list<std::string_view> allowed) {
  if (std::find(allowed.begin(), allowed.end(), type) != allowed.end()) return;
  if (type == "header") f.fail("a second header line: the header is the first line only");
  f.fail(fmt::format("unknown line type \"{}\" (known: {})", type, kLineTypes));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions

ordered_json header_to_json(const TraceHeader& h) {
  ordered_json algorithms = ordered_json::array();
  for (const AlgorithmInfo& a : h.algorithms) {
    algorithms.push_back({{"name", a.name},
                          {"partition", kind_name(a.partition_kind)},
                          {"partition_tokens", a.partition_tokens},
                          {"page_tokens", a.page_tokens},
                          {"budget_ratio", a.budget_ratio},
                          {"budget_tokens", a.budget_tokens},
                          {"sink_tokens", a.sink_tokens},
                          {"local_window_tokens", a.local_window_tokens},
                          {"reindex_interval_tokens", a.reindex_interval_tokens}});
  }
  return {{"type", "header"},
          {"format", "spin-trace"},
          {"version", fmt::format("{}.{}", kInterchangeMajor, kInterchangeMinor)},
          {"model",
           {{"name", h.model.name},
            {"layers", h.model.layers},
            {"query_heads", h.model.query_heads},
            {"kv_heads", h.model.kv_heads},
            {"head_dim", h.model.head_dim},
            {"dtype_bytes", h.model.dtype_bytes}}},
          {"algorithms", std::move(algorithms)},
          {"source", h.source},
          {"seed", h.seed}};
}

ordered_json info_to_json(const TraceReader& reader) {
  const TraceInfo i = reader.info();
  ordered_json j = header_to_json(reader.header());
  j.erase("type");
  j["file"] = reader.path().string();
  j["file_version"] =
      fmt::format("{}.{}", reader.header().version_major, reader.header().version_minor);
  j["counts"] = {{"requests", i.requests},
                 {"streams", i.streams},
                 {"request_steps", i.request_steps},
                 {"stream_steps", i.stream_steps},
                 {"selections", i.selections},
                 {"clusters", i.clusters},
                 {"selection_chunks", i.selection_chunks},
                 {"map_chunks", i.map_chunks}};
  j["bytes"] = {{"file", i.file_bytes},
                {"chunks", i.chunk_bytes},
                {"metadata", i.metadata_bytes},
                {"index", i.index_bytes},
                {"per_selection", i.bytes_per_selection()}};
  return j;
}

void export_metadata_jsonl(const TraceReader& reader, std::ostream& os,
                           std::span<const uint64_t> csv_rows) {
  if (!csv_rows.empty() && csv_rows.size() != reader.requests().size()) {
    throw InvariantError(fmt::format("export_metadata_jsonl: {} row counts for {} requests",
                                     csv_rows.size(), reader.requests().size()));
  }
  Out out(os);
  out.line(header_to_json(reader.header()));
  for (size_t r = 0; r < reader.requests().size(); ++r) {
    write_metadata(reader, r, out, true,
                   csv_rows.empty() ? std::nullopt : std::optional<uint64_t>(csv_rows[r]));
  }
}

void export_jsonl(const TraceReader& reader, std::ostream& os) {
  Out out(os);
  out.line(header_to_json(reader.header()));
  const std::vector<uint32_t> layers = all_below(reader.header().model.layers);
  for (size_t r = 0; r < reader.requests().size(); ++r) {
    const RequestInfo& info = reader.requests()[r];
    write_metadata(reader, r, out, false);
    std::vector<LayerCursor> cursors = open_layers(reader, r, layers, {});
    // Growth lines go just before the step line they take effect at.
    std::vector<size_t> next_growth(cursors.size() * reader.header().model.kv_heads, 0);
    for (uint32_t step = 0; step < info.decode_steps; ++step) {
      advance(cursors);
      for (uint32_t layer = 0; layer < cursors.size(); ++layer) {
        const LayerCursor& c = cursors[layer];
        for (uint32_t head : c.heads()) {
          const PartitionMap* m = c.partition_map(head);
          if (m == nullptr) continue;
          size_t& g = next_growth[layer * c.heads().size() + head];
          if (g < m->growth().size() && m->growth()[g].step == step) {
            const uint32_t first = g == 0 ? m->initial_clusters() : m->growth()[g - 1].clusters;
            out.line(map_to_json("map_growth", info.id, layer, head, step,
                                 m->cluster_tokens(first, m->growth()[g].clusters)));
            ++g;
          }
        }
        out.print(R"({{"type":"step","request":{},"layer":{},"step":{},"selections":[)", info.id,
                  layer, step);
        for (uint32_t head : c.heads()) {
          out.print("{}[{}]", head == 0 ? "" : ",", fmt::join(c.selection(head), ","));
        }
        out.print("]}}\n");
      }
    }
  }
}

// Calls before_request(r) for every request index the filter keeps, then
// visit(r, layer, head, step, view, selection) for each of its kept stream steps in (step, layer,
// head) order; `view` maps the stream's partitions to pages at that step (trace.h).
template <class BeforeRequest, class Visit>
void for_each_selection(const TraceReader& reader, const StreamFilter& filter,
                        BeforeRequest&& before_request, Visit&& visit) {
  const TraceHeader& h = reader.header();
  const std::vector<uint32_t> layers = chosen(filter.layer, h.model.layers, "layer");
  const std::vector<uint32_t> heads = chosen(filter.head, h.model.kv_heads, "KV head");
  for (size_t r : chosen_requests(reader, filter)) {
    const RequestInfo& info = reader.requests()[r];
    const AlgorithmInfo& algo = reader.algorithm_of(r);
    before_request(r);
    std::vector<LayerCursor> cursors = open_layers(reader, r, layers, heads);
    for (uint32_t step = 0; step < info.decode_steps; ++step) {
      advance(cursors);
      for (size_t l = 0; l < cursors.size(); ++l) {
        for (uint32_t head : heads) {
          visit(r, layers[l], head, step,
                partition_view(algo, info.prompt_tokens + step, cursors[l].partition_offsets(head)),
                cursors[l].selection(head));
        }
      }
    }
  }
}

std::vector<uint64_t> export_csv(const TraceReader& reader, const StreamFilter& filter,
                                 std::ostream& os) {
  Out out(os);
  out.print("request,layer,head,step,partition,first_page,page_count\n");
  std::vector<uint64_t> rows(reader.requests().size(), 0);
  for_each_selection(
      reader, filter, [](size_t) {},
      [&](size_t r, uint32_t layer, uint32_t head, uint32_t step,
          const policy::PartitionMapView& view, std::span<const uint32_t> selection) {
        rows[r] += selection.size();
        for (uint32_t id : selection) {
          const policy::PageRange p = policy::partition_pages(view, id);
          out.print("{},{},{},{},{},{},{}\n", reader.requests()[r].id, layer, head, step, id,
                    p.begin, p.end - p.begin);
        }
      });
  return rows;
}

uint64_t page_object_id(uint64_t request_index, uint32_t layer, uint32_t head, uint64_t page) {
  return request_index << 40 | uint64_t{layer} << 32 | uint64_t{head} << 24 | page;
}

void export_page_refs(const TraceReader& reader, const StreamFilter& filter, std::ostream& os) {
  Out out(os);
  out.print("time,obj_id,obj_size,request,layer,head,step,page\n");
  const TraceHeader& h = reader.header();
  if (reader.requests().size() > (uint64_t{1} << 23) || h.model.layers > 256 ||
      h.model.kv_heads > 256) {
    throw InputError(fmt::format(
        "{}: page-refs object ids hold at most 2^23 requests, 256 layers and 256 KV heads; the "
        "trace has {}, {} and {}",
        reader.path().string(), reader.requests().size(), h.model.layers, h.model.kv_heads));
  }
  // A logical clock: requests one after another, one tick per decode step.
  std::vector<uint64_t> base(reader.requests().size() + 1, 0);
  for (size_t r = 0; r < reader.requests().size(); ++r) {
    base[r + 1] = base[r] + reader.requests()[r].decode_steps;
  }
  uint64_t page_bytes = 0;
  for_each_selection(
      reader, filter,
      [&](size_t r) {
        const RequestInfo& info = reader.requests()[r];
        const AlgorithmInfo& algo = reader.algorithm_of(r);
        page_bytes = 2ull * algo.page_tokens * h.model.head_dim * h.model.dtype_bytes;
        const uint64_t max_pages =
            (uint64_t{info.prompt_tokens} + info.decode_steps + algo.page_tokens - 1) /
            algo.page_tokens;
        if (max_pages > (uint64_t{1} << 24)) {
          throw InputError(fmt::format(
              "{}: request id {} has up to {} pages, more than the 2^24 an object id holds",
              reader.path().string(), info.id, max_pages));
        }
      },
      [&](size_t r, uint32_t layer, uint32_t head, uint32_t step,
          const policy::PartitionMapView& view, std::span<const uint32_t> selection) {
        // The static region's pages are not cache accesses (replay counts them apart).
        const AlgorithmInfo& algo = reader.algorithm_of(r);
        const policy::StaticRegion region =
            policy::static_region({algo.sink_tokens, algo.local_window_tokens}, algo.page_tokens,
                                  reader.requests()[r].prompt_tokens + step);
        uint32_t next_page = 0;  // pages come in ascending order; each is listed once
        for (uint32_t id : selection) {
          const policy::PageRange p = policy::partition_pages(view, id);
          for (uint32_t page = std::max(p.begin, next_page); page < p.end; ++page) {
            if (policy::is_static_page(region, page)) continue;
            out.print("{},{},{},{},{},{},{},{}\n", base[r] + step,
                      page_object_id(r, layer, head, page), page_bytes, reader.requests()[r].id,
                      layer, head, step, page);
          }
          next_page = std::max(next_page, p.end);
        }
      });
}

std::filesystem::path metadata_path_for(const std::filesystem::path& csv) {
  return csv.string() + ".meta.jsonl";
}

void import_jsonl(const std::filesystem::path& in, const std::filesystem::path& out,
                  const WriterOptions& options) {
  LineReader lines(in);
  std::optional<TraceWriter> w;
  std::optional<uint64_t> open;  // id of the open request
  std::string open_where;        // the line that opened it
  std::string line;
  std::vector<uint32_t> offsets, ids;
  const auto end_open = [&](const std::string& where) {
    if (open) located(where, [&] { w->end_request(); });
    open.reset();
  };
  while (lines.next(line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const json j = parse_json_line(line, lines.where());
    const Fields probe(j, lines.where() + ": line");
    const std::string type = probe.str("type");
    const Fields f(j, fmt::format("{}: {} line", lines.where(), type));
    if (!w) {
      start_writer(f, out, options, w);
      continue;
    }
    if (type == "request") {
      end_open(fmt::format("{} (where request id {} ends)", lines.where(), open.value_or(0)));
      const RequestInfo r = request_from_json(w->header(), f, false);
      located(f.where(), [&] { w->begin_request(r); });
      open = r.id;
      continue;
    }
    check_type(f, type, {"partition_map", "map_growth", "step"});
    f.only(line_fields(type));
    const uint64_t request = f.u64("request");
    if (!open || *open != request) {
      f.fail(
          fmt::format("the line is for request id {}, but {}; the lines of a request follow "
                      "its request line",
                      request,
                      open ? fmt::format("the open request is id {}", *open)
                           : std::string("no request line came before it")));
    }
    const uint32_t layer = f.u32("layer");
    if (type == "step") {
      const uint32_t step = f.u32("step");
      const json& selections = f.array("selections");
      const uint32_t heads = w->header().model.kv_heads;
      if (selections.size() != heads) {
        f.fail(fmt::format("'selections' has {} arrays, expected one per KV head ({})",
                           selections.size(), heads));
      }
      offsets.assign(1, 0);
      ids.clear();
      for (uint32_t h = 0; h < heads; ++h) {
        f.u32_list(selections[h], fmt::format("selections[{}]", h), ids);
        offsets.push_back(static_cast<uint32_t>(ids.size()));
      }
      located(f.where(), [&] { w->add_step(layer, step, offsets, ids); });
    } else {
      const uint32_t head = f.u32("head");
      const std::vector<uint32_t> tokens = f.u32_list("cluster_tokens");
      if (type == "partition_map") {
        located(f.where(), [&] { w->set_partition_map(layer, head, tokens); });
      } else {
        const uint32_t step = f.u32("step");
        located(f.where(), [&] { w->grow_partition_map(step, layer, head, tokens); });
      }
    }
  }
  const std::string at_end =
      fmt::format("{}: at the end of the input (line {})", lines.path(), lines.number());
  if (!w) throw InputError(fmt::format("{}: no header line: the input is empty", lines.path()));
  end_open(at_end);
  located(at_end, [&] { w->finish(); });
}

namespace {

// The metadata of a CSV import: the JSONL metadata file, read whole.
struct CsvMetadata {
  struct Growth {
    uint32_t step, layer, head;
    std::vector<uint32_t> tokens;
    std::string where;
  };
  struct Request {
    RequestInfo info;
    std::string where;
    std::optional<uint64_t> csv_rows;  // the rows export wrote, if the metadata says
    std::vector<std::tuple<uint32_t, uint32_t, std::vector<uint32_t>, std::string>> maps;
    std::vector<Growth> growth;  // sorted by step
  };
  std::optional<TraceWriter> writer;
  std::vector<Request> requests;
  std::map<uint64_t, size_t> by_id;
};

void read_csv_metadata(const std::filesystem::path& path, const std::filesystem::path& out,
                       const WriterOptions& options, CsvMetadata& meta) {
  LineReader lines(path);
  std::string line;
  while (lines.next(line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const json j = parse_json_line(line, lines.where());
    const std::string type = Fields(j, lines.where() + ": line").str("type");
    const Fields f(j, fmt::format("{}: {} line", lines.where(), type));
    if (!meta.writer) {
      start_writer(f, out, options, meta.writer);
      continue;
    }
    if (type == "request") {
      const RequestInfo r = request_from_json(meta.writer->header(), f, true);
      if (!meta.by_id.emplace(r.id, meta.requests.size()).second) {
        f.fail(fmt::format("request id {} appears twice", r.id));
      }
      meta.requests.push_back({r,
                               f.where(),
                               f.has("csv_rows") ? std::optional(f.u64("csv_rows")) : std::nullopt,
                               {},
                               {}});
      continue;
    }
    if (type == "step") {
      f.fail("a metadata file has no step lines: the selections are the CSV's rows");
    }
    check_type(f, type, {"partition_map", "map_growth"});
    f.only(line_fields(type));
    const uint64_t id = f.u64("request");
    if (meta.requests.empty() || meta.requests.back().info.id != id) {
      f.fail(
          fmt::format("the line is for request id {}, which is not the request line just "
                      "before it; map lines follow their request line",
                      id));
    }
    CsvMetadata::Request& r = meta.requests.back();
    if (type == "partition_map") {
      r.maps.emplace_back(f.u32("layer"), f.u32("head"), f.u32_list("cluster_tokens"), f.where());
    } else {
      r.growth.push_back(
          {f.u32("step"), f.u32("layer"), f.u32("head"), f.u32_list("cluster_tokens"), f.where()});
    }
  }
  if (!meta.writer)
    throw InputError(fmt::format("{}: no header line: the file is empty", path.string()));
  for (CsvMetadata::Request& r : meta.requests) {
    std::stable_sort(r.growth.begin(), r.growth.end(),
                     [](const auto& a, const auto& b) { return a.step < b.step; });
  }
}

// One CSV field as an unsigned integer; errors name the line and the column.
uint64_t csv_number(std::string_view field, const std::string& where, std::string_view column) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc() || end != field.data() + field.size() || field.empty()) {
    throw InputError(fmt::format("{}: column '{}': expected an unsigned integer, got '{}'", where,
                                 column, field));
  }
  return v;
}

}  // namespace

namespace {

// Feeds CSV rows into the writer: the open request, its layers' next steps, its pending growth.
// A (layer, step) without rows selected nothing on every head, so steps skipped by the rows are
// added empty.
class CsvRequests {
 public:
  CsvRequests(CsvMetadata& meta, const LineReader& lines)
      : meta_(meta), w_(*meta.writer), lines_(lines) {}

  bool is_open(uint64_t id) const { return open_ && meta_.requests[*open_].info.id == id; }

  // Closes the open request and opens request `id`, closing every request listed before it in
  // the metadata (they have no rows).
  void switch_to(uint64_t id, const std::string& where) {
    const auto it = meta_.by_id.find(id);
    if (it == meta_.by_id.end()) {
      throw InputError(fmt::format("{}: request id {} is not in the metadata file", where, id));
    }
    if (it->second < next_request_) {
      throw InputError(fmt::format(
          "{}: rows of request id {} come after rows of a later request (rows of a request are "
          "contiguous, and requests come in the metadata file's order)",
          where, id));
    }
    close_until(it->second, where);
    open(it->second);
  }

  // Adds the selections of (layer, step); the rows began at `first_line`, id_lines[i] is the
  // line of ids[i].
  void add(uint32_t layer, uint32_t step, std::span<const uint32_t> offsets,
           std::span<const uint32_t> ids, std::span<const size_t> id_lines, size_t first_line) {
    const std::string where = lines_.where(first_line);
    if (layer >= next_step_.size()) {
      throw InputError(fmt::format("{}: layer {} out of range (the model has {} layers)", where,
                                   layer, next_step_.size()));
    }
    if (step < next_step_[layer]) {
      throw InputError(fmt::format(
          "{}: step {} of layer {} comes after step {} (rows of a layer are in ascending step "
          "order, each (layer, step) contiguous)",
          where, step, layer, next_step_[layer] - 1));
    }
    fill(layer, step, where);
    grow(layer, step);
    try {
      w_.add_step(layer, step, offsets, ids);
      rows_ += ids.size();
    } catch (const SelectionError& e) {
      throw InputError(
          fmt::format("{}: {}", lines_.where(id_lines[offsets[e.head] + e.position]), e.what()));
    } catch (const InputError& e) {
      throw InputError(fmt::format("{}: {}", where, e.what()));
    }
    next_step_[layer] = step + 1;
  }

  // Closes the open request and every remaining one.
  void close_all(const std::string& where) { close_until(meta_.requests.size(), where); }

 private:
  void open(size_t index) {
    const CsvMetadata::Request& r = meta_.requests[index];
    located(r.where, [&] { w_.begin_request(r.info); });
    for (const auto& [layer, head, tokens, where] : r.maps) {
      located(where, [&] { w_.set_partition_map(layer, head, tokens); });
    }
    open_ = index;
    next_request_ = index + 1;
    rows_ = 0;
    next_step_.assign(w_.header().model.layers, 0);
    next_growth_.assign(w_.header().model.layers, 0);
    growth_.assign(w_.header().model.layers, {});
    for (const CsvMetadata::Growth& g : r.growth) {
      if (g.layer >= growth_.size()) {
        throw InputError(fmt::format("{}: layer {} out of range (the model has {} layers)", g.where,
                                     g.layer, growth_.size()));
      }
      growth_[g.layer].push_back(&g);
    }
  }

  // Adds empty steps to `layer` up to (excluding) `step`.
  void fill(uint32_t layer, uint32_t step, const std::string& where) {
    const std::vector<uint32_t> empty(w_.header().model.kv_heads + 1, 0);
    for (uint32_t s = next_step_[layer]; s < step; ++s) {
      grow(layer, s);
      located(where, [&] { w_.add_step(layer, s, empty, {}); });
    }
    next_step_[layer] = std::max(next_step_[layer], step);
  }

  // Applies the growth of `layer` that takes effect at `step`.
  void grow(uint32_t layer, uint32_t step) {
    auto& events = growth_[layer];
    size_t& next = next_growth_[layer];
    for (; next < events.size() && events[next]->step <= step; ++next) {
      const CsvMetadata::Growth& g = *events[next];
      located(g.where, [&] { w_.grow_partition_map(g.step, g.layer, g.head, g.tokens); });
    }
  }

  void close_until(size_t until, const std::string& where) {
    while (open_ || next_request_ < until) {
      if (!open_) open(next_request_);
      const RequestInfo& info = meta_.requests[*open_].info;
      const std::string at =
          fmt::format("{} (where the rows of request id {} end)", where, info.id);
      for (uint32_t layer = 0; layer < next_step_.size(); ++layer) {
        fill(layer, std::max(info.decode_steps, next_step_[layer]), at);
        // Growth never reached by a step is past the request's last step: the writer says so.
        for (size_t& g = next_growth_[layer]; g < growth_[layer].size(); ++g) {
          const CsvMetadata::Growth& e = *growth_[layer][g];
          located(e.where, [&] { w_.grow_partition_map(e.step, e.layer, e.head, e.tokens); });
        }
      }
      const std::optional<uint64_t> expected = meta_.requests[*open_].csv_rows;
      if (expected && rows_ != *expected) {
        throw InputError(fmt::format(
            "{}: the CSV holds {} rows of request id {} where its metadata ({}, csv_rows) says "
            "export wrote {}: {}",
            at, rows_, info.id, meta_.requests[*open_].where, *expected,
            rows_ < *expected ? "the CSV was cut short, or rows were lost"
                              : "rows were added to the CSV"));
      }
      located(at, [&] { w_.end_request(); });
      open_.reset();
    }
  }

  CsvMetadata& meta_;
  TraceWriter& w_;
  const LineReader& lines_;
  std::optional<size_t> open_;
  uint64_t rows_ = 0;                // of the open request
  size_t next_request_ = 0;          // requests before it are done or open
  std::vector<uint32_t> next_step_;  // [layers]
  std::vector<std::vector<const CsvMetadata::Growth*>> growth_;  // [layers], by step
  std::vector<size_t> next_growth_;                              // [layers]
};

void split_csv(const std::string& line, std::vector<std::string_view>& out) {
  out.clear();
  for (size_t i = 0; i <= line.size();) {
    const size_t j = std::min(line.find(',', i), line.size());
    out.emplace_back(line.data() + i, j - i);
    i = j + 1;
  }
}

}  // namespace

void import_csv(const std::filesystem::path& csv, const std::filesystem::path& metadata,
                const std::filesystem::path& out, const WriterOptions& options) {
  CsvMetadata meta;
  read_csv_metadata(metadata, out, options, meta);
  const uint32_t kv_heads = meta.writer->header().model.kv_heads;
  LineReader lines(csv);
  std::string line;
  if (!lines.next(line)) {
    throw InputError(fmt::format("{}: empty file: expected a header row", csv.string()));
  }
  constexpr std::array<std::string_view, 5> kColumns = {"request", "layer", "head", "step",
                                                        "partition"};
  if (line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);  // a UTF-8 byte order mark
  std::vector<std::string_view> row;
  split_csv(line, row);
  const size_t fields = row.size();
  std::array<size_t, 5> column{};
  for (size_t c = 0; c < kColumns.size(); ++c) {
    const auto it = std::find(row.begin(), row.end(), kColumns[c]);
    if (it == row.end()) {
      throw InputError(fmt::format(
          "{}: the header row lacks column '{}' (needs request, layer, head, step, partition, "
          "named exactly, without spaces around them); it has {}",
          lines.where(), kColumns[c],
          fmt::join(row | std::views::transform(
                              [](std::string_view f) { return fmt::format("'{}'", f); }),
                    ", ")));
    }
    if (std::find(it + 1, row.end(), kColumns[c]) != row.end()) {
      throw InputError(
          fmt::format("{}: the header row has column '{}' twice", lines.where(), kColumns[c]));
    }
    column[c] = static_cast<size_t>(it - row.begin());
  }

  CsvRequests requests(meta, lines);
  // The rows of the current (request, layer, step) group.
  uint64_t group_request = 0;
  uint32_t group_layer = 0, group_step = 0;
  size_t group_line = 0;  // 0: no group
  std::vector<uint32_t> offsets, ids;
  std::vector<size_t> id_lines;
  const auto flush = [&] {
    if (group_line == 0) return;
    while (offsets.size() < size_t{kv_heads} + 1)
      offsets.push_back(static_cast<uint32_t>(ids.size()));
    requests.add(group_layer, group_step, offsets, ids, id_lines, group_line);
    group_line = 0;
  };
  while (lines.next(line)) {
    if (line.empty()) continue;
    split_csv(line, row);
    const std::string where = lines.where();
    if (row.size() != fields) {
      throw InputError(
          fmt::format("{}: {} fields, the header row has {}", where, row.size(), fields));
    }
    std::array<uint64_t, 5> v;
    for (size_t c = 0; c < kColumns.size(); ++c) {
      v[c] = csv_number(row[column[c]], where, kColumns[c]);
      if (c > 0 && v[c] > UINT32_MAX) {
        throw InputError(
            fmt::format("{}: column '{}': {} is not below 2^32", where, kColumns[c], v[c]));
      }
    }
    const auto [request, layer, head, step, partition] = v;
    if (head >= kv_heads) {
      throw InputError(fmt::format("{}: head {} out of range (the model has {} KV heads)", where,
                                   head, kv_heads));
    }
    if (group_line == 0 || request != group_request || layer != group_layer || step != group_step) {
      flush();
      if (!requests.is_open(request)) requests.switch_to(request, where);
      group_request = request;
      group_layer = static_cast<uint32_t>(layer);
      group_step = static_cast<uint32_t>(step);
      group_line = lines.number();
      offsets.assign(1, 0);
      ids.clear();
      id_lines.clear();
    }
    if (head + 1 < offsets.size()) {
      throw InputError(fmt::format(
          "{}: head {} follows head {} within request id {}, layer {}, step {} (the rows of a "
          "step are sorted by head)",
          where, head, offsets.size() - 1, request, layer, step));
    }
    while (offsets.size() <= head) offsets.push_back(static_cast<uint32_t>(ids.size()));
    ids.push_back(static_cast<uint32_t>(partition));
    id_lines.push_back(lines.number());
  }
  flush();
  const std::string at_end =
      fmt::format("{}: at the end of the input (line {})", csv.string(), lines.number());
  requests.close_all(at_end);
  located(at_end, [&] { meta.writer->finish(); });
}

}  // namespace spin::trace
