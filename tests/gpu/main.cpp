// The gpu suite: kernels against CPU references on a real GPU. It runs only on the GPU machine
// (tests/README.md) and fails loudly anywhere else, so a missing GPU is never a silent pass.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>

#include "exec/device.h"

int main(int argc, char** argv) {
  char why[256] = "";
  if (spin::exec::device_count(why, sizeof(why)) == 0) {
    std::cerr << "gpu suite: FAILED: no CUDA device is visible (" << (why[0] ? why : "count is 0")
              << "). The gpu suite runs only on the GPU machine; see tests/README.md.\n";
    return 1;
  }
  return Catch::Session().run(argc, argv);
}
