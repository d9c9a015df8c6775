#!/usr/bin/env bash
# Installs missing packages, configures build/ (Ninja + ccache when present, Release)
# and builds incrementally. Usage: scripts/build.sh [ninja targets...]
#
# Environment:
#   RLHF_JOBS=N         parallel compile jobs (default: all cores)
#   RLHF_BUILD_DIR=dir  build directory (default build/)
#   RLHF_TORCH=python   build against the LibTorch inside the PyTorch installation of
#                       ${RLHF_PYTHON:-python3} (torch.utils.cmake_prefix_path) instead of
#                       Debian's libtorch-dev; no Debian packages are installed then (a GPU
#                       machine: see docs/gpu.md for what it needs)
#   RLHF_CMAKE_ARGS     extra configure arguments, e.g. "-DRLHF_CORE_ONLY=ON -DRLHF_WITH_CUDA=ON"
# The configure arguments apply when BUILD_DIR is configured for the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

BUILD_DIR=${RLHF_BUILD_DIR:-build}
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
case "${RLHF_TORCH:-debian}" in
  debian)
    rlhf_install_deps
    ;;
  python)
    python=${RLHF_PYTHON:-python3}
    prefix=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') || {
      echo "[build] RLHF_TORCH=python: '$python' cannot import torch" >&2
      exit 1
    }
    echo "[build] LibTorch of $("$python" -c 'import torch; print(torch.__version__)') at $prefix" >&2
    cmake_args+=("-DCMAKE_PREFIX_PATH=$prefix")
    ;;
  *)
    echo "[build] RLHF_TORCH must be 'debian' (default) or 'python', got '$RLHF_TORCH'" >&2
    exit 1
    ;;
esac
if [[ -n "${RLHF_CMAKE_ARGS:-}" ]]; then
  read -r -a extra <<<"$RLHF_CMAKE_ARGS"
  cmake_args+=("${extra[@]}")
fi
# Relative paths in the ccache key: a fresh clone elsewhere reuses earlier compiles.
export CCACHE_BASEDIR="$PWD"
JOBS=${RLHF_JOBS:-$(nproc)}
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" "${cmake_args[@]}" >/dev/null
fi
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "$JOBS" ${1:+--target "$@"}
echo "[build] done in $(( $(date +%s) - start ))s" >&2
