#include "exec/gpu_residency.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "common/error.h"
#include "common/policy/partition_map.h"

namespace spin::exec {
namespace {

// Grows a per-step device array to at least n elements (never shrinks).
template <class T>
void ensure(DeviceArray<T>& array, std::size_t n) {
  if (array.size() < n) array = DeviceArray<T>(std::max<std::size_t>(n, array.size() * 2));
}

template <class T>
void upload(DeviceArray<T>& array, const std::vector<T>& host) {
  ensure(array, std::max<std::size_t>(host.size(), 1));
  array.upload(std::span<const T>(host));
}

}  // namespace

GpuResidency::GpuResidency(std::span<const GpuPoolSpec> pools, std::uint32_t segment_pages_log2,
                           Staging staging)
    : specs_(pools.begin(), pools.end()),
      staging_(staging),
      segment_pages_log2_(segment_pages_log2) {
  if (segment_pages_log2 > 24) throw std::invalid_argument("segment_pages_log2 > 24");
  std::uint64_t slots = 0, directory = 0, segments = 0;
  std::uint32_t max_extent = 0;
  for (const GpuPoolSpec& s : specs_) {
    if (s.policy.kind == policy::PolicyKind::kBelady) {
      throw std::invalid_argument(
          "gpu residency: belady needs the future (replay and simulator only)");
    }
    if (s.capacity > s.max_extent || s.streams == 0 || s.directory_entries == 0) {
      throw std::invalid_argument(
          "gpu residency: a pool needs streams, directory entries and "
          "capacity <= max_extent");
    }
    if (s.policy.kind == policy::PolicyKind::kBucketedLru &&
        (s.policy.bucket_shift >= 32 || s.policy.buckets == 0)) {
      throw std::invalid_argument(
          fmt::format("gpu residency: buckets {} and bucket shift {}: expected >= 1 and < 32",
                      s.policy.buckets, s.policy.bucket_shift));
    }
    any_aux_ = any_aux_ || policy::policy_uses_aux(s.policy.kind);
    slots += s.max_extent;
    directory += std::uint64_t{s.streams} * s.directory_entries;
    segments +=
        std::min<std::uint64_t>(std::uint64_t{s.streams} * s.directory_entries, s.max_extent) +
        s.max_extent;
    max_extent = std::max(max_extent, s.max_extent);
  }
  if (slots > 0x7FFFFFFFu || directory > 0xFFFFFFFFu ||
      (segments << segment_pages_log2) > (std::uint64_t{1} << 34)) {
    throw std::invalid_argument(
        fmt::format("gpu residency: too large ({} slots, {} segments)", slots, segments));
  }
  // Initial state: empty slots, empty directories, every segment free and absent.
  slot_key_ = DeviceArray<policy::PageKey>(std::max<std::uint64_t>(slots, 1));
  slot_key_.fill_bytes(0xFF);  // kNoPage
  slot_last_use_ = DeviceArray<std::uint32_t>(std::max<std::uint64_t>(slots, 1));
  slot_last_use_.fill_bytes(0xFF);  // kEmptyStamp
  if (any_aux_) {
    slot_aux_ = DeviceArray<std::uint32_t>(slots);
    slot_aux_.fill_bytes(0);
  }
  directory_ = DeviceArray<std::uint32_t>(directory);
  directory_.fill_bytes(0xFF);  // kNoSegment
  seg_entries_ = DeviceArray<std::int32_t>(segments << segment_pages_log2);
  seg_entries_.fill_bytes(0xFF);  // kAbsentSlot
  seg_used_ = DeviceArray<std::uint32_t>(segments);
  seg_used_.fill_bytes(0);
  seg_free_ = DeviceArray<std::uint32_t>(segments);

  std::vector<policy::SegmentPoolView> seg_views;
  std::vector<policy::PolicyParams> policies;
  std::vector<std::uint32_t> free_stack(segments);
  std::uint64_t slot_at = 0, dir_at = 0, seg_at = 0;
  std::uint32_t stream_at = 0, victim_at = 0;
  for (const GpuPoolSpec& s : specs_) {
    const std::uint32_t pool_segments = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(std::uint64_t{s.streams} * s.directory_entries, s.max_extent) +
        s.max_extent);
    policy::PoolView v{};
    v.extent = s.capacity;
    v.capacity = s.capacity;
    v.resident = 0;
    v.slot_key = slot_key_.data() + slot_at;
    v.slot_last_use = slot_last_use_.data() + slot_at;
    v.slot_aux = policy::policy_uses_aux(s.policy.kind) ? slot_aux_.data() + slot_at : nullptr;
    v.table = policy::DirectoryView{directory_.data() + dir_at, s.streams, s.directory_entries};
    views_.push_back(v);
    // The free stack as the engine fills it: the top is the lowest handle.
    for (std::uint32_t i = 0; i < pool_segments; ++i)
      free_stack[seg_at + i] = pool_segments - 1 - i;
    seg_views.push_back(policy::SegmentPoolView{
        seg_entries_.data() + (seg_at << segment_pages_log2), seg_used_.data() + seg_at,
        seg_free_.data() + seg_at, pool_segments, pool_segments, segment_pages_log2});
    policies.push_back(s.policy);
    pool_first_stream_.push_back(stream_at);
    victim_offsets_.push_back(victim_at);
    slot_bases_.push_back(s.slot_base);
    slot_at += s.max_extent;
    dir_at += std::uint64_t{s.streams} * s.directory_entries;
    seg_at += pool_segments;
    stream_at += s.streams;
    victim_at += s.max_extent;
  }
  pool_first_stream_.push_back(stream_at);
  streams_ = stream_at;
  seg_free_.upload(std::span<const std::uint32_t>(free_stack));
  d_views_ = DeviceArray<policy::PoolView>(std::span<const policy::PoolView>(views_));
  d_segments_ =
      DeviceArray<policy::SegmentPoolView>(std::span<const policy::SegmentPoolView>(seg_views));
  d_policy_ = DeviceArray<policy::PolicyParams>(std::span<const policy::PolicyParams>(policies));
  d_first_stream_ = DeviceArray<std::uint32_t>(std::span<const std::uint32_t>(pool_first_stream_));
  d_victim_offsets_ = DeviceArray<std::uint32_t>(std::span<const std::uint32_t>(victim_offsets_));
  d_slot_base_ = DeviceArray<std::uint32_t>(std::span<const std::uint32_t>(slot_bases_));
  victim_slot_ = DeviceArray<std::int32_t>(std::max<std::uint32_t>(victim_at, 1));
  victim_key_ = DeviceArray<policy::PageKey>(std::max<std::uint32_t>(victim_at, 1));
  d_counts_ = DeviceArray<PoolStepCounts>(specs_.size());
  h_victim_slot_.resize(victim_at);
  h_victim_key_.resize(victim_at);
  counts_.resize(specs_.size());
  max_extent_ = max_extent;
  stage_limit_bytes_ = residency_stage_limit_bytes();
  views_dirty_ = false;
}

