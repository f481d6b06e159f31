#!/usr/bin/env bash
# Bundles this machine's `perf` with the shared libraries it loads and the dynamic loader into
# DIR, so that it runs on a machine that has no perf (the GPU machine's host: docs/gpu-machine.md,
# "Profiling on the host"). Run it there through the bundled loader, which takes every library
# from DIR, whatever that machine's own libraries are:
#
#   DIR/ld-linux-x86-64.so.2 --library-path DIR DIR/perf record -e cpu-clock:u -o FILE CMD...
#
# DIR is about 33 MB (mostly libperl and libpython, which perf links); keep it out of git
# (.git/info/exclude) and pass it in the device tool's `carry`.
#
# Usage: scripts/perf_bundle.sh DIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
perf=$(command -v perf || true)
if [[ -z $perf ]]; then
  echo "$0: perf is not installed here (Debian: apt-get install linux-perf)" >&2
  exit 1
fi
loader=/lib64/ld-linux-x86-64.so.2
if [[ ! -e $loader ]]; then
  echo "$0: $loader not found: this script bundles x86-64 glibc binaries only" >&2
  exit 1
fi
mkdir -p "$dir"
cp -L "$perf" "$dir/perf"
# ldd's "name => path (address)" lines: every library perf loads, resolved on this machine.
ldd "$perf" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  cp -L "$lib" "$dir/"
done
cp -L "$loader" "$dir/"
"$dir/$(basename "$loader")" --library-path "$dir" "$dir/perf" --version
echo "bundled in $dir ($(du -sh "$dir" | cut -f1))"
