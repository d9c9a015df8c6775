#!/usr/bin/env bash
# A real one-node Slurm cluster for tests, run as root, everything under one directory:
#
#   tests/deploy/slurm_cluster.sh start DIR   # munged + slurmctld + slurmd; prints env
#   tests/deploy/slurm_cluster.sh stop DIR    # stops the three daemons (by their pid files)
#
# `start` writes DIR/slurm.conf (SlurmUser=root, proctrack/linuxproc, task/none,
# select/cons_tres over CPUs, one node = this machine's CPUs and memory, free
# non-default ports, state/spool/logs under DIR), generates a munge key, starts the
# daemons and waits until the node is idle. Clients then need SLURM_CONF=DIR/slurm.conf
# (written to DIR/env as a shell line). Needs Debian's slurmctld, slurmd, slurm-client
# and munge (scripts/deps.sh installs them).
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=${2:?usage: slurm_cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop_pidfile() {
  local f=$1
  [[ -s $f ]] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

if [[ $cmd == stop ]]; then
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munged.pid"
  exit 0
fi
[[ $cmd == start ]] || { echo "slurm_cluster.sh: unknown command '$cmd'" >&2; exit 2; }

for b in munged slurmctld slurmd sbatch sinfo scontrol; do
  if ! command -v "$b" >/dev/null && [[ ! -x /usr/sbin/$b ]]; then
    echo "slurm_cluster.sh: '$b' not found (apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 3
  fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "slurm_cluster.sh: must run as root (SlurmUser=root)" >&2
  exit 3
fi
export PATH=$PATH:/usr/sbin

# A free TCP port on loopback that is not Slurm's default (6817-6819).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/log"
chmod 700 "$dir/munge"
# munge: a generated key, its own socket, as root (--force: root-owned sockets).
head -c 1024 /dev/urandom > "$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --force --socket="$socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
  --seed-file="$dir/munge/munged.seed"
for _ in $(seq 1 100); do [[ -S $socket ]] && break; sleep 0.1; done
[[ -S $socket ]] || { echo "slurm_cluster.sh: munged did not start" >&2; cat "$dir/log/munged.log" >&2; exit 1; }

node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
ctld_port=$(free_port)
slurmd_port=$(free_port)
cat > "$dir/slurm.conf" <<EOF
# Written by tests/deploy/slurm_cluster.sh: a one-node test cluster.
ClusterName=rlhftest$$
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=15
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# OverSubscribe: the one node stands in for several, so a job of extra actors runs beside
# the RL job (which holds every CPU of this small machine) instead of queueing behind it.
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
export SLURM_CONF="$dir/slurm.conf"
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"

# -i: ignore (clear) state from an earlier cluster in this directory.
slurmctld -i -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$node"

for _ in $(seq 1 300); do
  state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null || true)
  if [[ $state == idle ]]; then
    echo "slurm_cluster.sh: node $node idle ($cpus CPUs, $mem_mb MB); SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm_cluster.sh: node $node not idle after 60 s (state '${state:-?}')" >&2
tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
exit 1
