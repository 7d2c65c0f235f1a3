#!/usr/bin/env bash
# Builds with warnings as errors and runs the whole test suite (CPU tests; the
# GPU tests run too where a GPU is present, and are skipped where not), after
# fuzzing the cache's record and meta-page decoders for 45 s (tools/fuzz.sh;
# FUZZ_SECONDS=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOP_WERROR=ON >/dev/null
cmake --build build-test -j"$(nproc)"
secs=${FUZZ_SECONDS:-45}
if [ "$secs" != 0 ]; then
  bash tools/fuzz.sh "$secs"
fi
ctest --test-dir build-test --output-on-failure
