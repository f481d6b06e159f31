#!/bin/sh
# nvcc, plus the dependency file ninja expects (OUT.d for `-c ... -o OUT`). Meson 1.0 does not ask
# nvcc for one, so without it an edited header (e.g. common/policy/residency.h) would not rebuild
# the .cu objects that include it, and host and device code could disagree on a struct's layout.
# scripts/bootstrap.sh configures meson with it (a machine file in the build folder). The real compiler: $SPIN_NVCC, else
# nvcc on PATH, else /usr/local/cuda/bin/nvcc.
real=${SPIN_NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
out=""
compile=0
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out=$arg
  [ "$arg" = "-c" ] && compile=1
  prev=$arg
done
if [ "$compile" = 1 ] && [ -n "$out" ]; then
  exec "$real" "$@" -MD -MF "$out.d"
fi
exec "$real" "$@"
