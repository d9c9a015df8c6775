#!/usr/bin/env bash
# Installs missing packages, configures build/ (Ninja + ccache when present, Release)
# and builds incrementally. Usage: scripts/build.sh [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
rlhf_install_deps

BUILD_DIR=${RLHF_BUILD_DIR:-build}
# Relative paths in the ccache key: a fresh clone elsewhere reuses earlier compiles.
export CCACHE_BASEDIR="$PWD"
JOBS=${RLHF_JOBS:-$(nproc)}
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "$JOBS" ${1:+--target "$@"}
echo "[build] done in $(( $(date +%s) - start ))s" >&2
