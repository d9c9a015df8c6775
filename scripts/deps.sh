#!/usr/bin/env bash
# Installs the Debian packages of design.md §5 that are missing. Does nothing (no
# apt-get at all) when everything is already installed. Sourced by the other scripts.
set -euo pipefail

RLHF_PACKAGES=(
  build-essential clang-14 lld-14 cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread libopenblas0-openmp libgloo-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libyaml-cpp-dev libre2-dev
  libpcre2-dev libicu-dev sentencepiece nodejs
  prometheus
  python3 python3-grpcio python3-protobuf python3-torch python3-yaml
  procps iproute2 openssl
  slurmctld slurmd slurm-client munge
)
# npm installs the tokenizer tests' oracles (tests/tokenizer/install_oracles.sh). A
# NodeSource nodejs bundles npm and conflicts with Debian's npm package: add it only when
# no npm is on the PATH.
if ! command -v npm >/dev/null 2>&1; then RLHF_PACKAGES+=(npm); fi

rlhf_missing_packages() {
  local missing=()
  for p in "${RLHF_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  echo "${missing[@]:-}"
}

rlhf_install_deps() {
  local missing
  missing=$(rlhf_missing_packages)
  if [[ -z "${missing// /}" ]]; then
    return 0
  fi
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  echo "[deps] installing: $missing" >&2
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  rlhf_install_deps
fi
