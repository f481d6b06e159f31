#include "traces/stats/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/error.h"
#include "common/policy/partition_map.h"

namespace spin::stats {
namespace {

constexpr uint32_t kNever = std::numeric_limits<uint32_t>::max();

double ratio(uint64_t a, uint64_t b) {
  return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
}

template <class T>
void add_into(std::vector<T>& into, const std::vector<T>& from) {
  if (into.size() < from.size()) into.resize(from.size());
  for (size_t i = 0; i < from.size(); ++i) into[i] += from[i];
}

GroupStats make_group(const StatsOptions& o) {
  GroupStats g;
  g.union_inside.assign(o.windows.size(), 0);
  g.union_total.assign(o.windows.size(), 0);
  g.ws_sum.assign(o.windows.size(), 0);
  g.ws_steps.assign(o.windows.size(), 0);
  g.hits.assign(o.capacity_multiples.size(), 0);
  g.capacity_pages.assign(o.capacity_multiples.size(), 0);
  return g;
}

// Counts marks at access times 1..size: prefix sums and point updates in O(log size).
class Fenwick {
 public:
  void reset(size_t size) { tree_.assign(size + 1, 0); }
  size_t size() const { return tree_.size() - 1; }
  void add(size_t i, int32_t delta) {
    for (; i < tree_.size(); i += i & (~i + 1)) tree_[i] += delta;
  }
  int64_t prefix(size_t i) const {
    int64_t s = 0;
    for (; i > 0; i -= i & (~i + 1)) s += tree_[i];
    return s;
  }
  // Marks at times 1..n only. O(size).
  void fill_first(size_t n) {
    std::fill(tree_.begin(), tree_.end(), 0);
    for (size_t i = 1; i <= n; ++i) tree_[i] = 1;
    for (size_t i = 1; i < tree_.size(); ++i) {
      const size_t parent = i + (i & (~i + 1));
      if (parent < tree_.size()) tree_[parent] += tree_[i];
    }
  }

 private:
  std::vector<int32_t> tree_;
};

}  // namespace

double GroupStats::mean_selection() const { return ratio(selected, stream_steps); }

uint32_t GroupStats::size_quantile(double q) const {
  uint64_t acc = 0;
  for (size_t s = 0; s < size_counts.size(); ++s) {
    acc += size_counts[s];
    if (static_cast<double>(acc) >= q * static_cast<double>(stream_steps)) {
      return static_cast<uint32_t>(s);
    }
  }
  return 0;
}

double GroupStats::in_union(size_t w) const { return ratio(union_inside[w], union_total[w]); }
double GroupStats::working_set(size_t w) const { return ratio(ws_sum[w], ws_steps[w]); }
double GroupStats::hit_ratio(size_t m) const { return ratio(hits[m], page_accesses); }
double GroupStats::misses_per_step(size_t m) const {
  return ratio(page_accesses - hits[m], pool_steps);
}
double GroupStats::mean_step_pages() const { return ratio(page_accesses, pool_steps); }

void GroupStats::merge(const GroupStats& o) {
  stream_steps += o.stream_steps;
  selected += o.selected;
  add_into(size_counts, o.size_counts);
  add_into(union_inside, o.union_inside);
  add_into(union_total, o.union_total);
  add_into(ws_sum, o.ws_sum);
  add_into(ws_steps, o.ws_steps);
  add_into(reuse, o.reuse);
  first_uses += o.first_uses;
  pools += o.pools;
  pool_steps += o.pool_steps;
  page_accesses += o.page_accesses;
  static_accesses += o.static_accesses;
  add_into(hits, o.hits);
  add_into(capacity_pages, o.capacity_pages);
}

// The state of the pool being analysed.
struct StatsCollector::Pool {
  trace::RequestInfo request;
  const trace::AlgorithmInfo* algorithm = nullptr;
  GroupStats* group = nullptr;
  uint32_t heads = 0;
  uint32_t page_log2 = 0;
  uint32_t pages = 0;  // pages of one stream at the last step: keys are head · pages + page

  // Partition level.
  std::vector<std::vector<uint32_t>> last_step;  // [head][partition] last step selected
  std::vector<uint64_t> by_step;     // [step] partitions (over heads) last selected then
  std::vector<uint64_t> age_counts;  // [age] this step, ages 1..max window (0 unused)
  uint64_t step_selected = 0;

  // Page level: exact LRU by stack distances.
  std::vector<uint32_t> last_time;  // [key] 0 = never used
  Fenwick marks;                    // one mark per used key, at its last_time
  uint32_t clock = 0;
  uint32_t live = 0;
  std::vector<uint32_t> step_keys;
  std::vector<uint32_t> page_buffer;
  std::vector<uint64_t> distance_counts;  // [distance]
  uint64_t steps = 0;
  uint64_t accesses = 0;

