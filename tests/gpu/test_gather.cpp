// The gather-copy kernel against a byte-for-byte CPU check: fresh random pages and lists, the
// destination poisoned before each run, holes (kSkipEntry) that must move nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "exec/gather.h"
#include "exec/memory.h"

namespace {

using spin::exec::DeviceArray;
using spin::exec::GatherDirection;
using spin::exec::GatherParams;
using spin::exec::HbmPagePool;
using spin::exec::HostKvStore;
using spin::exec::kSkipEntry;

constexpr std::uint8_t kPoison = 0xA5;

void fill_random(std::uint8_t* bytes, std::size_t n, std::mt19937_64& rng) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(bytes + i, &v, 8);
  }
  for (; i < n; ++i) bytes[i] = static_cast<std::uint8_t>(rng());
}

// A fetch list of `count` entries: distinct destinations, random sources, about 1 in 8 a hole.
struct FetchList {
  std::vector<std::uint32_t> host_page;
  std::vector<std::uint32_t> slot;
};

FetchList make_list(std::uint32_t count, std::uint32_t host_pages, std::uint32_t slots,
                    bool distinct_slots, std::mt19937_64& rng) {
  std::vector<std::uint32_t> slot_order(slots), host_order(host_pages);
  std::iota(slot_order.begin(), slot_order.end(), 0u);
  std::iota(host_order.begin(), host_order.end(), 0u);
  std::shuffle(slot_order.begin(), slot_order.end(), rng);
  std::shuffle(host_order.begin(), host_order.end(), rng);
  FetchList list;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint32_t h =
        distinct_slots ? static_cast<std::uint32_t>(rng() % host_pages) : host_order[i];
    std::uint32_t s = distinct_slots ? slot_order[i] : static_cast<std::uint32_t>(rng() % slots);
    if (rng() % 8 == 0) (rng() % 2 == 0 ? h : s) = kSkipEntry;
    list.host_page.push_back(h);
    list.slot.push_back(s);
  }
  return list;
}

}  // namespace

