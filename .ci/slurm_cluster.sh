#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the launch tests (tests/test_launch_slurm.py).
#
#   .ci/slurm_cluster.sh start   # prints the path of its slurm.conf: export it as SLURM_CONF
#   .ci/slurm_cluster.sh stop    # cancels its jobs, ends exactly the daemons it started
#
# Needs root and Debian's `slurm-wlm` and `munge` (apt-get install -y slurm-wlm munge).
# No systemd: munged (as user munge), slurmctld and slurmd run in the foreground (-F / -D)
# as background children of this script, their PIDs recorded in $JAXGEN_SLURM_DIR/pids.
# Everything lives in that directory (default /tmp/jaxgen-slurm): the munge key, socket and
# log, slurm.conf, the controller's state and slurmd's spool. Nothing under /etc or /run is
# touched, and the ports are free ones picked at start, so a system SLURM or munge on the
# same machine is left alone. The node is `hostname -s` with its CPU count and address
# 127.0.0.1; cons_tres with CR_CPU hands out single CPUs, so a job with more tasks than
# CPUs needs `srun --overcommit` (the sbatch script passes it through SRUN_FLAGS).
set -euo pipefail

DIR=${JAXGEN_SLURM_DIR:-${TMPDIR:-/tmp}/jaxgen-slurm}
CONF=$DIR/slurm.conf
PIDS=$DIR/pids

die() { echo "slurm_cluster.sh: error: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Is PID alive and still the daemon we started (its command line names our directory)?
ours() {
  [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$DIR/"
}

start() {
  [[ $(id -u) == 0 ]] || die "needs root (munged runs as user munge, slurmd as root)"
  for cmd in munged mungekey slurmctld slurmd sinfo setpriv; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y slurm-wlm munge"
  done
  if [[ -f $PIDS ]]; then
    while read -r pid; do
      ! ours "$pid" || die "a cluster is already running from $DIR (stop it first)"
    done <"$PIDS"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log"
  chmod 755 "$DIR"
  chown munge:munge "$DIR/munge"
  chmod 755 "$DIR/munge"  # munged wants its socket directory searchable by all
  : >"$PIDS"

  local node cpus ctld_port slurmd_port
  node=$(hostname -s)
  # JAX's SLURM detection names the coordinator by this node name: it must resolve.
  getent hosts "$node" >/dev/null || die "this host's name $node does not resolve (add it to /etc/hosts)"
  cpus=$(nproc)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)

  # munge: a fresh key, its socket inside $DIR (slurm.conf's AuthInfo points there).
  setpriv --reuid=munge --regid=munge --init-groups -- \
    mungekey --create --keyfile="$DIR/munge/munge.key"
  setpriv --reuid=munge --regid=munge --init-groups -- \
    munged -F --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" \
    --log-file="$DIR/munge/munged.log" >"$DIR/log/munged.out" 2>&1 &
  echo $! >>"$PIDS"
  for _ in $(seq 50); do [[ -S $DIR/munge/munge.socket ]] && break; sleep 0.1; done
  [[ -S $DIR/munge/munge.socket ]] || die "munged did not start: $(cat "$DIR/log/munged.out" "$DIR/munge/munged.log" 2>/dev/null)"

  cat >"$CONF" <<EOF
# Written by .ci/slurm_cluster.sh: a one-node test cluster, everything under $DIR.
ClusterName=jaxgen-ci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in a container without systemd: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
# Daemons and srun listen on the node address (127.0.0.1), not on every interface.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

  slurmctld -D -i -f "$CONF" >"$DIR/log/slurmctld.out" 2>&1 &
  echo $! >>"$PIDS"
  slurmd -D -f "$CONF" -N "$node" >"$DIR/log/slurmd.out" 2>&1 &
  echo $! >>"$PIDS"

  for _ in $(seq 120); do
    if [[ $(SLURM_CONF=$CONF sinfo -h -n "$node" -o %t 2>/dev/null) == idle ]]; then
      echo "$CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "slurm_cluster.sh: error: node $node not idle after 60 s; logs:" >&2
  tail -n 20 "$DIR"/log/* >&2 || true
  stop
  exit 1
}

stop() {
  [[ -f $PIDS ]] || return 0
  # Jobs first, so no slurmstepd or task outlives the daemons.
  if [[ -f $CONF ]]; then
    local jobs=()
    mapfile -t jobs < <(SLURM_CONF=$CONF timeout 10 squeue -h -o %i 2>/dev/null || true)
    if ((${#jobs[@]})); then
      SLURM_CONF=$CONF timeout 10 scancel --full "${jobs[@]}" 2>/dev/null || true
      sleep 2  # let slurmd end the steps' processes
    fi
  fi
  local pid live=()
  # Reverse order: slurmd, slurmctld, then munged (the others authenticate through it).
  for pid in $(tac "$PIDS"); do
    if ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; live+=("$pid"); fi
  done
  for _ in $(seq 50); do
    local any=0
    for pid in "${live[@]}"; do ours "$pid" && any=1; done
    [[ $any == 0 ]] && break
    sleep 0.2
  done
  for pid in "${live[@]}"; do
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$DIR"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
