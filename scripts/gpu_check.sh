#!/usr/bin/env bash
# Issue 20's GPU check: the one script an NVIDIA machine with PyTorch (CUDA) installed runs,
# in a few minutes. It
#   0. builds core/ and the model benchmark against that PyTorch's LibTorch
#      (RLHF_TORCH=python, -DRLHF_CORE_ONLY=ON -DRLHF_WITH_CUDA=ON: no gRPC/protobuf needed);
#   1. checks KV-cache decoding against a full forward on CUDA in fp32 (<= 1e-4; also
#      Generate()'s log-probs, sampled on the GPU, against ResponseLogProbs);
#   2. times generation (batch 64 and 8) and a training step (forward + loss + backward;
#      fp32 and bf16 autocast) of a GPT-2-small-shaped model (124M) against the same model
#      in PyTorch-Python on the same GPU, in the same run (bench/model_baseline.py);
#   3. if the machine has two GPUs: a c10d NCCL broadcast between two processes against
#      the device-to-device copy rate (scripts/gpu_nccl_broadcast.py).
# It prints a table and writes everything to $OUT (default gpu_check_out/): results.md,
# kv_parity.json, bench_fp32.json, bench_bf16.json, nccl.json, and each step's log.
#
#   scripts/gpu_check.sh                 # on the GPU machine
#   scripts/gpu_check.sh --cpu-dry-run   # anywhere: Debian's LibTorch, device cpu, tiny
#                                        # shapes; proves the plumbing, measures nothing
# Options: --out DIR, --python PY (default python3), --skip-build.
# Exit status: 0 when every check ran and the parity check passed; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=gpu_check_out
PYTHON=python3
SKIP_BUILD=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --python) PYTHON=$2; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log" >&2; }
: >"$OUT/gpu_check.log"

# --- 0. environment and build -------------------------------------------------------
if [[ $DRY -eq 1 ]]; then
  DEVICE=cpu
  BUILD_DIR=${RLHF_BUILD_DIR:-build-core}
  PY_BASELINE=/usr/bin/python3
  say "cpu dry run: Debian LibTorch, device cpu, tiny shapes (no GPU numbers)"
  build_env=(RLHF_BUILD_DIR="$BUILD_DIR" RLHF_CMAKE_ARGS="-DRLHF_CORE_ONLY=ON")
else
  DEVICE=cuda
  BUILD_DIR=${RLHF_BUILD_DIR:-build-gpu}
  PY_BASELINE=$(command -v "$PYTHON")
  info=$("$PYTHON" - <<'PY'
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "available": torch.cuda.is_available(),
                  "gpus": torch.cuda.device_count(),
                  "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
                  "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI)}))
PY
) || { say "FAIL: $PYTHON cannot import torch"; exit 1; }
  say "python torch: $info"
  echo "$info" >"$OUT/torch.json"
  if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "FAIL: torch.cuda.is_available() is False"; exit 1
  fi
  if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch._C._GLIBCXX_USE_CXX11_ABI else 1)'; then
    # Our Abseil/ICU/PCRE2 come from the distribution (new C++11 ABI); a pre-C++11-ABI
    # LibTorch (PyTorch wheels before 2.7) cannot link with them.
    say "FAIL: this PyTorch uses the pre-C++11 ABI; use a PyTorch >= 2.7 wheel (or a cxx11-abi LibTorch)"
    exit 1
  fi
  command -v nvcc >/dev/null 2>&1 || say "note: no nvcc on PATH; LibTorch's CMake config may need the CUDA toolkit (CUDA_HOME)"
  build_env=(RLHF_TORCH=python RLHF_PYTHON="$PYTHON" RLHF_BUILD_DIR="$BUILD_DIR"
             RLHF_CMAKE_ARGS="-DRLHF_CORE_ONLY=ON -DRLHF_WITH_CUDA=ON")
fi
if [[ $SKIP_BUILD -eq 0 ]]; then
  say "building core/ + rlhf_bench_model in $BUILD_DIR (log: $OUT/build.log)"
  if ! env "${build_env[@]}" RLHF_JOBS="${RLHF_JOBS:-$(nproc)}" scripts/build.sh >"$OUT/build.log" 2>&1; then
    tail -n 30 "$OUT/build.log" >&2
    say "FAIL: build (see $OUT/build.log)"
    exit 1
  fi
fi
BENCH="$BUILD_DIR/bin/rlhf_bench_model"
[[ -x "$BENCH" ]] || { say "FAIL: $BENCH not built"; exit 1; }

status=0
# --- 1. KV-cache decoding == full forward (fp32) -------------------------------------
if [[ $DRY -eq 1 ]]; then parity_models=tiny,llama-tiny; else parity_models=tiny,llama-tiny,gpt2-small; fi
say "1. kv parity on $DEVICE ($parity_models)"
if ! "$BENCH" --check_kv_parity --device="$DEVICE" --models="$parity_models" \
    --parity_tolerance=1e-4 --json_out="$OUT/kv_parity.json" 2>&1 | tee "$OUT/kv_parity.log"; then
  say "FAIL: kv parity"
  status=1
