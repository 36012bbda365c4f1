#!/usr/bin/env bash
# Runs one jaxgen job as several processes on this machine, each with its own
# host CPU devices: how multi-host behaviour is exercised without a cluster.
#
#   launch/local_multiprocess.sh [--dry-run] [--port=P] NUM_PROCESSES DEVICES_PER_PROCESS \
#       -- jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/mp ...
#
# Each process gets (see jaxgen/distributed.py for how jaxgen reads them):
#   JAX_PLATFORMS=cpu            host devices even where an accelerator exists
#   XLA_FLAGS=--xla_force_host_platform_device_count=D
#                                D devices per process (other XLA_FLAGS are kept)
#   JAX_COORDINATOR_ADDRESS=127.0.0.1:P, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i
#                                process 0 serves the coordinator on a free port
# Every output line is prefixed with "[i] ". When one process fails, the others
# are killed (a job that lost a process cannot go on; complete checkpoints are
# safe on disk) and the script exits with the first failure's status. SIGTERM
# to this script reaches every process: they agree on a step, save it and exit
# 0. --dry-run prints the command line of each process and runs nothing.
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] [--port=P] NUM_PROCESSES DEVICES_PER_PROCESS -- COMMAND..." >&2
  exit 2
}

dry_run=0
port=""
while [[ $# -gt 0 && $1 == --* && $1 != -- ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --port=*) port=${1#--port=} ;;
    *) usage ;;
  esac
  shift
done
[[ $# -ge 4 && $3 == -- ]] || usage
num_processes=$1
devices=$2
shift 3
if ! [[ $num_processes =~ ^[1-9][0-9]*$ && $devices =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: NUM_PROCESSES and DEVICES_PER_PROCESS must be positive integers" >&2
  exit 2
fi

if [[ -z $port ]]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
# The caller's XLA flags stay, except another device count.
xla_flags="--xla_force_host_platform_device_count=$devices"
for flag in ${XLA_FLAGS:-}; do
  [[ $flag == --xla_force_host_platform_device_count=* ]] || xla_flags+=" $flag"
done

env_of() {  # the environment of process $1, as NAME=VALUE words
  printf '%s\n' "JAX_PLATFORMS=cpu" "XLA_FLAGS=$xla_flags" \
    "JAX_COORDINATOR_ADDRESS=127.0.0.1:$port" "JAX_NUM_PROCESSES=$num_processes" \
    "JAX_PROCESS_ID=$1"
}

if [[ $dry_run == 1 ]]; then
  for ((i = 0; i < num_processes; i++)); do
    line="[$i]"
    while IFS= read -r assignment; do line+=" $(printf '%q' "$assignment")"; done < <(env_of "$i")
    for word in "$@"; do line+=" $(printf '%q' "$word")"; done
    echo "$line"
  done
  exit 0
fi

declare -A running=()  # pid -> process index
for ((i = 0; i < num_processes; i++)); do
  mapfile -t assignments < <(env_of "$i")
  env "${assignments[@]}" "$@" > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) &
  running[$!]=$i
done

# A Ctrl-C reaches every process from the terminal already; a SIGTERM sent to
# this script alone is passed on.
trap 'kill -TERM "${!running[@]}" 2>/dev/null || true' TERM
trap '' INT

status=0
while ((${#running[@]} > 0)); do
  finished=""
  if wait -n -p finished "${!running[@]}"; then rc=0; else rc=$?; fi
  [[ -n $finished ]] || continue  # a trapped signal interrupted the wait
  unset "running[$finished]"
  if ((rc != 0 && status == 0)); then
    status=$rc
    ((${#running[@]} == 0)) || kill -KILL "${!running[@]}" 2>/dev/null || true
  fi
done
wait  # the output prefixers
exit "$status"