TEST_CASE("gather: host pages land in their HBM slots byte for byte, holes move nothing",
          "[gpu][gather]") {
  std::mt19937_64 rng(11);
  for (const std::uint64_t page_bytes :
       {16ull, 48ull, 2048ull, 8208ull, 40960ull, 131072ull, 524288ull}) {
    const std::uint32_t host_pages = static_cast<std::uint32_t>(
        std::max<std::uint64_t>(8, (std::uint64_t{48} << 20) / page_bytes / 2));
    const std::uint32_t slots = host_pages / 2 + 3;
    HostKvStore host(1, host_pages, page_bytes);
    HbmPagePool hbm(slots, page_bytes);
    for (int run = 0; run < 2; ++run) {  // fresh inputs each run
      INFO("page_bytes " << page_bytes << " run " << run);
      fill_random(host.host_data(), host.bytes(), rng);
      const std::uint32_t count = slots - static_cast<std::uint32_t>(rng() % 3);
      const FetchList list = make_list(count, host_pages, slots, true, rng);
      const DeviceArray<std::uint32_t> d_host(std::span<const std::uint32_t>(list.host_page));
      const DeviceArray<std::uint32_t> d_slot(std::span<const std::uint32_t>(list.slot));
      hbm.fill(kPoison);
      spin::exec::launch_gather(GatherParams{host.device_data(), hbm.data(), page_bytes,
                                             d_host.data(), d_slot.data(), count,
                                             GatherDirection::kHostToDevice});
      SPIN_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<std::uint8_t> out(hbm.bytes());
      SPIN_CUDA_CHECK(cudaMemcpy(out.data(), hbm.data(), out.size(), cudaMemcpyDeviceToHost));
      std::vector<std::int64_t> source_of(slots, -1);
      for (std::uint32_t i = 0; i < count; ++i) {
        if (list.host_page[i] != kSkipEntry && list.slot[i] != kSkipEntry) {
          source_of[list.slot[i]] = list.host_page[i];
        }
      }
      std::uint32_t bad = 0;
      for (std::uint32_t s = 0; s < slots; ++s) {
        const std::uint8_t* got = out.data() + s * page_bytes;
        if (source_of[s] >= 0) {
          bad += std::memcmp(got, host.host_page(static_cast<std::uint32_t>(source_of[s])),
                             page_bytes) != 0;
        } else {
          bad += std::any_of(got, got + page_bytes, [](std::uint8_t b) { return b != kPoison; });
        }
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("gather: offload copies HBM slots to their host pages byte for byte", "[gpu][gather]") {
  std::mt19937_64 rng(12);
  for (const std::uint64_t page_bytes : {32ull, 2048ull, 12304ull, 65536ull, 524288ull}) {
    const std::uint32_t slots = static_cast<std::uint32_t>(
        std::max<std::uint64_t>(8, (std::uint64_t{32} << 20) / page_bytes / 2));
    const std::uint32_t host_pages = slots + 5;
    HostKvStore host(1, host_pages, page_bytes);
    HbmPagePool hbm(slots, page_bytes);
    std::vector<std::uint8_t> slot_bytes(hbm.bytes());
    for (int run = 0; run < 2; ++run) {
      INFO("page_bytes " << page_bytes << " run " << run);
      fill_random(slot_bytes.data(), slot_bytes.size(), rng);
      SPIN_CUDA_CHECK(
          cudaMemcpy(hbm.data(), slot_bytes.data(), slot_bytes.size(), cudaMemcpyHostToDevice));
      std::memset(host.host_data(), kPoison, host.bytes());
      const std::uint32_t count = slots - static_cast<std::uint32_t>(rng() % 3);
      const FetchList list = make_list(count, host_pages, slots, false, rng);
      const DeviceArray<std::uint32_t> d_host(std::span<const std::uint32_t>(list.host_page));
      const DeviceArray<std::uint32_t> d_slot(std::span<const std::uint32_t>(list.slot));
      spin::exec::launch_gather(GatherParams{host.device_data(), hbm.data(), page_bytes,
                                             d_host.data(), d_slot.data(), count,
                                             GatherDirection::kDeviceToHost});
      SPIN_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<std::int64_t> source_of(host_pages, -1);
      for (std::uint32_t i = 0; i < count; ++i) {
        if (list.host_page[i] != kSkipEntry && list.slot[i] != kSkipEntry) {
          source_of[list.host_page[i]] = list.slot[i];
        }
      }
      std::uint32_t bad = 0;
      for (std::uint32_t h = 0; h < host_pages; ++h) {
        const std::uint8_t* got = host.host_page(h);
        if (source_of[h] >= 0) {
          bad += std::memcmp(got, slot_bytes.data() + source_of[h] * page_bytes, page_bytes) != 0;
        } else {
          bad += std::any_of(got, got + page_bytes, [](std::uint8_t b) { return b != kPoison; });
        }
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("gather: an explicit small grid still covers the whole list", "[gpu][gather]") {
  std::mt19937_64 rng(13);
  const std::uint64_t page_bytes = 4096;
  const std::uint32_t pages = 3000;
  HostKvStore host(3, pages / 3, page_bytes);
  HbmPagePool hbm(pages, page_bytes);
  fill_random(host.host_data(), host.bytes(), rng);
  const FetchList list = make_list(pages, pages, pages, true, rng);
  const DeviceArray<std::uint32_t> d_host(std::span<const std::uint32_t>(list.host_page));
  const DeviceArray<std::uint32_t> d_slot(std::span<const std::uint32_t>(list.slot));
  hbm.fill(kPoison);
  spin::exec::launch_gather(GatherParams{host.device_data(), hbm.data(), page_bytes, d_host.data(),
                                         d_slot.data(), pages, GatherDirection::kHostToDevice},
                            nullptr, 1);
  SPIN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint8_t> out(hbm.bytes());
  SPIN_CUDA_CHECK(cudaMemcpy(out.data(), hbm.data(), out.size(), cudaMemcpyDeviceToHost));
  std::uint32_t bad = 0;
  for (std::uint32_t i = 0; i < pages; ++i) {
    const std::uint32_t h = list.host_page[i], s = list.slot[i];
    if (h == kSkipEntry || s == kSkipEntry) continue;
    bad += std::memcmp(out.data() + s * page_bytes, host.host_page(h), page_bytes) != 0;
  }
  CHECK(bad == 0);
  CHECK(host.page_index(2, 5) == 2 * (pages / 3) + 5);
}

TEST_CASE("gather: offsets past 2^32 units on both sides (a 4 GiB host store, a 64 GiB pool)",
          "[gpu][gather]") {
  // Host pages straddle 4 GiB (2^32 bytes) and HBM slots 64 GiB (2^32 of the kernel's 16-byte
  // words). An offset computed in 32 bits lands on a page near the start: pages 0–11 of both sides
  // are checked to stay as they were unless listed, and every listed destination to hold its
  // source.
  std::mt19937_64 rng(14);
  const std::uint64_t page_bytes = 524288;
  const auto mark_of = [&](unsigned log2_bytes) {
    return static_cast<std::uint32_t>((std::uint64_t{1} << log2_bytes) / page_bytes);
  };
  const std::uint32_t host_mark = mark_of(32), hbm_mark = mark_of(36);
  HostKvStore host(1, host_mark + 8, page_bytes);
  HbmPagePool hbm(hbm_mark + 8, page_bytes);
  // The pages of interest of one side: mark−4 … mark+7, then 0–11.
  const auto around = [](std::uint32_t mark) {
    std::vector<std::uint32_t> pages(24);
    std::iota(pages.begin(), pages.begin() + 12, mark - 4);
    std::iota(pages.begin() + 12, pages.end(), 0u);
    return pages;
  };
  const std::vector<std::uint32_t> host_pages = around(host_mark), slots = around(hbm_mark);
  std::vector<std::uint8_t> page(page_bytes);
  const std::vector<std::uint8_t> poison(page_bytes, kPoison);
  for (const GatherDirection direction :
       {GatherDirection::kHostToDevice, GatherDirection::kDeviceToHost}) {
    const bool to_device = direction == GatherDirection::kHostToDevice;
    INFO((to_device ? "host to device" : "device to host"));
    const auto write_page = [&](bool on_host, std::uint32_t i, const std::uint8_t* bytes) {
      if (on_host) {
        std::memcpy(host.host_page(i), bytes, page_bytes);
      } else {
        SPIN_CUDA_CHECK(cudaMemcpy(hbm.slot(i), bytes, page_bytes, cudaMemcpyHostToDevice));
      }
    };
    for (const std::uint32_t h : host_pages) write_page(true, h, poison.data());
    for (const std::uint32_t s : slots) write_page(false, s, poison.data());
    // Sources: the source side's 12 high pages, random; destinations: 12 of the other side's
    // high pages and 0–3, shuffled.
    const std::vector<std::uint32_t>& source_side = to_device ? host_pages : slots;
    const std::vector<std::uint32_t>& destination_side = to_device ? slots : host_pages;
    const std::vector<std::uint32_t> sources(source_side.begin(), source_side.begin() + 12);
    std::vector<std::uint32_t> destinations(destination_side.begin(),
                                            destination_side.begin() + 16);
    std::shuffle(destinations.begin(), destinations.end(), rng);
    destinations.resize(sources.size());
    std::vector<std::vector<std::uint8_t>> source(sources.size(),
                                                  std::vector<std::uint8_t>(page_bytes));
    for (std::size_t e = 0; e < sources.size(); ++e) {
      fill_random(source[e].data(), page_bytes, rng);
      write_page(to_device, sources[e], source[e].data());
    }
    const DeviceArray<std::uint32_t> d_host{
        std::span<const std::uint32_t>(to_device ? sources : destinations)};
    const DeviceArray<std::uint32_t> d_slot{
        std::span<const std::uint32_t>(to_device ? destinations : sources)};
    spin::exec::launch_gather(GatherParams{host.device_data(), hbm.data(), page_bytes,
                                           d_host.data(), d_slot.data(),
                                           static_cast<std::uint32_t>(sources.size()), direction});
    SPIN_CUDA_CHECK(cudaDeviceSynchronize());
    std::uint32_t bad = 0;
    for (const std::uint32_t i : destination_side) {
      const std::uint8_t* got = host.host_page(i);
      if (to_device) {
        SPIN_CUDA_CHECK(cudaMemcpy(page.data(), hbm.slot(i), page_bytes, cudaMemcpyDeviceToHost));
        got = page.data();
      }
      const auto e = std::find(destinations.begin(), destinations.end(), i) - destinations.begin();
      const std::uint8_t* want =
          e < static_cast<std::ptrdiff_t>(destinations.size()) ? source[e].data() : poison.data();
      bad += std::memcmp(got, want, page_bytes) != 0;
    }
    CHECK(bad == 0);
  }
}
