#!/usr/bin/env bash
# Builds build-gpu/: a portable spin (static libstdc++, yaml-cpp, Boost, zstd, cudart) for the
# GPU machine (H100/H200, sm_90), which has the CUDA driver but not our Debian libraries.
# Run it here, copy the binaries into a small ignored folder (build-gpu/ is over the device
# tool's 64 MiB carry limit) and carry that (docs/gpu-machine.md), e.g.
#   mkdir -p ab && cp build-gpu/spin build-gpu/tests/spin_gpu_tests ab/
#   (there) ab/spin gpu info && ab/spin_gpu_tests
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-gpu MESON_ARGS="-Dportable=true -Dcuda=enabled -Dgpu_sm=90" scripts/bootstrap.sh
