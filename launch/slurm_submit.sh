#!/usr/bin/env bash
# Submits launch/slurm_gpu.sbatch with the process layout spelled out.
#
#   launch/slurm_submit.sh [options] --config=FILE --workdir=DIR [--config.KEY=VALUE ...] [-- ARGS...]
#
# Options:
#   --nodes=N            nodes (default 1)
#   --gpus-per-node=G    GPUs per node (default 8)
#   --per=gpu|node       one JAX process per GPU (default) or one per node driving all its GPUs
#   --cpus-per-gpu=C     CPU cores per GPU, for the input pipeline (default 8)
#   --partition=P  --account=A  --time=T  --job-name=NAME   passed to sbatch
#   --sbatch=OPTION      any other sbatch option, e.g. --sbatch=--qos=high (repeatable)
#   --dry-run            print the sbatch command and the srun line each job runs; run nothing
# Arguments starting with --config. and everything after -- go to the trainer; --config and
# --workdir are required. The job's output goes to slurm_logs/JOBNAME-JOBID.out.
#
# Example:
#   launch/slurm_submit.sh --dry-run --nodes=2 --config=configs/vitb16.py \
#     --workdir=/shared/runs/vitb16 --config.batch_size=4096
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=$REPO/launch/slurm_gpu.sbatch

die() { echo "slurm_submit.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# shellcheck source=launch/quote.sh
source "$REPO/launch/quote.sh"
# shellcheck source=launch/args.sh
source "$REPO/launch/args.sh"

NODES=1 GPUS_PER_NODE=8 PER=gpu CPUS_PER_GPU=8 JOB_NAME=fdt_jax DRY_RUN=0
CONFIG="" WORKDIR=""
SBATCH_OPTIONS=()
TRAINER_ARGS=()

set_option() {
  case $1 in
    --nodes) NODES=$2 ;;
    --gpus-per-node) GPUS_PER_NODE=$2 ;;
    --per) PER=$2 ;;
    --cpus-per-gpu) CPUS_PER_GPU=$2 ;;
    --job-name) JOB_NAME=$2 ;;
    --partition | --account | --time) SBATCH_OPTIONS+=("$1=$2") ;;
    --sbatch) SBATCH_OPTIONS+=("$2") ;;
    --config) CONFIG=$2 ;;
    --workdir) WORKDIR=$2 ;;
  esac
}

VALUE_OPTIONS='--nodes|--gpus-per-node|--per|--cpus-per-gpu|--job-name|--partition|--account|--time|--sbatch|--config|--workdir'
take_word() {
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}
parse_args "$@"

[[ -n $CONFIG ]] || die "--config is required (e.g. --config=configs/vitb16.py)"
[[ -n $WORKDIR ]] || die "--workdir is required (e.g. --workdir=gs://BUCKET/runs/NAME)"
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got: $NODES"
[[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got: $GPUS_PER_NODE"
[[ $CPUS_PER_GPU =~ ^[1-9][0-9]*$ ]] || die "--cpus-per-gpu must be a positive integer, got: $CPUS_PER_GPU"
case $PER in
  gpu) TASKS_PER_NODE=$GPUS_PER_NODE CPUS_PER_TASK=$CPUS_PER_GPU ;;
  node) TASKS_PER_NODE=1 CPUS_PER_TASK=$((CPUS_PER_GPU * GPUS_PER_NODE)) ;;
  *) die "--per must be gpu or node, got: $PER" ;;
esac

SUBMIT=(sbatch --job-name="$JOB_NAME" --nodes="$NODES" --ntasks-per-node="$TASKS_PER_NODE"
  --gpus-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK"
  --chdir="$REPO" --output="$REPO/slurm_logs/%x-%j.out" "${SBATCH_OPTIONS[@]}"
  "$SCRIPT" --config="$CONFIG" --workdir="$WORKDIR" "${TRAINER_ARGS[@]}")

if ((DRY_RUN)); then
  quote_all mkdir -p "$REPO/slurm_logs"; echo
  quote_all "${SUBMIT[@]}"; echo
  echo "# then, in the job, $NODES node(s) x $TASKS_PER_NODE task(s):"
  # The batch script's own dry run, in the allocation requested above.
  (cd "$REPO" && env -u SLURM_GPUS_PER_TASK -u CUDA_VISIBLE_DEVICES -u JAX_LOCAL_DEVICE_IDS DRY_RUN=1 \
    SLURM_NNODES="$NODES" SLURM_NTASKS=$((NODES * TASKS_PER_NODE)) \
    SLURM_GPUS_ON_NODE="$GPUS_PER_NODE" SLURM_CPUS_PER_TASK="$CPUS_PER_TASK" \
    bash "$SCRIPT" --config="$CONFIG" --workdir="$WORKDIR" "${TRAINER_ARGS[@]}")
  exit 0
fi

command -v sbatch >/dev/null || die "sbatch not found: run this on the cluster's login node (or use --dry-run)"
mkdir -p "$REPO/slurm_logs"
echo "+ $(quote_all "${SUBMIT[@]}")" >&2
exec "${SUBMIT[@]}"