void GpuResidency::set_capacity(std::uint32_t pool, std::uint32_t capacity) {
  if (capacity > specs_.at(pool).max_extent) {
    throw std::invalid_argument(fmt::format("gpu residency: pool {} capacity {} over its {} slots",
                                            pool, capacity, specs_[pool].max_extent));
  }
  specs_[pool].capacity = capacity;
  views_dirty_ = true;
}

void GpuResidency::plan(std::span<const std::uint32_t> now,
                        std::span<const StreamSelection> selections,
                        std::uint32_t scratch_slot_base) {
  if (now.size() != specs_.size() || selections.size() != streams_) {
    throw std::invalid_argument(
        fmt::format("gpu residency: plan got {} pools and {} streams, "
                    "expected {} and {}",
                    now.size(), selections.size(), specs_.size(), streams_));
  }
  fence_.wait();       // the last run may still read the inputs and views uploaded below
  if (views_dirty_) {  // capacity edits: keep the device's resident counts
    d_views_.download(std::span<policy::PoolView>(views_));
    for (std::size_t p = 0; p < specs_.size(); ++p) {
      views_[p].capacity = specs_[p].capacity;
      views_[p].extent = std::max(views_[p].extent, specs_[p].capacity);
    }
    d_views_.upload(std::span<const policy::PoolView>(views_));
    views_dirty_ = false;
  }
  h_now_.assign(now.begin(), now.end());
  // CSR of ids, page bounds, maps (variable offsets moved to the device).
  std::vector<std::uint32_t> id_offsets{0}, ids, offsets, host_base;
  std::vector<policy::PartitionMapView> maps;
  std::vector<policy::StaticRegion> regions;
  std::vector<std::size_t> offsets_at;
  h_page_offsets_.assign(1, 0);
  std::uint32_t pool = 0;
  for (std::size_t i = 0; i < selections.size(); ++i) {
    const StreamSelection& s = selections[i];
    while (i >= pool_first_stream_[pool + 1]) ++pool;
    // A page past the stream's directory would index the next stream's row (or past the end).
    const std::uint64_t pages =
        policy::pages_for_tokens(s.map.stored_tokens, s.map.page_tokens_log2);
    if (pages > std::uint64_t{specs_[pool].directory_entries} << segment_pages_log2_) {
      throw std::invalid_argument(fmt::format(
          "gpu residency: stream {} has {} pages, more than its pool's {} directory entries of "
          "{} pages",
          i, pages, specs_[pool].directory_entries, 1u << segment_pages_log2_));
    }
    ids.insert(ids.end(), s.ids.begin(), s.ids.end());
    id_offsets.push_back(static_cast<std::uint32_t>(ids.size()));
    std::uint64_t bound = 0;
    for (const std::uint32_t id : s.ids) {
      const policy::PageRange r = policy::partition_pages(s.map, id);
      bound += r.end - r.begin;
    }
    bound = std::min<std::uint64_t>(
        bound, policy::pages_for_tokens(s.map.stored_tokens, s.map.page_tokens_log2));
    const std::uint64_t total = h_page_offsets_.back() + bound;
    if (total > 0x7FFFFFFFu) throw std::invalid_argument("gpu residency: over 2^31 pages a step");
    h_page_offsets_.push_back(static_cast<std::uint32_t>(total));
    maps.push_back(s.map);
    offsets_at.push_back(offsets.size());
    if (s.map.kind == policy::PartitionKind::kVariable) {
      offsets.insert(offsets.end(), s.map.offsets, s.map.offsets + s.map.num_partitions + 1);
    }
    regions.push_back(s.region);
    host_base.push_back(s.host_base);
  }
  upload(d_offsets_, offsets);
  for (std::size_t s = 0; s < maps.size(); ++s) {
    maps[s].offsets = maps[s].kind == policy::PartitionKind::kVariable
                          ? d_offsets_.data() + offsets_at[s]
                          : nullptr;
  }
  upload(d_now_, h_now_);
  upload(d_maps_, maps);
  upload(d_regions_, regions);
  upload(d_id_offsets_, id_offsets);
  upload(d_ids_, ids);
  upload(d_page_offsets_, h_page_offsets_);
  upload(d_host_base_, host_base);
  list_size_ = h_page_offsets_.back();
  const std::size_t list = std::max<std::size_t>(list_size_, 1);
  ensure(d_stream_pages_, std::max<std::size_t>(streams_, 1));
  ensure(d_stream_static_, std::max<std::size_t>(streams_, 1));
  ensure(pages_, list);
  ensure(keys_, list);
  ensure(slot_of_, list);
  ensure(fetch_index_, list);
  ensure(bypass_index_, list);
  ensure(fetch_host_page_, list);
  ensure(fetch_slot_, list);

  ResidencyParams& p = params_;
  p.pools = static_cast<std::uint32_t>(specs_.size());
  p.streams = streams_;
  p.pool_views = d_views_.data();
  p.segment_pools = d_segments_.data();
  p.policy = d_policy_.data();
  p.pool_now = d_now_.data();
  p.pool_first_stream = d_first_stream_.data();
  p.maps = d_maps_.data();
  p.regions = d_regions_.data();
  p.id_offsets = d_id_offsets_.data();
  p.ids = d_ids_.data();
  p.page_offsets = d_page_offsets_.data();
  p.pages = pages_.data();
  p.stream_pages = d_stream_pages_.data();
  p.stream_static = d_stream_static_.data();
  p.keys = keys_.data();
  p.slot_of = slot_of_.data();
  p.fetch_index = fetch_index_.data();
  p.bypass_index = bypass_index_.data();
  p.victim_offsets = d_victim_offsets_.data();
  p.victim_slot = victim_slot_.data();
  p.victim_key = victim_key_.data();
  p.counts = d_counts_.data();
  p.stream_host_base = d_host_base_.data();
  p.pool_slot_base = d_slot_base_.data();
  p.scratch_slot_base = scratch_slot_base;
  p.fetch_host_page = fetch_host_page_.data();
  p.fetch_slot = fetch_slot_.data();
  // Staging: the largest choice that fits and keeps every pool running at once (a pool's step
  // is a chain of barriers, so pools running side by side matter more than faster memory).
  std::uint32_t most_keys = 0;
  for (std::size_t q = 0; q < specs_.size(); ++q) {
    most_keys = std::max(most_keys, h_page_offsets_[pool_first_stream_[q + 1]] -
                                        h_page_offsets_[pool_first_stream_[q]]);
  }
  const auto fits = [&](std::uint32_t extent, std::uint32_t keys) {
    const std::uint64_t bytes = residency_shared_bytes(extent, any_aux_, keys);
    return bytes <= stage_limit_bytes_ && specs_.size() <= residency_concurrent_blocks(bytes);
  };
  p.stage_aux = any_aux_ ? 1 : 0;
  p.stage_extent = 0;
  p.stage_keys = 0;
  if (staging_ == Staging::kSelectionAndSlots && max_extent_ > 0 && fits(max_extent_, most_keys)) {
    p.stage_extent = max_extent_;
    p.stage_keys = most_keys;
  } else if (staging_ != Staging::kNone && most_keys > 0 && fits(0, most_keys)) {
    p.stage_keys = most_keys;
  }
}

