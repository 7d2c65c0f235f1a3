#!/usr/bin/env bash
# Sets everything up and runs dop's main job:
#   installs missing packages, builds (build/), then `dop selftest`:
#   with a GPU it runs the kernels against the CPU reference; without one it
#   JIT-compiles the kernels dispatch uses for an H200 and reports them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
./build/dop selftest
