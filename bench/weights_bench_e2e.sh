#!/usr/bin/env bash
# End-to-end distributed RL throughput (issue 6): learner + reward server (gold) +
# reference server + N actors on loopback, tiny model; trajectories trained per second
# and actor busy fraction (generating vs waiting), synchronous (max_staleness 0) vs
# asynchronous (max_staleness 2).
#
#   bench/weights_bench_e2e.sh [BIN_DIR] [ACTORS] [STEPS]
set -euo pipefail
BIN=${1:-build/bin}
ACTORS=${2:-2}
STEPS=${3:-20}
WORK=$(mktemp -d /tmp/rlhf-e2e-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_file() { for _ in $(seq 600); do [[ -s $1 ]] && return 0; sleep 0.1; done; echo "no $1" >&2; exit 1; }

"$BIN/rlhf-reward-server" --scorers=gold --port_file="$WORK/rm.port" >"$WORK/rm.log" 2>&1 & PIDS+=($!)
"$BIN/rlhf-reference-server" --preset=tiny --seed=3 --port_file="$WORK/ref.port" >"$WORK/ref.log" 2>&1 & PIDS+=($!)
wait_file "$WORK/rm.port"; wait_file "$WORK/ref.port"

for staleness in 0 2; do
  run="$WORK/s$staleness"; mkdir -p "$run"
  "$BIN/rlhf-learner" --checkpoint_dir="$run/ckpt" --port_file="$run/l.port" --metrics_port=-1 \
    --drain_grace_s=10 --checkpoint_every=1000 \
    --set="rl.steps=$STEPS,rl.prompts_per_step=8,rl.samples_per_prompt=4,rl.minibatch_size=32,rl.max_staleness=$staleness,actors.prompts_per_lease=2,sampling.max_new_tokens=32,data.num_rl_train=256" \
    >"$run/learner.log" 2>&1 & lpid=$!; PIDS+=($lpid)
  wait_file "$run/l.port"
  start=$(date +%s.%N)
  apids=()
  for i in $(seq 0 $((ACTORS - 1))); do
    "$BIN/rlhf-actor" --learner_address=127.0.0.1:$(cat "$run/l.port") \
      --reward_address=127.0.0.1:$(cat "$WORK/rm.port") --reference_address=127.0.0.1:$(cat "$WORK/ref.port") \
      --actor_name=a$i >"$run/a$i.log" 2>&1 & apids+=($!); PIDS+=($!)
  done
  # The learner prints "done:" after its last step (then waits for the actors to leave).
  for _ in $(seq 6000); do grep -q "^done:" "$run/learner.log" && break; sleep 0.1; done
  end=$(date +%s.%N)
  trained=$(sed -n 's/^done: .*version [0-9]*, \([0-9]*\) trajectories trained/\1/p' "$run/learner.log")
  for p in "${apids[@]}"; do wait "$p" || true; done
  wait "$lpid" || true
  busy=$(grep -h "busy" "$run"/a*.log | sed 's/.*busy //' | tr '\n' ' ')
  stale=$(grep -c "dropped" "$run/learner.log" || true)
  awk -v s="$staleness" -v t="$trained" -v a="$start" -v b="$end" -v busy="$busy" -v n="$ACTORS" \
    'BEGIN { printf "max_staleness=%d actors=%d trajectories=%d seconds=%.1f traj/s=%.2f actor_busy=[%s]\n", s, n, t, b-a, t/(b-a), busy }'
done
