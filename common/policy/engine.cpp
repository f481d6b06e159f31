#include "common/policy/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <optional>
#include <vector>

#include "common/error.h"
#include "common/policy/budget.h"
#include "common/policy/policy_registry.h"

namespace spin::policy {

std::uint64_t page_bytes(const ModelShape& model, std::uint32_t page_tokens) {
  return std::uint64_t{2} * page_tokens * model.head_dim * model.dtype_bytes;
}

PolicyStats& PolicyStats::operator+=(const PolicyStats& o) {
  steps += o.steps;
  accesses += o.accesses;
  hits += o.hits;
  misses += o.misses;
  bypassed += o.bypassed;
  static_accesses += o.static_accesses;
  victims += o.victims;
  fetched_bytes += o.fetched_bytes;
  return *this;
}

PolicyStats& PolicyStats::operator-=(const PolicyStats& o) {
  steps -= o.steps;
  accesses -= o.accesses;
  hits -= o.hits;
  misses -= o.misses;
  bypassed -= o.bypassed;
  static_accesses -= o.static_accesses;
  victims -= o.victims;
  fetched_bytes -= o.fetched_bytes;
  return *this;
}

namespace {

// Grows a buffer to at least `n` elements (never shrinks, so steady state does not allocate).
template <class T>
T* at_least(std::vector<T>& buffer, std::size_t n) {
  if (buffer.size() < n) buffer.resize(std::max(n, buffer.size() * 2));
  return buffer.data();
}

// The shared second-level segments; host storage behind a SegmentPoolView.
class SegmentPool {
 public:
  explicit SegmentPool(std::uint32_t segment_pages_log2)
      : view_{nullptr, nullptr, nullptr, 0, 0, segment_pages_log2} {}

  // Ensures at least `wanted` free segments (new handles are taken lowest first).
  void reserve_free(std::uint32_t wanted) {
    if (view_.free_count >= wanted) return;
    const std::uint32_t old_capacity = view_.capacity;
    const std::uint32_t capacity =
        std::max(old_capacity * 2, old_capacity + wanted - view_.free_count);
    entries_.resize(std::size_t{capacity} << view_.segment_pages_log2, kAbsentSlot);
    used_.resize(capacity, 0);
    free_stack_.resize(capacity);
    for (std::uint32_t h = capacity; h-- > old_capacity;) free_stack_[view_.free_count++] = h;
    view_.entries = entries_.data();
    view_.used = used_.data();
    view_.free_stack = free_stack_.data();
    view_.capacity = capacity;
  }
  // Gives every segment back, as on a fresh pool (the lowest handle is taken first), keeping
  // the storage. Costs the owned segments' entries.
  void release_all() {
    for (std::uint32_t h = 0; h < view_.capacity; ++h) {
      if (used_[h] == 0) continue;  // free: its entries are kAbsentSlot already
      const auto first = entries_.begin() + (std::ptrdiff_t{h} << view_.segment_pages_log2);
      std::fill(first, first + (std::ptrdiff_t{1} << view_.segment_pages_log2), kAbsentSlot);
      used_[h] = 0;
    }
    view_.free_count = 0;
    for (std::uint32_t h = view_.capacity; h-- > 0;) free_stack_[view_.free_count++] = h;
  }
  SegmentPool(SegmentPool&&) = default;
  SegmentPool& operator=(SegmentPool&&) = default;

  SegmentPoolView& view() { return view_; }
  const SegmentPoolView& view() const { return view_; }
  std::uint32_t in_use() const { return view_.capacity - view_.free_count; }

 private:
  std::vector<std::int32_t> entries_;
  std::vector<std::uint32_t> used_;
  std::vector<std::uint32_t> free_stack_;
  SegmentPoolView view_;
};

struct Stream {
  std::vector<std::uint32_t> pages;  // this step's cacheable pages, ascending: [0, page_count)
  std::uint32_t page_count = 0;
  std::uint32_t static_pages = 0;
  std::uint64_t selected_in = ~std::uint64_t{0};  // the request step (sequence) it was selected in
  std::optional<PartitionMap> clusters;           // variable geometry only
  std::shared_ptr<const StreamFuture> future;     // Belady only (shared by engine copies)
  std::size_t future_step = 0;                    // the future's next step
};

struct Pool {
  Pool() = default;
  // Copies rebind the view to the copy's own buffers; moves keep the buffers, so the view stays.
  Pool(const Pool& other) { *this = other; }
  Pool& operator=(const Pool& other);
  Pool(Pool&&) = default;
  Pool& operator=(Pool&&) = default;
  // Points the view at this pool's buffers (after a copy, or after they grew).
  void bind() {
    view.slot_key = slot_key.data();
    view.slot_last_use = slot_last_use.data();
    view.slot_aux = slot_aux.empty() ? nullptr : slot_aux.data();
    view.age_count = age_count.empty() ? nullptr : age_count.data();
    view.block_floor = block_floor.data();
    if (page_table_hashed(view.table)) {
      view.table.buckets = buckets.data();
      view.table.slot_key = slot_key.data();
    } else {
      view.table.directory = directory.data();
    }
  }

