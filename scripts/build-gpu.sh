#!/usr/bin/env bash
# Builds build-gpu/: a portable spin (static libstdc++, yaml-cpp, Boost, zstd, cudart) for the
# GPU machine (H100/H200, sm_90), which has the CUDA driver but not our Debian libraries.
# Run it here, then pass build-gpu in the device tool's `carry` and run there, e.g.
#   build-gpu/spin gpu info && build-gpu/tests/spin_gpu_tests
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-gpu MESON_ARGS="-Dportable=true -Dcuda=enabled -Dgpu_sm=90" scripts/bootstrap.sh
