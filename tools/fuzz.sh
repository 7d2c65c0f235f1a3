#!/usr/bin/env bash
# Fuzzes what dop parses from disk with libFuzzer under ASan and UBSan, for a
# bounded time in all:
#   - the cache's records and LMDB meta pages (tests/fuzz_cache_record.c);
#   - tuning-record lines (tests/fuzz_records.c, search/search_record.c);
#   - cost-model images (tests/fuzz_costmodel.c, costmodel/costmodel_model.c).
#
#   tools/fuzz.sh [SECONDS]      seconds in all, default 45 (a fifth for the
#                                cost model; of the rest, the cache gets the
#                                larger half, the records the other)
#
# Builds build-fuzz with clang (-DDOP_FUZZ=ON), writes the seed corpora (valid
# cache records and the head of a real cache file into build-fuzz/fuzz-corpus;
# valid tuning records into build-fuzz/fuzz-corpus-records, with a dictionary
# of their names in build-fuzz/records.dict; valid cost-model images into
# build-fuzz/fuzz-corpus-costmodel) and runs each target on its corpus. The
# corpora grow between runs; a crash leaves its input in
# build-fuzz/fuzz-artifacts/ (cache), build-fuzz/fuzz-artifacts-records/ or
# build-fuzz/fuzz-artifacts-costmodel/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-45}
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "fuzz.sh: SECONDS must be a whole number >= 1 (got '$secs')" >&2
  exit 1
fi
cm_secs=$((secs / 5))
rec_secs=$(((secs - cm_secs) / 2))
cache_secs=$((secs - cm_secs - rec_secs))
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then
  echo "fuzz.sh: $cc not found (tools/deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
CC=$cc cmake -S . -B build-fuzz -DDOP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_cache_record test_cache_fuzz fuzz_records test_records \
  fuzz_costmodel test_costmodel >/dev/null

corpus=build-fuzz/fuzz-corpus
artifacts=build-fuzz/fuzz-artifacts
mkdir -p "$corpus" "$artifacts"
build-fuzz/tests/test_cache_fuzz --write-seeds "$corpus" >/dev/null
echo "fuzzing cache records and meta pages for ${cache_secs}s"
log=build-fuzz/fuzz.log
if ! build-fuzz/tests/fuzz_cache_record "$corpus" -max_total_time="$cache_secs" -max_len=140000 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz.sh: the fuzzer found a failure; inputs in $artifacts" >&2
  exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|cov:" "$log" | tail -n 5

if [ "$rec_secs" -lt 1 ]; then
  echo "fuzz.sh: no time left for the tuning records (give at least 2 seconds)"
  exit 0
fi
corpus=build-fuzz/fuzz-corpus-records
artifacts=build-fuzz/fuzz-artifacts-records
mkdir -p "$corpus" "$artifacts"
build-fuzz/tests/test_records --write-seeds "$corpus" >/dev/null
echo "fuzzing tuning records for ${rec_secs}s"
log=build-fuzz/fuzz-records.log
if ! build-fuzz/tests/fuzz_records "$corpus" -dict=build-fuzz/records.dict -max_total_time="$rec_secs" \
    -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz.sh: the fuzzer found a failure; inputs in $artifacts" >&2
  exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|cov:" "$log" | tail -n 5

if [ "$cm_secs" -lt 1 ]; then
  echo "fuzz.sh: no time left for the cost-model images (give at least 5 seconds)"
  exit 0
fi
corpus=build-fuzz/fuzz-corpus-costmodel
artifacts=build-fuzz/fuzz-artifacts-costmodel
mkdir -p "$corpus" "$artifacts"
build-fuzz/tests/test_costmodel --write-seeds "$corpus" >/dev/null
echo "fuzzing cost-model images for ${cm_secs}s"
log=build-fuzz/fuzz-costmodel.log
if ! build-fuzz/tests/fuzz_costmodel "$corpus" -max_total_time="$cm_secs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz.sh: the fuzzer found a failure; inputs in $artifacts" >&2
  exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|cov:" "$log" | tail -n 5
