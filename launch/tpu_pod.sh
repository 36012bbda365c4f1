#!/usr/bin/env bash
# jaxgen on every worker (host) of a Cloud TPU VM slice, one process per worker.
#
#   launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=P] [--install=CMD] [--dry-run] \
#       -- jaxgen train --config=configs/X.py --workdir=/mnt/shared/runs/a
#
# What it does, in order (--dry-run prints these commands and runs none of them; it needs
# neither gcloud nor a TPU):
#   1. git archive: the repository's tracked files as they are in the working tree
#      (uncommitted edits included, through `git stash create`; untracked files, .venv and
#      runs/ are not shipped) into one tarball. The commit or stash id is printed, so a run
#      can be traced to its code.
#   2. gcloud compute tpus tpu-vm scp ... --worker=all: the tarball to every worker.
#   3. gcloud compute tpus tpu-vm ssh ... --worker=all: unpack it into ~/jaxgen (over the
#      previous copy; nothing there is deleted) and install: by default
#      `python3 -m pip install -q -e ~/jaxgen 'jax[tpu]'`, i.e. jaxgen with its
#      dependencies plus jax[tpu], which brings the libtpu matching that jax from PyPI.
#      --install=CMD replaces that command (a pinned jax, a requirements file, a venv;
#      --install= skips installing, for an image that already has everything).
#   4. gcloud compute tpus tpu-vm ssh ... --worker=all: the command after `--`, from
#      ~/jaxgen, on all workers at once; gcloud returns when every worker has finished.
#      jaxgen's runtime detects the TPU slice itself (JAX's GCE TPU cluster detection:
#      worker 0 coordinates, process id = worker number), so the command is the same on
#      every worker.
#
# The workdir must be a path every worker sees (a Filestore/NFS mount, or a gcsfuse mount
# of a bucket): every process takes part in the checkpoints. A relative workdir would be a
# different local directory on each worker.
#
# Environment the command runs with (on the workers):
#   LIBTPU_INIT_ARGS   MaxText's flags for overlapping collectives with compute on TPU:
#                      the data-parallel all-reduce optimisation (gradients of different
#                      sizes fused), asynchronous collective fusion including all-gathers
#                      across several steps, compute/collective overlap on the TensorCore,
#                      asynchronous all-gather (FSDP). A LIBTPU_INIT_ARGS set where this
#                      script runs is sent instead (set it empty for libtpu's defaults):
#                      libtpu refuses flags it does not know, so a libtpu that dropped one
#                      needs that.
#   PYTHONUNBUFFERED=1 progress lines arrive as they are printed, not in blocks.
#   PATH               ~/.local/bin first, where a user-level pip puts the jaxgen command.
# To set more, put them in the command: `-- env WANDB_MODE=offline jaxgen train ...`.
set -euo pipefail

usage() {
  echo "usage: launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=PROJECT] [--install=CMD] [--dry-run] -- COMMAND [ARGS...]" >&2
  exit 2
}
die() { echo "tpu_pod.sh: error: $*" >&2; exit "${2:-1}"; }

dry_run=0 tpu="" zone="" project="" install_set=0 install=""
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --install=*) install=${1#*=}; install_set=1 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "tpu_pod.sh: error: unknown option $1 (options take --name=value; the command goes after --)" >&2; usage ;;
  esac
  shift
done
(($#)) || { echo "tpu_pod.sh: error: no command after --" >&2; usage; }
[[ -n $tpu ]] || { echo "tpu_pod.sh: error: --tpu=NAME is required (the TPU VM's name)" >&2; usage; }
[[ -n $zone ]] || { echo "tpu_pod.sh: error: --zone=ZONE is required (the TPU VM's zone)" >&2; usage; }
((install_set)) || install="python3 -m pip install -q -e ~/jaxgen 'jax[tpu]'"

# One word as the shell would need it typed: bare when safe, else single-quoted.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
# A command-line argument: the same, but an option's value quoted alone (--name='a b').
quote_arg() {
  if [[ $1 =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    quote "$1"
  fi
}
join() {
  local word line=""
  for word in "$@"; do line+="${line:+ }$(quote_arg "$word")"; done
  printf '%s' "$line"
}
# Print a command line (quoted so it can be pasted), then run it unless --dry-run.
run() {
  join "$@"
  echo
  ((dry_run)) || "$@"
}

if ((!dry_run)) && ! command -v gcloud >/dev/null; then
  die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login', or use --dry-run to see the commands"
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
  die "$repo is not a git repository: the code is shipped with git archive"
# A stash commit holds the working tree's tracked files, uncommitted edits included;
# git stash create changes nothing (no stash entry, no files touched).
# (An identity is given for that commit alone, as git refuses to make one without it.)
tree=$(GIT_AUTHOR_NAME=tpu_pod.sh GIT_AUTHOR_EMAIL=tpu_pod.sh@localhost \
  GIT_COMMITTER_NAME=tpu_pod.sh GIT_COMMITTER_EMAIL=tpu_pod.sh@localhost \
  git -C "$repo" stash create)
tree=${tree:-$(git -C "$repo" rev-parse HEAD)}
tarball=${TMPDIR:-/tmp}/jaxgen-tpu-$tpu.tar.gz

gcloud_args=(--zone="$zone")
[[ -z $project ]] || gcloud_args+=(--project="$project")
default_libtpu_args="--xla_tpu_enable_data_parallel_all_reduce_opt=true"
default_libtpu_args+=" --xla_tpu_data_parallel_opt_different_sized_ops=true"
default_libtpu_args+=" --xla_tpu_enable_async_collective_fusion=true"
default_libtpu_args+=" --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true"
default_libtpu_args+=" --xla_tpu_enable_async_collective_fusion_multiple_steps=true"
default_libtpu_args+=" --xla_tpu_overlap_compute_collective_tc=true"
default_libtpu_args+=" --xla_enable_async_all_gather=true"
libtpu_args=${LIBTPU_INIT_ARGS-$default_libtpu_args}

setup="set -e; mkdir -p ~/jaxgen; tar -xzf ~/jaxgen-src.tar.gz -C ~/jaxgen${install:+; $install}"
command="cd ~/jaxgen && export PATH=\"\$HOME/.local/bin:\$PATH\" PYTHONUNBUFFERED=1 LIBTPU_INIT_ARGS=$(quote "$libtpu_args") && exec $(join "$@")"

run git -C "$repo" archive --format=tar.gz --output="$tarball" "$tree"
run gcloud compute tpus tpu-vm scp "$tarball" "$tpu:jaxgen-src.tar.gz" --worker=all "${gcloud_args[@]}"
run gcloud compute tpus tpu-vm ssh "$tpu" --worker=all "${gcloud_args[@]}" --command="$setup"
run gcloud compute tpus tpu-vm ssh "$tpu" --worker=all "${gcloud_args[@]}" --command="$command"