  std::uint32_t first_stream = 0;  // request stream index of the pool's stream 0
  std::uint32_t streams = 0;
  std::int32_t layer = -1;  // the pool's layer, or -1 if it spans several
  std::vector<PageKey> slot_key;
  std::vector<std::uint32_t> slot_last_use;
  std::vector<std::uint32_t> slot_aux;
  std::vector<std::uint32_t> directory;    // two-level layout
  std::vector<std::int32_t> buckets;       // hashed layout
  std::vector<std::uint32_t> age_count;    // bucketed LRU's age counts (EngineOptions::age_counts)
  std::vector<std::uint32_t> block_floor;  // PoolView::block_floor: the victim pass's skip bounds
  PoolView view{};
  // The last step: input and decisions.
  std::uint32_t n = 0;
  std::uint32_t now = 0;
  std::uint32_t static_pages = 0;
  std::vector<PageKey> keys;
  std::vector<std::uint32_t> next_use;
  std::vector<std::int32_t> slot_of;
  std::vector<std::uint32_t> fetch_index;
  std::vector<std::uint32_t> bypass_index;
  std::vector<std::int32_t> victim_slot;
  std::vector<PageKey> victim_key;
  StepOutput out{};
};

// The pool's state, not its last step: the copy keeps its own step buffers and has no decisions
// until it steps (n = 0, no victims).
Pool& Pool::operator=(const Pool& other) {
  first_stream = other.first_stream;
  streams = other.streams;
  layer = other.layer;
  slot_key = other.slot_key;
  slot_last_use = other.slot_last_use;
  slot_aux = other.slot_aux;
  directory = other.directory;
  buckets = other.buckets;
  age_count = other.age_count;
  block_floor = other.block_floor;
  view = other.view;
  n = 0;
  now = other.now;
  static_pages = 0;
  out = StepOutput{};
  bind();
  return *this;
}

struct Request {
  RequestSpec spec;
  std::uint32_t page_tokens_log2 = 0;
  std::uint64_t page_bytes = 0;
  std::uint32_t max_pages = 0;
  std::uint32_t streams_count = 0;
  bool in_step = false;
  std::uint64_t step_seq = 0;  // begin_step calls so far
  std::uint32_t now = 0;
  std::uint32_t context_tokens = 0;
  StaticRegion region{0, 0};
  PartitionMapView fixed_view{};
  std::vector<Stream> streams;  // [layers × kv_heads], index layer · kv_heads + head
  std::vector<Pool> pools;
  PolicyStats stats;
  std::uint64_t offset_bytes = 0;  // partition offset tables of the streams
  MetadataBytes metadata;          // this request's share of Engine metadata (segments aside)
};

std::string where(RequestId id, std::uint32_t layer, std::uint32_t head) {
  return fmt::format("request {} layer {} head {}", id, layer, head);
}

}  // namespace

// Everything of an engine but its segment pool: what a Checkpoint holds.
struct Engine::State {
  EngineOptions options;
  std::uint32_t segment_pages_log2 = 0;
  std::vector<std::optional<Request>> requests;  // by id; empty once removed
  std::vector<PolicyStats> layer_stats;
  PolicyStats total;
  MetadataReport metadata;
  std::string log;
  std::uint32_t histogram[kHistogramBins] = {};
  MetadataBytes live;  // the live requests' contributions (segments are read from `segments`)
  std::vector<PolicyStats> layer_scratch;
};

struct Engine::Impl : State {
  SegmentPool segments{0};

  void check_id(RequestId id) const {
    if (id >= requests.size() || !requests[id]) {
      throw InputError(fmt::format("no request {} in the policy engine", id));
    }
  }
  Request& get(RequestId id) {
    check_id(id);
    return *requests[id];
  }
  const Request& get(RequestId id) const {
    check_id(id);
    return *requests[id];
  }
  Stream& stream(Request& r, RequestId id, std::uint32_t layer, std::uint32_t head) const {
    if (layer >= r.spec.model.layers || head >= r.spec.model.kv_heads) {
      throw InputError(fmt::format("{}: the model has {} layers and {} KV heads",
                                   where(id, layer, head), r.spec.model.layers,
                                   r.spec.model.kv_heads));
    }
    return r.streams[std::size_t{layer} * r.spec.model.kv_heads + head];
  }