fi

# --- 2. generation + training step vs PyTorch-Python on the same device ---------------
if [[ $DRY -eq 1 ]]; then
  bench_args=(--models=tiny --cases=generate:4:8:8,train:2:16 --min_seconds=0.05 --min_reps=1
              --threads=1 --python_threads=1)
else
  bench_args=(--models=gpt2-small --cases=generate:64:32:64,generate:8:32:64,train:8:128
              --min_seconds=2 --min_reps=3 --threads=4 --python_threads=4)
fi
for dtype in fp32 bf16; do
  say "2. bench on $DEVICE, train $dtype: ${bench_args[*]}"
  if ! "$BENCH" --device="$DEVICE" --train_dtype="$dtype" --python="$PY_BASELINE" \
      "${bench_args[@]}" --json_out="$OUT/bench_$dtype.json" 2>&1 | tee "$OUT/bench_$dtype.log"; then
    say "FAIL: bench ($dtype)"
    status=1
  fi
done

# --- 3. optional: NCCL broadcast between two processes -------------------------------
say "3. broadcast between two processes ($([[ $DRY -eq 1 ]] && echo gloo/cpu || echo nccl))"
if [[ $DRY -eq 1 ]]; then nccl_args=(--device cpu --mb 16 --reps 2); else nccl_args=(--device cuda); fi
if ! timeout 600 "$PY_BASELINE" scripts/gpu_nccl_broadcast.py "${nccl_args[@]}" \
    >"$OUT/nccl.json" 2>"$OUT/nccl.log"; then
  say "note: broadcast check failed (optional; see $OUT/nccl.log)"
  echo '{"skipped": "failed, see nccl.log"}' >"$OUT/nccl.json"
fi

# --- table --------------------------------------------------------------------------
/usr/bin/env python3 - "$OUT" "$DEVICE" "$DRY" <<'PY' | tee "$OUT/results.md"
import json, os, sys
out, device, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
print(f"# GPU check ({'CPU DRY RUN: plumbing only, no GPU numbers' if dry else device})\n")
t = load("torch.json")
if t:
    print(f"PyTorch {t['torch']} (CUDA {t['cuda']}), {t['gpus']} GPU(s): {t['name']}\n")
p = load("kv_parity.json")
print("## 1. KV-cache decoding vs full forward (fp32)\n")
print("| model | max abs logit diff | max abs log-prob diff (Generate) | tolerance | result |")
print("|---|---|---|---|---|")
for m in (p or {}).get("models", []):
    print(f"| {m['model']} | {m['max_abs_logit_diff']:.2e} | {m['max_abs_logprob_diff']:.2e} | "
          f"{p['tolerance']:.0e} | {'PASS' if m['pass'] else 'FAIL'} |")
if not p:
    print("| (did not run) | | | | FAIL |")
print("\n## 2. C++ vs PyTorch-Python, same model, same device, same run\n")
print("| train dtype | case (batch:len[:new]) | C++ tok/s | Python tok/s | C++/Python |")
print("|---|---|---|---|---|")
notes = []
for dtype in ("fp32", "bf16"):
    b = load(f"bench_{dtype}.json")
    for c in (b or {}).get("cases", []):
        if dtype == "bf16" and not c["case"].startswith("train"):
            continue  # generation runs in fp32 in both bench runs
        py = c["tokens"] / c["python_seconds"] if c["python_seconds"] > 0 else float("nan")
        print(f"| {dtype} | {c['case']} | {c['cpp_tokens_per_s']:.0f} | {py:.0f} | "
              f"{c['speedup_vs_python']:.2f} |")
    if b:
        notes.append(f"{dtype} run: device {b.get('device')}, LibTorch {b.get('torch_version')}, "
                     f"matmul peak {b['sgemm_gflops']:.0f} GFLOP/s, read bandwidth "
                     f"{b['read_bandwidth_gbs']:.0f} GB/s")
print()
for note in notes:
    print(f"- {note}")
print()
n = load("nccl.json")
print("## 3. Broadcast between two processes\n")
if not n or "skipped" in n:
    print(f"skipped: {(n or {}).get('skipped', 'no result')}")
else:
    print(f"{n['backend']}: {n['broadcast_gbs']:.1f} GB/s vs device copy {n['copy_gbs']:.1f} GB/s "
          f"= {100 * n['ratio']:.0f}% ({n['bytes'] >> 20} MiB in {n['bucket_bytes'] >> 20} MiB buckets); "
          f"received: {n.get('rank1_received')}")
PY
say "results in $OUT/results.md"
exit $status
