#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds into build/, runs ctest.
# Extra arguments go to ctest (e.g. scripts/test.sh -R model).
#
# Tests labelled "unverified" were written but have not yet passed on the merged tree
# (end-to-end tests added in one parallel session whose machine could not run them all
# in time; see README "Status"). They are left out of the default run so that CI checks
# what is known to work; RLHF_TEST_UNVERIFIED=1 runs them too. Remove the label from a
# test once it has passed here.
#
# Tests labelled "quality" pass but take longer than CI's whole test budget (the recipe's
# outcome on the built-in task, ~19 minutes on one core); RLHF_TEST_QUALITY=1 runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
BUILD_DIR=${RLHF_BUILD_DIR:-build}
cd "$BUILD_DIR"
left_out=()
if [[ "${RLHF_TEST_UNVERIFIED:-0}" != 1 ]]; then left_out+=(unverified); fi
if [[ "${RLHF_TEST_QUALITY:-0}" != 1 ]]; then left_out+=(quality); fi
exclude=()
if ((${#left_out[@]})); then exclude=(-LE "$(IFS='|'; echo "${left_out[*]}")"); fi
ctest --output-on-failure -j "${RLHF_TEST_JOBS:-2}" "${exclude[@]}" "$@"