  static std::uint64_t slot_bytes(const Request& r) {
    return kSlotKeyBytes + kSlotLastUseBytes +
           (policy_uses_aux(r.spec.policy.kind) ? kSlotAuxBytes : 0);
  }
  // The request's context is now `context_tokens`: static region and partition maps follow.
  static void set_context(Request& r, std::uint32_t context_tokens);
  void resize_pool(Request& r, Pool& pool, std::uint32_t capacity);
  void run_pool(Request& r, RequestId id, Pool& pool, PolicyStats& step);
  // Every two-level pool's directory and segments, rebuilt from its slots (after a restore).
  void rebuild_segments();
  static MetadataBytes contribution(const Request& r);
  // Replaces r's contribution (if r) and updates current and peak.
  void refresh_metadata(Request* r, const MetadataBytes& contribution);
  void check_pool(const Request& r, RequestId id, std::uint32_t index, const Pool& pool,
                  std::vector<char>& owned) const;
};

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  const std::uint32_t s = options.segment_pages;
  if (s == 0 || (s & (s - 1)) != 0 || s > (1u << 24)) {
    throw InputError(fmt::format("segment_pages: expected a power of two up to 2^24, got {}", s));
  }
  impl_->options = options;
  impl_->segment_pages_log2 = log2_exact(s);
  impl_->segments = SegmentPool(impl_->segment_pages_log2);
  if (options.decision_log) impl_->log = kDecisionLogHeader;
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

Engine::Checkpoint::Checkpoint() = default;
Engine::Checkpoint::~Checkpoint() = default;
Engine::Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Engine::Checkpoint& Engine::Checkpoint::operator=(Checkpoint&&) noexcept = default;

void Engine::save(Checkpoint& checkpoint) const {
  const State& state = *impl_;
  if (checkpoint.state_) {
    *checkpoint.state_ = state;
  } else {
    checkpoint.state_ = std::make_unique<State>(state);
  }
}

void Engine::restore(const Checkpoint& checkpoint) {
  if (!checkpoint.state_ ||
      checkpoint.state_->segment_pages_log2 != impl_->segments.view().segment_pages_log2) {
    throw InvariantError("policy engine: restore from a checkpoint this engine did not save");
  }
  static_cast<State&>(*impl_) = *checkpoint.state_;
  impl_->rebuild_segments();
}

void Engine::Impl::rebuild_segments() {
  segments.release_all();
  for (std::optional<Request>& r : requests) {
    if (!r) continue;
    for (Pool& pool : r->pools) {
      if (page_table_hashed(pool.view.table)) continue;
      std::fill(pool.directory.begin(), pool.directory.end(), kNoSegment);
      for (std::uint32_t s = 0; s < pool.view.extent; ++s) {
        if (pool.slot_key[s] == kNoPage) continue;
        segments.reserve_free(1);
        page_table_insert(pool.view.table, segments.view(), pool.slot_key[s],
                          static_cast<std::int32_t>(s));
      }
    }
  }
}

void Engine::Impl::set_context(Request& r, std::uint32_t context_tokens) {
  r.context_tokens = context_tokens;
  r.region = static_region(r.spec.static_region, r.spec.geometry.page_tokens, context_tokens);
  const std::uint32_t g = r.spec.geometry.partition_tokens;
  r.fixed_view =
      PartitionMapView{PartitionKind::kFixed,
                       r.page_tokens_log2,
                       g,
                       static_cast<std::uint32_t>((std::uint64_t{context_tokens} + g - 1) / g),
                       context_tokens,
                       nullptr};
  for (Stream& s : r.streams) {
    if (s.clusters) s.clusters->set_stored_tokens(context_tokens);
  }
}

namespace {

// The hashed table holds 2 · extent + 1 buckets (load at most 1/2, an empty bucket always
// left); it is rebuilt, in ascending slot order, whenever the extent grows.
void rebuild_hashed_table(Pool& pool) {
  const std::uint32_t extent = pool.view.extent;
  pool.buckets.assign(std::size_t{extent} * 2 + 1, kAbsentSlot);
  pool.bind();
  DirectoryView& table = pool.view.table;
  table.bucket_count = static_cast<std::uint32_t>(pool.buckets.size());
  SegmentPoolView no_segments{};
  for (std::uint32_t s = 0; s < extent; ++s) {
    if (pool.slot_key[s] != kNoPage) {
      page_table_insert(table, no_segments, pool.slot_key[s], static_cast<std::int32_t>(s));
    }
  }
}

}  // namespace

void Engine::Impl::resize_pool(Request& r, Pool& pool, std::uint32_t capacity) {
  if (capacity > pool.view.extent) {
    pool.slot_key.resize(capacity, kNoPage);
    pool.slot_last_use.resize(capacity, kEmptyStamp);
    if (policy_uses_aux(r.spec.policy.kind)) pool.slot_aux.resize(capacity, 0);
    pool.view.extent = capacity;
    // New full blocks (the old partial one among them) start at 0: they may hold empty slots.
    pool.block_floor.resize(capacity / kFloorBlockSlots, 0);
    pool.bind();
    if (page_table_hashed(pool.view.table)) rebuild_hashed_table(pool);
  }
  pool.view.capacity = capacity;
}

RequestId Engine::add_request(const RequestSpec& spec) {
  validate(spec.geometry);
  const ModelShape& m = spec.model;
  if (m.layers == 0 || m.kv_heads == 0 || m.head_dim == 0 || m.dtype_bytes == 0) {
    throw InputError("model: layers, kv_heads, head_dim and dtype_bytes must be positive");
  }
  if (std::uint64_t{m.layers} * m.kv_heads > 0xFFFFFFFFu) {
    throw InputError("model: more than 2^32 streams in a request");
  }
  if (spec.max_context_tokens == 0) throw InputError("max_context_tokens: expected > 0");
  policy_name(spec.policy.kind);  // an InvariantError for a kind without its cases
  if (spec.policy.kind == PolicyKind::kBucketedLru &&
      (spec.policy.buckets == 0 || spec.policy.bucket_shift > 31)) {
    throw InputError("bucketed-lru: buckets must be >= 1 and bucket_shift <= 31");
  }
  const RequestId id = impl_->requests.size();
  Request r;
  r.spec = spec;
  r.page_tokens_log2 = log2_exact(spec.geometry.page_tokens);
  r.page_bytes = page_bytes(m, spec.geometry.page_tokens);
  r.max_pages = pages_for_tokens(spec.max_context_tokens, r.page_tokens_log2);
  r.streams_count = m.layers * m.kv_heads;
  r.streams.resize(r.streams_count);
  if (spec.geometry.kind == PartitionKind::kVariable) {
    for (Stream& s : r.streams) s.clusters.emplace(spec.geometry);
  }
  Impl::set_context(r, 0);
  std::uint32_t pool_streams = 1;
  if (spec.scope == PoolScope::kRequestLayer) pool_streams = m.kv_heads;
  if (spec.scope == PoolScope::kRequest) pool_streams = r.streams_count;
  const std::uint32_t directory_entries =
      (r.max_pages + (1u << impl_->segment_pages_log2) - 1) >> impl_->segment_pages_log2;
  r.pools.resize(r.streams_count / pool_streams);
  for (std::uint32_t p = 0; p < r.pools.size(); ++p) {
    Pool& pool = r.pools[p];
    pool.first_stream = p * pool_streams;
    pool.streams = pool_streams;
    if (pool_streams <= m.kv_heads) {
      pool.layer = static_cast<std::int32_t>(pool.first_stream / m.kv_heads);
    }
    const std::uint64_t age_window = std::uint64_t{spec.policy.buckets - 1}
                                     << spec.policy.bucket_shift;
    if (impl_->options.age_counts && spec.policy.kind == PolicyKind::kBucketedLru &&
        age_window > 0 && age_window <= kMaxAgeWindow) {
      const std::uint32_t ring = std::bit_ceil(static_cast<std::uint32_t>(age_window));
      pool.age_count.assign(std::size_t{ring} + 2, 0);
      pool.view.age_count = pool.age_count.data();
      pool.view.age_window = static_cast<std::uint32_t>(age_window);
      pool.view.age_ring_mask = ring - 1;
    }
    if (impl_->options.page_table == PageTableLayout::kHashed) {
      pool.view.table = DirectoryView{nullptr, pool_streams, 0, nullptr, nullptr, 0};
      rebuild_hashed_table(pool);
    } else {
      pool.directory.assign(std::size_t{pool_streams} * directory_entries, kNoSegment);
      pool.view.table = DirectoryView{
          pool.directory.data(), pool_streams, directory_entries, nullptr, nullptr, 0};
    }
  }
  if (impl_->layer_stats.size() < m.layers) impl_->layer_stats.resize(m.layers);
  impl_->requests.push_back(std::move(r));
  set_cache_pages(id, spec.cache_pages);
  return id;
}

void Engine::remove_request(RequestId id) {
  Request& r = impl_->get(id);
  for (Pool& pool : r.pools) {
    if (page_table_hashed(pool.view.table)) continue;  // the table goes with the pool
    for (std::uint32_t s = 0; s < pool.view.extent; ++s) {
      if (pool.slot_key[s] != kNoPage) {
        page_table_erase(pool.view.table, impl_->segments.view(), pool.slot_key[s]);
      }
    }
  }
  impl_->refresh_metadata(&r, MetadataBytes{});
  impl_->requests[id].reset();
}

void Engine::set_cache_pages(RequestId id, std::uint64_t cache_pages) {
  Request& r = impl_->get(id);
  std::vector<std::uint64_t> weights;
  for (const Pool& pool : r.pools) weights.push_back(pool.streams);
  const std::vector<std::uint64_t> parts = split_pages(cache_pages, weights);
  for (std::size_t p = 0; p < r.pools.size(); ++p) {
    if (parts[p] > 0x7FFFFFFFu) {
      throw InputError(
          fmt::format("request {}: {} cache pages in one pool (at most 2^31 - 1)", id, parts[p]));
    }
    impl_->resize_pool(r, r.pools[p], static_cast<std::uint32_t>(parts[p]));
  }
  r.spec.cache_pages = cache_pages;
  impl_->refresh_metadata(&r, Impl::contribution(r));
}

void Engine::append_clusters(RequestId id, std::uint32_t layer, std::uint32_t head,
                             std::uint32_t start_token, std::span<const std::uint32_t> lengths) {
  Request& r = impl_->get(id);
  Stream& s = impl_->stream(r, id, layer, head);
  if (!s.clusters) {
    throw InputError(
        fmt::format("{}: append_clusters on fixed-size partitions", where(id, layer, head)));
  }
  const std::uint64_t before = s.clusters->offset_table_bytes();
  s.clusters->append_clusters(start_token, lengths);
  r.offset_bytes += s.clusters->offset_table_bytes() - before;
  impl_->refresh_metadata(&r, Impl::contribution(r));
}

void Engine::set_future(RequestId id, std::uint32_t layer, std::uint32_t head,
                        StreamFuture future) {
  Request& r = impl_->get(id);
  Stream& s = impl_->stream(r, id, layer, head);
  if (r.spec.policy.kind != PolicyKind::kBelady) {
    throw InputError(
        fmt::format("{}: set_future is only for the belady policy", where(id, layer, head)));
  }
  if (r.step_seq != 0) {
    throw InputError(fmt::format("{}: set_future after the first step", where(id, layer, head)));
  }
  future.finalize();
  s.future = std::make_shared<const StreamFuture>(std::move(future));
  s.future_step = 0;
}

void Engine::begin_step(RequestId id, std::uint32_t now, std::uint32_t context_tokens) {
  Request& r = impl_->get(id);
  if (r.in_step) throw InputError(fmt::format("request {}: begin_step twice", id));
  if (r.step_seq > 0 && now <= r.now) {
    throw InputError(fmt::format("request {}: step {} does not follow step {}", id, now, r.now));
  }
  if (now >= kEmptyStamp) throw InputError(fmt::format("request {}: step {} too large", id, now));
  if (context_tokens > r.spec.max_context_tokens || context_tokens < r.context_tokens) {
    throw InputError(
        fmt::format("request {} step {}: context of {} tokens; expected {}..{} (it never shrinks)",
                    id, now, context_tokens, r.context_tokens, r.spec.max_context_tokens));
  }
  r.in_step = true;
  ++r.step_seq;
  r.now = now;
  if (context_tokens != r.context_tokens) {
    Impl::set_context(r, context_tokens);
    impl_->refresh_metadata(&r, Impl::contribution(r));
  }
}

void Engine::select(RequestId id, std::uint32_t layer, std::uint32_t head,
                    std::span<const std::uint32_t> partition_ids) {
  Request& r = impl_->get(id);
  Stream& s = impl_->stream(r, id, layer, head);
  if (!r.in_step) {
    throw InputError(fmt::format("{}: select outside a step", where(id, layer, head)));
  }
  if (s.selected_in == r.step_seq) {
    throw InputError(fmt::format("{} step {}: selected twice", where(id, layer, head), r.now));
  }
  try {
    const PartitionMapView view = s.clusters ? s.clusters->view() : r.fixed_view;
    const MappedSelection mapped =
        map_selection_into(view, r.region, partition_ids, s.pages, "selection");
    s.page_count = mapped.cacheable_pages;
    s.static_pages = mapped.static_pages;
  } catch (const InputError& e) {
    throw InputError(fmt::format("{} step {}: {}", where(id, layer, head), r.now, e.what()));
  }
  s.selected_in = r.step_seq;
}

void Engine::Impl::run_pool(Request& r, RequestId id, Pool& pool, PolicyStats& step) {
  const std::uint32_t heads = r.spec.model.kv_heads;
  // Gather the pool's selection in (stream, page) order.
  std::uint64_t n = 0;
  pool.static_pages = 0;
  for (std::uint32_t k = 0; k < pool.streams; ++k) {
    const Stream& s = r.streams[pool.first_stream + k];
    if (s.selected_in == r.step_seq) n += s.page_count;
  }
  if (n > 0x7FFFFFFFu) throw InputError(fmt::format("request {}: over 2^31 pages in a step", id));
  PageKey* keys = at_least(pool.keys, n);
  const bool belady = r.spec.policy.kind == PolicyKind::kBelady;
  std::uint32_t* next_use = belady ? at_least(pool.next_use, n) : nullptr;
  std::uint32_t at = 0;
  for (std::uint32_t k = 0; k < pool.streams; ++k) {
    Stream& s = r.streams[pool.first_stream + k];
    const bool selected = s.selected_in == r.step_seq;
    const std::span<const std::uint32_t> pages =
        selected ? std::span<const std::uint32_t>(s.pages.data(), s.page_count)
                 : std::span<const std::uint32_t>();
    if (selected) pool.static_pages += s.static_pages;
    if (belady) {
      const std::uint32_t layer = (pool.first_stream + k) / heads;
      const std::uint32_t head = (pool.first_stream + k) % heads;
      if (!s.future) {
        throw InputError(fmt::format("{}: the belady policy needs set_future for every stream",
                                     where(id, layer, head)));
      }
      // A request resumed after a preemption starts at a later step: its future's earlier steps
      // are passed over.
      while (s.future_step < s.future->steps() && s.future->now(s.future_step) < r.now)
        ++s.future_step;
      if (s.future_step >= s.future->steps() || s.future->now(s.future_step) != r.now ||
          !std::ranges::equal(s.future->pages(s.future_step), pages)) {
        throw InputError(fmt::format(
            "{} step {}: the replayed selection differs from the future given to set_future",
            where(id, layer, head), r.now));
      }
      const auto uses = s.future->next_uses(s.future_step++);
      std::copy(uses.begin(), uses.end(), next_use + at);
    }
    const PageKey stream_key = make_page_key(k, 0);
    PageKey* const stream_keys = keys + at;
    for (std::size_t j = 0; j < pages.size(); ++j) stream_keys[j] = stream_key | pages[j];
    at += static_cast<std::uint32_t>(pages.size());
  }
  pool.n = at;
  pool.now = r.now;

  if (!page_table_hashed(pool.view.table))
    segments.reserve_free(most_new_segments(pool.view.table, pool.view.capacity, at));
  pool.out.slot_of = at_least(pool.slot_of, at);
  pool.out.fetch_index = at_least(pool.fetch_index, at);
  pool.out.bypass_index = at_least(pool.bypass_index, at);
  // Victims: at most the extent (a copied pool's buffers start empty).
  if (pool.victim_slot.size() < pool.view.extent) {
    pool.victim_slot.resize(pool.view.extent);
    pool.victim_key.resize(pool.view.extent);
  }
  pool.out.victim_slot = pool.victim_slot.data();
  pool.out.victim_key = pool.victim_key.data();
  const StepInput in{keys, next_use, at, r.now};
  const StepStatus status =
      pool_step(pool.view, r.spec.policy, segments.view(), in, histogram, pool.out);
  if (status == StepStatus::kTooFewVictims) {
    throw InvariantError(fmt::format(
        "request {} step {}: policy {} freed fewer slots than the step needs: its order, "
        "order_bits, min_victim_age or on_access breaks the contract in residency.h "
        "(docs/policy.md, "
        "\"Adding a policy\")",
        id, r.now, policy_name(r.spec.policy.kind)));
  }
  if (status != StepStatus::kOk) {
    throw InvariantError(
        fmt::format("request {}: the residency step failed: {}", id, step_status_name(status)));
  }

  // Statistics: the pool's counts, attributed to layers.
  const StepOutput& out = pool.out;
  const std::uint64_t misses = out.fetches + out.bypassed;
  const PolicyStats counts{
      1, at, out.hits, misses, out.bypassed, pool.static_pages, out.victims, misses * r.page_bytes};
  step += counts;
  if (pool.layer >= 0) {
    layer_stats[pool.layer] += counts;
    return;
  }
  const auto layer_of = [&](PageKey key) { return (pool.first_stream + key_stream(key)) / heads; };
  layer_scratch.assign(r.spec.model.layers, PolicyStats{});
  for (std::uint32_t i = 0; i < at; ++i) ++layer_scratch[layer_of(keys[i])].accesses;
  for (std::uint32_t f = 0; f < out.fetches; ++f) {
    ++layer_scratch[layer_of(keys[out.fetch_index[f]])].misses;
  }
  for (std::uint32_t b = 0; b < out.bypassed; ++b) {
    PolicyStats& l = layer_scratch[layer_of(keys[out.bypass_index[b]])];
    ++l.misses;
    ++l.bypassed;
  }
  for (std::uint32_t v = 0; v < out.victims; ++v)
    ++layer_scratch[layer_of(out.victim_key[v])].victims;
  for (std::uint32_t k = 0; k < pool.streams; ++k) {
    const Stream& s = r.streams[pool.first_stream + k];
    if (s.selected_in == r.step_seq) {
      layer_scratch[(pool.first_stream + k) / heads].static_accesses += s.static_pages;
    }
  }
  for (std::uint32_t layer = 0; layer < r.spec.model.layers; ++layer) {
    PolicyStats& l = layer_scratch[layer];
    l.steps = 1;
    l.hits = l.accesses - l.misses;
    l.fetched_bytes = l.misses * r.page_bytes;
    layer_stats[layer] += l;
  }
}

PolicyStats Engine::end_step(RequestId id) {
  Request& r = impl_->get(id);
  if (!r.in_step) throw InputError(fmt::format("request {}: end_step without begin_step", id));
  PolicyStats step;
  for (std::uint32_t p = 0; p < r.pools.size(); ++p) {
    Pool& pool = r.pools[p];
    impl_->run_pool(r, id, pool, step);
    if (impl_->options.decision_log) append_decision_log(impl_->log, decisions(id, p));
  }
  r.in_step = false;
  r.stats += step;
  impl_->total += step;
  impl_->refresh_metadata(nullptr, MetadataBytes{});
  return step;
}

std::uint32_t Engine::pool_count(RequestId id) const {
  return static_cast<std::uint32_t>(impl_->get(id).pools.size());
}

PoolDecisions Engine::decisions(RequestId id, std::uint32_t pool_index) const {
  const Request& r = impl_->get(id);
  if (pool_index >= r.pools.size()) {
    throw InputError(fmt::format("request {} has no pool {}", id, pool_index));
  }
  const Pool& pool = r.pools[pool_index];
  const StepOutput& out = pool.out;
  PoolDecisions d;
  d.request = id;
  d.pool = pool_index;
  d.now = pool.now;
  d.static_pages = pool.static_pages;
  d.keys = std::span<const PageKey>(pool.keys.data(), pool.n);
  d.slot_of = std::span<const std::int32_t>(pool.slot_of.data(), pool.n);
  d.fetch_index = std::span<const std::uint32_t>(pool.fetch_index.data(), out.fetches);
  d.bypass_index = std::span<const std::uint32_t>(pool.bypass_index.data(), out.bypassed);
  d.victim_slot = std::span<const std::int32_t>(pool.victim_slot.data(), out.victims);
  d.victim_key = std::span<const PageKey>(pool.victim_key.data(), out.victims);
  d.hits = out.hits;
  return d;
}

const PolicyStats& Engine::request_stats(RequestId id) const { return impl_->get(id).stats; }

std::span<const PolicyStats> Engine::layer_stats() const { return impl_->layer_stats; }

const PolicyStats& Engine::total_stats() const { return impl_->total; }

MetadataReport Engine::metadata() const { return impl_->metadata; }

const std::string& Engine::decision_log() const { return impl_->log; }

std::string Engine::take_decision_log() {
  std::string taken;
  taken.swap(impl_->log);
  return taken;
}

void Engine::Impl::refresh_metadata(Request* r, const MetadataBytes& contribution) {
  if (r != nullptr) {
    live -= r->metadata;
    r->metadata = contribution;
    live += contribution;
  }
  MetadataBytes now = live;
  now.segments = std::uint64_t{segments.in_use()} * kSegmentEntryBytes << segment_pages_log2;
  raise_each(metadata.peak, now);
  metadata.current = now;
}

MetadataBytes Engine::Impl::contribution(const Request& r) {
  MetadataBytes m;
  for (const Pool& pool : r.pools) {
    m.directory += pool.directory.size() * kDirectoryEntryBytes;
    m.hash_table += pool.buckets.size() * kHashBucketBytes;
    m.slot_state += pool.view.extent * slot_bytes(r);
  }
  m.host_page_table = r.streams.size() *
                      std::uint64_t{pages_for_tokens(r.context_tokens, r.page_tokens_log2)} *
                      kHostAddressBytes;
  m.partition_offsets = r.offset_bytes;
  m.flat_page_table = r.streams.size() * std::uint64_t{r.max_pages} * kSegmentEntryBytes;
  return m;
}

void Engine::Impl::check_pool(const Request& r, RequestId id, std::uint32_t index, const Pool& pool,
                              std::vector<char>& owned) const {
  const auto fail = [&](const std::string& what) {
    throw InvariantError(fmt::format("request {} pool {}: {}", id, index, what));
  };
  const PoolView& v = pool.view;
  const SegmentPoolView& segs = segments.view();
  // Slots: each resident page is where the page table says, so no page is in two slots.
  std::uint32_t resident = 0;
  for (std::uint32_t s = 0; s < v.extent; ++s) {
    const PageKey key = v.slot_key[s];
    if (key == kNoPage) {
      if (v.slot_last_use[s] != kEmptyStamp) fail(fmt::format("empty slot {} has a last use", s));
      continue;
    }
    ++resident;
    if (key_stream(key) >= pool.streams || key_page(key) >= r.max_pages) {
      fail(fmt::format("slot {} holds a page outside the pool", s));
    }
    if (v.slot_last_use[s] == kEmptyStamp) {
      fail(
          fmt::format("slot {} holds a page but has the empty stamp as its last use (a last use "
                      "set to now - 1 at step 0 wraps to it)",
                      s));
    }
    if (v.slot_last_use[s] > r.now) {
      fail(fmt::format("slot {} was last used at step {}, after the pool's step {}", s,
                       v.slot_last_use[s], r.now));
    }
    if (page_table_lookup(v.table, segs, key) != static_cast<std::int32_t>(s)) {
      fail(fmt::format("slot {} holds {}:{} but the page table disagrees", s, key_stream(key),
                       key_page(key)));
    }
  }
  if (resident != v.resident) {
    fail(fmt::format("{} slots hold pages, resident says {}", resident, v.resident));
  }
  // Age counts: recounted from the slots at the step they were aged to.
  if (v.age_count != nullptr) {
    const std::uint32_t ring = v.age_ring_mask + 1;
    std::vector<std::uint32_t> expected(std::size_t{ring} + 2, 0);
    expected[ring + 1] = v.age_count[ring + 1];
    for (std::uint32_t s = 0; s < v.extent; ++s) {
      if (v.slot_key[s] != kNoPage)
        ++expected[age_count_entry(v, expected[ring + 1], v.slot_last_use[s])];
    }
    if (!std::equal(expected.begin(), expected.end(), v.age_count)) {
      fail("the age counts do not match the slots' last uses");
    }
  }
  // Block floors: each at most its block's least last_use + 1 (0 if it holds an empty slot).
  for (std::uint32_t b = 0; b < pool.block_floor.size(); ++b) {
    if (pool.block_floor[b] > exact_block_floor(v.slot_last_use + b * kFloorBlockSlots)) {
      fail(fmt::format("the floor of slots {}.. is above their least last use + 1",
                       b * kFloorBlockSlots));
    }
  }
  // The page table: owned segments, their counts, entries pointing back at their slots.
  std::uint64_t mapped = 0;
  const std::uint32_t pages_per_segment = 1u << segs.segment_pages_log2;
  for (std::uint32_t k = 0; k < v.table.streams; ++k) {
    for (std::uint32_t d = 0; d < v.table.entries_per_stream; ++d) {
      const std::uint32_t h = v.table.directory[std::size_t{k} * v.table.entries_per_stream + d];
      if (h == kNoSegment) continue;
      if (h >= segs.capacity || owned[h]) fail(fmt::format("segment {} owned twice or invalid", h));
      owned[h] = 1;
      std::uint32_t used = 0;
      for (std::uint32_t e = 0; e < pages_per_segment; ++e) {
        const std::int32_t slot = segs.entries[(std::size_t{h} << segs.segment_pages_log2) + e];
        if (slot == kAbsentSlot) continue;
        ++used;
        if (slot < 0 || static_cast<std::uint32_t>(slot) >= v.extent ||
            v.slot_key[slot] != make_page_key(k, d * pages_per_segment + e)) {
          fail(fmt::format("the page table maps {}:{} to slot {}, which holds another page", k,
                           d * pages_per_segment + e, slot));
        }
      }
      if (used == 0 || used != segs.used[h]) {
        fail(fmt::format("segment {} counts {} pages, holds {}", h, segs.used[h], used));
      }
      mapped += used;
    }
  }
  if (page_table_hashed(v.table)) {
    // Hashed: every used bucket holds a resident slot that its key's probe reaches.
    if (v.table.slot_key != v.slot_key || v.table.buckets != pool.buckets.data() ||
        v.table.bucket_count != pool.buckets.size() || v.table.bucket_count <= v.extent) {
      fail("the hashed table's view does not match the pool");
    }
    for (std::uint32_t b = 0; b < v.table.bucket_count; ++b) {
      const std::int32_t slot = v.table.buckets[b];
      if (slot == kAbsentSlot) continue;
      ++mapped;
      if (slot < 0 || static_cast<std::uint32_t>(slot) >= v.extent || v.slot_key[slot] == kNoPage ||
          hashed_find(v.table, v.slot_key[slot]) != b) {
        fail(fmt::format("hashed bucket {} holds slot {}, which is empty or out of its probe", b,
                         slot));
      }
    }
  }
  if (mapped != v.resident) fail("the page table and the slots hold different page counts");
  // Capacity, honoured as soon as pinned pages allow.
  const StepOutput& out = pool.out;
  if (v.resident > v.capacity && v.resident > out.hits) {
    fail(fmt::format("{} pages resident over a capacity of {}", v.resident, v.capacity));
  }
  // The last step: pinned (selected) pages were not evicted; every selected page accounted for.
  if (out.hits + out.fetches + out.bypassed != pool.n) {
    fail("hits + fetches + bypassed != selected");
  }
  for (std::uint32_t e = 0; e < out.victims; ++e) {
    if (std::binary_search(pool.keys.begin(), pool.keys.begin() + pool.n, out.victim_key[e])) {
      fail(fmt::format("slot {} was evicted while pinned", out.victim_slot[e]));
    }
  }
  if (out.bypassed > 0 && out.hits + out.fetches < std::min(v.capacity, pool.n)) {
    fail("pages were bypassed while the pool had room");
  }
}

void Engine::check_invariants() const {
  const SegmentPoolView& segs = impl_->segments.view();
  std::vector<char> owned(segs.capacity, 0);
  for (RequestId id = 0; id < impl_->requests.size(); ++id) {
    if (!impl_->requests[id]) continue;
    const Request& r = *impl_->requests[id];
    for (std::uint32_t p = 0; p < r.pools.size(); ++p)
      impl_->check_pool(r, id, p, r.pools[p], owned);
  }
  std::uint32_t owned_count = 0;
  for (const char o : owned) owned_count += o ? 1u : 0u;
  for (std::uint32_t f = 0; f < segs.free_count; ++f) {
    const std::uint32_t h = segs.free_stack[f];
    if (h >= segs.capacity || owned[h]) {
      throw InvariantError(fmt::format("segment {} is both free and owned, or invalid", h));
    }
    const std::int32_t* first = segs.entries + (std::uint64_t{h} << segs.segment_pages_log2);
    for (std::uint32_t i = 0; i < (1u << segs.segment_pages_log2); ++i) {
      if (first[i] != kAbsentSlot) {
        throw InvariantError(fmt::format("free segment {} still maps entry {}", h, i));
      }
    }
    owned[h] = 1;
  }
  if (owned_count + segs.free_count != segs.capacity) {
    throw InvariantError("the segment pool lost or duplicated segments");
  }
}

}  // namespace spin::policy
