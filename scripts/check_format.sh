#!/usr/bin/env bash
# Checks that the C++ lines changed since BASE (default: the merge-base with main, or
# HEAD~1 when there is no main) follow .clang-format. Only changed lines are checked
# (git clang-format), so an unformatted old file never fails a change that touches a
# line of it. Fix with: git clang-format BASE
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v git-clang-format >/dev/null 2>&1; then
  echo "[format] git-clang-format not installed; skipping" >&2
  exit 0
fi
base=${1:-}
if [[ -z "$base" ]]; then
  base=$(git merge-base HEAD main 2>/dev/null || git rev-parse HEAD~1 2>/dev/null || true)
fi
if [[ -z "$base" ]]; then
  echo "[format] no base revision; skipping" >&2
  exit 0
fi
diff=$(git clang-format --quiet --diff --extensions h,cc,cpp,hpp "$base" -- . || true)
if [[ -n "$diff" && "$diff" != *"no modified files to format"* && "$diff" != *"clang-format did not modify any files"* ]]; then
  echo "$diff"
  echo "[format] the lines above differ from .clang-format; run: git clang-format $base" >&2
  exit 1
fi
echo "[format] changed lines since $(git rev-parse --short "$base") are formatted" >&2
