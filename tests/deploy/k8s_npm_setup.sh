#!/usr/bin/env bash
# Installs the offline Kubernetes schema validators into DIR (a build-tree folder) when
# they are missing: kubernetes-models (the Kubernetes OpenAPI schemas as compiled
# validators and TypeScript types), the Prometheus Operator CRD models, a YAML parser,
# TypeScript. Used by the k8s_schema_test fixture; npm's registry is the only network.
set -euo pipefail
dir=${1:?usage: k8s_npm_setup.sh DIR}
mkdir -p "$dir"
cd "$dir"
want=(kubernetes-models@4.5.1 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1
      typescript@5.9.3)
if [[ -f node_modules/.rlhf-installed ]] && [[ $(cat node_modules/.rlhf-installed) == "${want[*]}" ]]; then
  exit 0
fi
[[ -f package.json ]] || echo '{"name": "rlhf-k8s-validate", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error "${want[@]}"
echo "${want[*]}" > node_modules/.rlhf-installed