void GpuResidency::run(CUstream_st* stream) {
  launch_residency(params_, stream);
  fence_.record(stream);
}

void GpuResidency::download() {
  SPIN_CUDA_CHECK(cudaDeviceSynchronize());
  d_counts_.download(std::span<PoolStepCounts>(counts_));
  h_keys_.resize(list_size_);
  h_slot_of_.resize(list_size_);
  h_fetch_index_.resize(list_size_);
  h_bypass_index_.resize(list_size_);
  h_fetch_host_page_.resize(list_size_);
  h_fetch_slot_.resize(list_size_);
  keys_.download(std::span<policy::PageKey>(h_keys_));
  slot_of_.download(std::span<std::int32_t>(h_slot_of_));
  fetch_index_.download(std::span<std::uint32_t>(h_fetch_index_));
  bypass_index_.download(std::span<std::uint32_t>(h_bypass_index_));
  fetch_host_page_.download(std::span<std::uint32_t>(h_fetch_host_page_));
  fetch_slot_.download(std::span<std::uint32_t>(h_fetch_slot_));
  victim_slot_.download(std::span<std::int32_t>(h_victim_slot_));
  victim_key_.download(std::span<policy::PageKey>(h_victim_key_));
}

policy::PoolDecisions GpuResidency::decisions(std::uint32_t pool, std::uint64_t request,
                                              std::uint32_t pool_label) const {
  const PoolStepCounts& c = counts_.at(pool);
  if (c.status != static_cast<std::uint32_t>(policy::StepStatus::kOk)) {
    throw InvariantError(
        fmt::format("residency kernel: the step of pool {} failed: {}", pool,
                    policy::step_status_name(static_cast<policy::StepStatus>(c.status))));
  }
  const std::size_t region = h_page_offsets_[pool_first_stream_[pool]];
  const std::size_t victims = victim_offsets_[pool];
  policy::PoolDecisions d;
  d.request = request;
  d.pool = pool_label;
  d.now = h_now_[pool];
  d.static_pages = c.static_pages;
  d.keys = std::span<const policy::PageKey>(h_keys_.data() + region, c.n);
  d.slot_of = std::span<const std::int32_t>(h_slot_of_.data() + region, c.n);
  d.fetch_index = std::span<const std::uint32_t>(h_fetch_index_.data() + region, c.fetches);
  d.bypass_index = std::span<const std::uint32_t>(h_bypass_index_.data() + region, c.bypassed);
  d.victim_slot = std::span<const std::int32_t>(h_victim_slot_.data() + victims, c.victims);
  d.victim_key = std::span<const policy::PageKey>(h_victim_key_.data() + victims, c.victims);
  d.hits = c.hits;
  return d;
}

}  // namespace spin::exec
