#!/usr/bin/env bash
# The command-line tools' contracts that need no GPU: bad arguments are
# refused with exit status 2 and a message, before any device work; without a
# GPU, dop tune, bench_kernels and dop-textgen fail with status 1 and say why;
# dop-textgen --compile-only (NVRTC only) works with or without one.
#   test_tools.sh BUILD_DIR
set -uo pipefail
b=${1:?usage: test_tools.sh BUILD_DIR}
fail=0
expect() { # status, pattern, command...
  local want=$1 pat=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$want" ] || ! grep -qE -- "$pat" <<<"$out"; then
    echo "FAIL: $* -> status $rc (want $want), output: $out"
    fail=1
  else
    echo "ok: $* -> $rc"
  fi
}
expect 2 "unknown model" "$b/dop" tune --model nope
expect 2 "budget must be" "$b/dop" tune --budget 0
expect 2 "bad --shape" "$b/dop" tune --shape 4096
expect 2 "bad --dtype" "$b/dop" tune --dtype f32
expect 2 "unknown layout" "$b/dop" tune --layouts diagonal
expect 2 "bad --ranks" "$b/dop" tune --ranks x
expect 2 "usage" "$b/bench_kernels" --frobnicate
expect 2 "bad --static" "$b/bench_kernels" --static "split rows=banana"
expect 2 "needs --records" "$b/bench_kernels" --static auto
if [ -x "$b/dop-textgen" ]; then # built only where the toolkit has cuBLAS
  expect 2 "unknown mode" "$b/dop-textgen" --modes base,overlap
  expect 2 "static-overlap runs" "$b/dop-textgen" --static "fused rows=1 warps=16 vec=8 kc=2048 splitk=1 cols=256"
  expect 0 "tg_rmsnorm" "$b/dop-textgen" --compile-only
fi
if ! "$b/dop" info 2>/dev/null | grep -q "^device [0-9]"; then # no GPU here: clean failures
  expect 1 "dop tune: .*(driver|device)" "$b/dop" tune --rows 1 --budget 1
  expect 1 "bench_kernels: .*(driver|device)" "$b/bench_kernels" --rows 1
  if [ -x "$b/dop-textgen" ]; then
    expect 1 "dop-textgen: .*(driver|device)" "$b/dop-textgen" --batch-size 1
  fi
fi
exit $fail
