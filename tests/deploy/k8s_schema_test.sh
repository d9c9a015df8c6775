#!/usr/bin/env bash
# Renders every overlay of deploy/k8s with `kubectl kustomize` into OUT_DIR and
# validates every object offline against the Kubernetes OpenAPI schemas
# (k8s_schema_validate.js; validators installed in NODE_DIR by k8s_npm_setup.sh).
#   k8s_schema_test.sh SOURCE_DIR NODE_DIR OUT_DIR
set -euo pipefail
src=${1:?} node_dir=${2:?} out=${3:?}
command -v kubectl >/dev/null || { echo "kubectl not found (kustomize is built into kubectl)" >&2; exit 1; }
mkdir -p "$out"
rendered=()
for overlay in "$src"/deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done
(( ${#rendered[@]} >= 2 )) || { echo "expected at least the cpu and tls overlays" >&2; exit 1; }
node "$src/tests/deploy/k8s_schema_validate.js" "$node_dir" "${rendered[@]}"
