#!/usr/bin/env bash
# Builds the spin binary with profile-guided optimisation (GCC's -fprofile-generate, then
# -fprofile-use, through Meson's b_pgo) into BUILD_DIR, for long studies and the speed benchmarks.
# An instrumented build runs a fixed training set on one thread (the policy core's replay
# benchmark, a small simulation pulling from the trace generator, the bundled default job and a
# replay of the bundled trace), then the same folder is rebuilt with that profile. Outputs are
# byte-identical to a plain build's: the profile steers code layout, inlining and unrolling, not
# what the code computes. The gain, measured: docs/benchmarks.md, "A profile-guided build".
#
#   scripts/build_pgo.sh BUILD_DIR [meson options...]
#   scripts/build_pgo.sh build-pgo                                  # this machine
#   scripts/build_pgo.sh build-gpu -Dportable=true -Dcuda=disabled  # a binary for the GPU machine
#
# Every run trains afresh (a profile of older code would not match: GCC refuses it, so a source
# edited while this runs fails the second build; run it again), so it takes two builds of `spin`
# (about 5 minutes on 2 cores); the Debian packages of scripts/bootstrap.sh must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# < 1)); then
  echo "usage: scripts/build_pgo.sh BUILD_DIR [meson options...]" >&2
  exit 2
fi
dir=$1
shift

# shellcheck source=scripts/run_logged.sh
. scripts/run_logged.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -f "$dir/build.ninja" ]; then
  run_logged meson configure "$dir" -Db_pgo=generate "$@"
else
  run_logged meson setup "$dir" --buildtype=release -Db_pgo=generate "$@"
fi
find "$dir" -name '*.gcda' -delete
echo "build_pgo: building the instrumented binary" >&2
run_logged ninja -C "$dir" spin

echo "build_pgo: training" >&2
spin=$dir/spin
run_logged "$spin" bench core --repeats 1
run_logged "$spin" bench sim --requests 4 --max-output-tokens 128 --threads 1 --sampling 4
run_logged "$spin" sim --out "$work/sim"
run_logged "$spin" replay

echo "build_pgo: building with the profile" >&2
run_logged meson configure "$dir" -Db_pgo=use
run_logged ninja -C "$dir" spin
echo "build_pgo: built $spin" >&2
