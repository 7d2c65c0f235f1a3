#!/usr/bin/env bash
# Installs what dop needs to build and test (Debian/Ubuntu), if missing.
# The CUDA toolkit (headers, libnvrtc) must already be there: it is not an apt package here.
set -euo pipefail
pkgs=(cmake gcc make pkg-config libcmocka-dev liblmdb-dev libxxhash-dev clang libclang-rt-14-dev)
need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
cuda=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$cuda/include/cuda.h" ] || [ ! -f "$cuda/include/nvrtc.h" ]; then
  echo "dop: the CUDA toolkit headers (cuda.h, nvrtc.h) are not in $cuda/include; install the CUDA toolkit or set CUDA_HOME" >&2
  exit 1
fi
