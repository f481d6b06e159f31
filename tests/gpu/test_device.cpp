#include <catch2/catch.hpp>

#include <vector>

#include "exec/device.h"

TEST_CASE("device: the card is sm_90 with mapped host memory", "[gpu]") {
  const auto d = spin::exec::query_device(0);
  INFO(d.name);
  CHECK(d.cc_major == 9);
  CHECK(d.can_map_host_memory == 1);
  CHECK(d.hbm_bytes > (std::size_t{60} << 30));
}

TEST_CASE("device: a kernel built for sm_90 runs and writes every element", "[gpu]") {
  const int n = 100003;
  std::vector<std::int64_t> out(n, -7);
  spin::exec::run_probe_kernel(0, out.data(), n);
  for (int i = 0; i < n; ++i) {
    if (out[i] != static_cast<std::int64_t>(i) * i + 1) FAIL("element " << i << " is " << out[i]);
  }
}
