#!/usr/bin/env bash
# GPU smoke test of the measuring tools (label gpu; exit 77 without a GPU):
# dop tune on two small classes (records written, schedules stored, the table
# printed), then bench_kernels --verify against those records with the best
# static schedule chosen from them; then --store-only into a new cache with
# other arguments (another layout: the layout classes come from the records,
# not from the arguments' own layouts) and dispatch runs the stored schedule.
#   tune_smoke.sh BUILD_DIR
set -uo pipefail
b=${1:?usage: tune_smoke.sh BUILD_DIR}
"$b/dop" info 2>/dev/null | grep -q "^device [0-9]" || exit 77
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$b/dop" tune --shape 1024:1024 --rows 1,32 --layouts distinct --budget 12 --records "$d/r.jsonl" \
  --cache "$d/c.mdb" >"$d/tune.log" 2>&1 || { cat "$d/tune.log"; exit 1; }
grep -q "2 layout classes tuned" "$d/tune.log" || { cat "$d/tune.log"; exit 1; }
[ "$(wc -l <"$d/r.jsonl")" -ge 20 ] || { echo "too few records"; exit 1; }
"$b/dop" costmodel eval --records "$d/r.jsonl" >"$d/eval.log" 2>&1 || { cat "$d/eval.log"; exit 1; }
"$b/bench_kernels" --shapes 1024:1024 --rows 1,32 --layouts distinct --ranks 16 --verify --no-cold \
  --records "$d/r.jsonl" --static auto --cache "$d/c.mdb" --json "$d/b.jsonl" >"$d/bench.log" 2>&1 ||
  { cat "$d/bench.log"; exit 1; }
grep -q "all verified" "$d/bench.log" || { cat "$d/bench.log"; exit 1; }
"$b/dop" tune --shape 1024:1024 --rows 32 --layouts identical --records "$d/r.jsonl" --cache "$d/c2.mdb" \
  --store-only >"$d/store.log" 2>&1 || { cat "$d/store.log"; exit 1; }
grep -q "stored the best recorded schedule of 1 layout classes" "$d/store.log" || { cat "$d/store.log"; exit 1; }
"$b/bench_kernels" --shapes 1024:1024 --rows 32 --layouts distinct --ranks 16 --verify --no-cold \
  --records "$d/r.jsonl" --cache "$d/c2.mdb" --json "$d/b2.jsonl" >"$d/bench2.log" 2>&1 ||
  { cat "$d/bench2.log"; exit 1; }
# dispatch ran the class's best record (the oracle column's schedule)
grep -q '"schedule":"\([^"]*\)".*"oracle":"\1"' "$d/b2.jsonl" || { cat "$d/b2.jsonl"; exit 1; }
tail -n 3 "$d/tune.log"
tail -n 1 "$d/bench.log"
grep stored "$d/store.log"
