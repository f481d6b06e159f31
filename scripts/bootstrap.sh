#!/usr/bin/env bash
# Installs what spin needs (Debian packages) and builds it into build/. Idempotent: packages that
# are present are not reinstalled, an existing build/ is reused and rebuilt incrementally.
#
#   scripts/bootstrap.sh              # install + configure + build build/
#   BUILD_DIR=b MESON_ARGS="-Dcuda=disabled" scripts/bootstrap.sh
#
# The CUDA executor is built when nvcc is found (on PATH or in /usr/local/cuda/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  meson ninja-build pkg-config g++ git
  libboost-program-options-dev libyaml-cpp-dev libeigen3-dev libfmt-dev nlohmann-json3-dev
  catch2 libzstd-dev libxxhash-dev clang-format libopenmpi-dev openmpi-bin
  python3 python3-matplotlib python3-pandas python3-torch
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi

BUILD_DIR=${BUILD_DIR:-build}
# shellcheck source=scripts/run_logged.sh
. scripts/run_logged.sh
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # CUDA compiles through scripts/nvcc-deps.sh, which adds the dependency files that make header
  # edits rebuild .cu objects; a machine file in the build folder names it (absolute path).
  native_file=()
  if command -v nvcc >/dev/null; then
    mkdir -p "$BUILD_DIR"
    printf "[binaries]\ncuda = '%s'\n" "$PWD/scripts/nvcc-deps.sh" >"$BUILD_DIR/nvcc-deps.ini"
    native_file=(--native-file "$BUILD_DIR/nvcc-deps.ini")
  fi
  # shellcheck disable=SC2086
  run_logged meson setup "$BUILD_DIR" "${native_file[@]}" ${MESON_ARGS:-}
fi
run_logged ninja -C "$BUILD_DIR"
echo "bootstrap: built $BUILD_DIR/spin" >&2
