#!/usr/bin/env bash
# Fuzzes what the cache parses from disk (records, LMDB meta pages) with
# libFuzzer under ASan and UBSan, for a bounded time.
#
#   tools/fuzz.sh [SECONDS]      default 45
#
# Builds build-fuzz with clang (-DDOP_FUZZ=ON), writes a seed corpus (valid
# records, the head of a real cache file) into build-fuzz/fuzz-corpus, and runs
# tests/fuzz_cache_record.c on it. The corpus grows between runs; a crash
# leaves its input in build-fuzz/fuzz-artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-45}
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then
  echo "fuzz.sh: $cc not found (tools/deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
CC=$cc cmake -S . -B build-fuzz -DDOP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_cache_record test_cache_fuzz >/dev/null
corpus=build-fuzz/fuzz-corpus
artifacts=build-fuzz/fuzz-artifacts
mkdir -p "$corpus" "$artifacts"
build-fuzz/tests/test_cache_fuzz --write-seeds "$corpus" >/dev/null
echo "fuzzing cache records and meta pages for ${secs}s"
log=build-fuzz/fuzz.log
if ! build-fuzz/tests/fuzz_cache_record "$corpus" -max_total_time="$secs" -max_len=140000 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz.sh: the fuzzer found a failure; inputs in $artifacts" >&2
  exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|cov:" "$log" | tail -n 5