  void push(uint32_t key) {
    if (clock == marks.size()) renumber();
    if (last_time[key] != 0) {
      marks.add(last_time[key], -1);
    } else {
      ++live;
    }
    last_time[key] = ++clock;
    marks.add(clock, 1);
  }
  // Gives the used keys times 1..live in the same order (distances are unchanged).
  void renumber() {
    std::vector<std::pair<uint32_t, uint32_t>> used;  // (time, key)
    for (uint32_t k = 0; k < last_time.size(); ++k) {
      if (last_time[k] != 0) used.emplace_back(last_time[k], k);
    }
    std::sort(used.begin(), used.end());
    for (uint32_t i = 0; i < used.size(); ++i) last_time[used[i].second] = i + 1;
    clock = static_cast<uint32_t>(used.size());
    marks.fill_first(clock);
  }
};

StatsCollector::StatsCollector(const trace::TraceHeader& header, StatsOptions options)
    : header_(header), options_(std::move(options)), pool_(std::make_unique<Pool>()) {
  if (options_.windows.empty() || options_.windows.front() != 1) {
    throw InvariantError("StatsCollector: options.windows must start with 1");
  }
  layers_.assign(header_.model.layers, make_group(options_));
}

StatsCollector::~StatsCollector() = default;

void StatsCollector::begin_pool(const trace::RequestInfo& request, uint32_t layer) {
  Pool& p = *pool_;
  p.request = request;
  p.algorithm = &header_.algorithms.at(request.algorithm);
  p.group = &layers_.at(layer);
  p.heads = header_.model.kv_heads;
  p.page_log2 = static_cast<uint32_t>(std::countr_zero(p.algorithm->page_tokens));
  const uint64_t context = uint64_t{request.prompt_tokens} + request.decode_steps;
  p.pages = policy::pages_for_tokens(context, p.page_log2);

  const uint32_t partitions =
      p.algorithm->partition_kind == trace::PartitionKind::kFixed
          ? trace::fixed_partition_count(request.prompt_tokens, request.decode_steps,
                                         p.algorithm->partition_tokens)
          : 0;  // variable: grown on demand
  if (const uint64_t most = uint64_t{p.heads} * std::max<uint64_t>(p.pages, partitions);
      most > kMaxPoolEntries) {
    throw InputError(fmt::format(
        "trace stats: request id {} has {} KV heads x {} pages ({} partitions) in a layer, more "
        "than the {} (head, page) or (head, partition) entries a pool's statistics may hold",
        request.id, p.heads, p.pages, partitions, kMaxPoolEntries));
  }
  p.last_step.resize(p.heads);
  for (auto& v : p.last_step) v.assign(partitions, kNever);
  p.by_step.assign(request.decode_steps, 0);
  p.age_counts.assign(options_.windows.back() + 2, 0);
  p.step_selected = 0;
  const size_t keys = size_t{p.heads} * p.pages;
  p.last_time.assign(keys, 0);
  p.marks.reset(2 * keys + 4096);
  p.clock = 0;
  p.live = 0;
  p.page_buffer.resize(p.pages);
  p.distance_counts.assign(keys + 1, 0);
  p.steps = 0;
  p.accesses = 0;
}

void StatsCollector::add_selection(uint32_t step, uint32_t head, std::span<const uint32_t> ids,
                                   std::span<const uint32_t> offsets) {
  Pool& p = *pool_;
  GroupStats& g = *p.group;
  ++g.stream_steps;
  g.selected += ids.size();
  if (g.size_counts.size() <= ids.size()) g.size_counts.resize(ids.size() + 1);
  ++g.size_counts[ids.size()];
  p.step_selected += ids.size();
  std::vector<uint32_t>& last = p.last_step[head];
  const size_t max_age = p.age_counts.size() - 1;
  for (uint32_t id : ids) {
    if (id >= last.size()) last.resize(id + 1, kNever);
    const uint32_t before = last[id];
    if (before == kNever) {
      ++g.first_uses;
    } else {
      const uint32_t age = step - before;
      const size_t bucket = static_cast<size_t>(std::bit_width(age)) - 1;
      if (g.reuse.size() <= bucket) g.reuse.resize(bucket + 1);
      ++g.reuse[bucket];
      ++p.age_counts[std::min<size_t>(age, max_age)];
      --p.by_step[before];
    }
    ++p.by_step[step];
    last[id] = step;
  }

  const trace::AlgorithmInfo& a = *p.algorithm;
  const uint32_t context = p.request.prompt_tokens + step;
  const policy::PartitionMapView view = trace::partition_view(a, context, offsets);
  const policy::StaticRegion region =
      policy::make_static_region(a.sink_tokens, a.local_window_tokens, context, p.page_log2);
  const policy::MappedSelection mapped = policy::map_selection_pages(
      view, region, ids.data(), static_cast<uint32_t>(ids.size()), p.page_buffer.data());
  g.static_accesses += mapped.static_pages;
  for (uint32_t i = 0; i < mapped.cacheable_pages; ++i) {
    p.step_keys.push_back(head * p.pages + p.page_buffer[i]);
  }
}

void StatsCollector::end_step(uint32_t step) {
  Pool& p = *pool_;
  GroupStats& g = *p.group;
  // Distances against the stack as it was at the end of the previous step, then the pushes.
  for (uint32_t key : p.step_keys) {
    const uint32_t t = p.last_time[key];
    if (t != 0) ++p.distance_counts[p.live - p.marks.prefix(t)];
  }
  for (uint32_t key : p.step_keys) p.push(key);
  ++p.steps;
  p.accesses += p.step_keys.size();
  p.step_keys.clear();

  for (size_t w = 0; w < options_.windows.size(); ++w) {
    const uint32_t window = options_.windows[w];
    if (step >= window) {
      uint64_t inside = 0;
      for (uint32_t age = 1; age <= window; ++age) inside += p.age_counts[age];
      g.union_inside[w] += inside;
      g.union_total[w] += p.step_selected;
    }
    if (step + 1 >= window) {
      uint64_t size = 0;
      for (uint32_t s = step + 1 - window; s <= step; ++s) size += p.by_step[s];
      g.ws_sum[w] += size;
      g.ws_steps[w] += p.heads;
    }
  }
  std::fill(p.age_counts.begin(), p.age_counts.end(), 0);
  p.step_selected = 0;
}

void StatsCollector::end_pool() {
  Pool& p = *pool_;
  GroupStats& g = *p.group;
  ++g.pools;
  g.pool_steps += p.steps;
  g.page_accesses += p.accesses;
  const double mean = ratio(p.accesses, p.steps);
  for (size_t m = 0; m < options_.capacity_multiples.size(); ++m) {
    const uint64_t capacity =
        static_cast<uint64_t>(std::ceil(options_.capacity_multiples[m] * mean - 1e-9));
    uint64_t hits = 0;
    for (uint64_t d = 0; d < std::min<uint64_t>(capacity, p.distance_counts.size()); ++d) {
      hits += p.distance_counts[d];
    }
    g.hits[m] += hits;
    g.capacity_pages[m] += capacity;
  }
}

GroupStats StatsCollector::overall() const {
  GroupStats all = make_group(options_);
  for (const GroupStats& g : layers_) all.merge(g);
  return all;
}

namespace {

nlohmann::json group_json(const GroupStats& g, const StatsOptions& o) {
  nlohmann::json j;
  j["stream_steps"] = g.stream_steps;
  j["selection"] = {{"mean", g.mean_selection()},
                    {"p50", g.size_quantile(0.5)},
                    {"p99", g.size_quantile(0.99)},
                    {"max", g.size_counts.empty() ? 0 : g.size_counts.size() - 1}};
  // A window longer than every stream has no data: null, not 0.
  const auto measured = [](bool has_data, double value) {
    return has_data ? nlohmann::json(value) : nlohmann::json(nullptr);
  };
  j["overlap"] = measured(g.union_total[0] > 0, g.overlap());
  nlohmann::json in_union = nlohmann::json::object(), ws = nlohmann::json::object();
  for (size_t w = 0; w < o.windows.size(); ++w) {
    in_union[std::to_string(o.windows[w])] = measured(g.union_total[w] > 0, g.in_union(w));
    ws[std::to_string(o.windows[w])] = measured(g.ws_steps[w] > 0, g.working_set(w));
  }
  j["in_union"] = in_union;
  j["working_set"] = ws;
  nlohmann::json buckets = nlohmann::json::array();
  for (size_t b = 0; b < g.reuse.size(); ++b) {
    buckets.push_back({{"min_steps", uint64_t{1} << b},
                       {"max_steps", (uint64_t{2} << b) - 1},
                       {"count", g.reuse[b]}});
  }
  j["reuse"] = {{"first_uses", g.first_uses}, {"buckets", buckets}};
  nlohmann::json lru;
  lru["pools"] = g.pools;
  lru["pool_steps"] = g.pool_steps;
  lru["page_accesses"] = g.page_accesses;
  lru["static_accesses"] = g.static_accesses;
  lru["mean_step_pages"] = g.mean_step_pages();
  lru["capacity_multiples"] = o.capacity_multiples;
  nlohmann::json hit = nlohmann::json::array(), miss = nlohmann::json::array(),
                 cap = nlohmann::json::array();
  for (size_t m = 0; m < o.capacity_multiples.size(); ++m) {
    hit.push_back(g.hit_ratio(m));
    miss.push_back(g.misses_per_step(m));
    cap.push_back(ratio(g.capacity_pages[m], g.pools));
  }
  lru["hit_ratio"] = hit;
  lru["misses_per_step"] = miss;
  lru["mean_capacity_pages"] = cap;
  j["lru"] = lru;
  return j;
}

}  // namespace

nlohmann::json StatsCollector::to_json() const {
  nlohmann::json j;
  j["options"] = {{"capacity_multiples", options_.capacity_multiples},
                  {"windows", options_.windows}};
  j["overall"] = group_json(overall(), options_);
  nlohmann::json layers = nlohmann::json::array();
  for (const GroupStats& g : layers_) layers.push_back(group_json(g, options_));
  j["layers"] = layers;
  return j;
}

std::string StatsCollector::to_text() const {
  const GroupStats all = overall();
  std::vector<std::pair<std::string, const GroupStats*>> rows;
  for (size_t l = 0; l < layers_.size(); ++l) rows.emplace_back(std::to_string(l), &layers_[l]);
  rows.emplace_back("all", &all);
  const StatsOptions& o = options_;
  std::string out =
      "Selections (partitions per stream step; in_union(w): share of a selection "
      "inside the union of the w previous steps; ws(w): mean union of w steps; -: no stream "
      "has that many steps)\n";
  out += fmt::format("{:>5} {:>9} {:>7} {:>7} {:>7}", "layer", "mean", "p50", "p99", "overlap");
  for (uint32_t w : o.windows) out += fmt::format(" {:>7}", fmt::format("in({})", w));
  for (uint32_t w : o.windows) out += fmt::format(" {:>9}", fmt::format("ws({})", w));
  out += "\n";
  for (const auto& [name, g] : rows) {
    const auto cell = [](bool has_data, double value, int width, int digits) {
      return has_data ? fmt::format(" {:>{}.{}f}", value, width, digits)
                      : fmt::format(" {:>{}}", "-", width);
    };
    out += fmt::format("{:>5} {:>9.1f} {:>7} {:>7}", name, g->mean_selection(),
                       g->size_quantile(0.5), g->size_quantile(0.99));
    out += cell(g->union_total[0] > 0, g->overlap(), 7, 3);
    for (size_t w = 0; w < o.windows.size(); ++w)
      out += cell(g->union_total[w] > 0, g->in_union(w), 7, 3);
    for (size_t w = 0; w < o.windows.size(); ++w)
      out += cell(g->ws_steps[w] > 0, g->working_set(w), 9, 1);
    out += "\n";
  }
  out += "\nExact LRU per (request, layer) pool: hit ratio at m x the pool's mean pages per step\n";
  out += fmt::format("{:>5} {:>10}", "layer", "pages/step");
  for (double m : o.capacity_multiples) out += fmt::format(" {:>7}", fmt::format("{}x", m));
  out += fmt::format(" {:>11} {:>11}\n", "miss/st@2x", "miss/st@4x");
  const auto index_of = [&](double m) -> std::ptrdiff_t {
    const auto it = std::find(o.capacity_multiples.begin(), o.capacity_multiples.end(), m);
    return it == o.capacity_multiples.end() ? -1 : it - o.capacity_multiples.begin();
  };
  for (const auto& [name, g] : rows) {
    out += fmt::format("{:>5} {:>10.1f}", name, g->mean_step_pages());
    for (size_t m = 0; m < o.capacity_multiples.size(); ++m) {
      out += fmt::format(" {:>7.3f}", g->hit_ratio(m));
    }
    for (double m : {2.0, 4.0}) {
      const auto i = index_of(m);
      out += i < 0 ? fmt::format(" {:>11}", "-")
                   : fmt::format(" {:>11.2f}", g->misses_per_step(static_cast<size_t>(i)));
    }
    out += "\n";
  }
  out += fmt::format(
      "\nReuse distances over all layers (steps since the stream last selected the "
      "partition); first uses: {}\n",
      all.first_uses);
  const uint64_t reuses = std::accumulate(all.reuse.begin(), all.reuse.end(), uint64_t{0});
  for (size_t b = 0; b < all.reuse.size(); ++b) {
    out += fmt::format("  [{:>6}, {:>6}] {:>12} {:>7.3f}\n", uint64_t{1} << b,
                       (uint64_t{2} << b) - 1, all.reuse[b], ratio(all.reuse[b], reuses));
  }
  return out;
}

}  // namespace spin::stats
