#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds into build/, runs ctest.
# Extra arguments go to ctest (e.g. scripts/test.sh -R model).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
BUILD_DIR=${RLHF_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j "${RLHF_TEST_JOBS:-2}" "$@"
