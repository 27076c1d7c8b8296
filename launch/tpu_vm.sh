#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted $(...) are meant for the TPU workers' shell
# Trains fdt_jax on a Cloud TPU VM or pod slice: every worker runs the same command,
#   python -m fdt_jax.main --config=CONFIG --workdir=gs://... --multihost=yes [--config.KEY=VALUE ...]
# and the trainer's jax.distributed.initialize() finds the other workers by itself.
#
#   launch/tpu_vm.sh STEP... --name=NAME --zone=ZONE [options] [--config.KEY=VALUE ...] [-- ARGS...]
#
# Steps, run in the order given:
#   create   create the TPU VM (reused if READY, deleted and recreated if preempted)
#   setup    copy `git archive REF` of this repo to every worker; install Python, jax[tpu], requirements
#   run      start the trainer on every worker in the background (nohup; log ~/fdt_jax_run.log)
#   logs     follow worker 0's log until its trainer exits (Ctrl-C stops following, not training)
#   stop     stop the trainer on every worker
#   delete   delete the TPU VM
#   all      create setup run logs
#
# Options (or environment variables):
#   --name=NAME           FDT_TPU_NAME         TPU VM name
#   --zone=ZONE           FDT_TPU_ZONE         e.g. us-central2-b
#   --project=PROJECT     FDT_TPU_PROJECT      default: gcloud's configured project
#   --accelerator=TYPE    FDT_TPU_ACCELERATOR  for create: v4-32, v5litepod-16, v6e-8, ...
#   --version=RUNTIME     FDT_TPU_VERSION      for create; default from the accelerator (v4 and
#                                              older tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
#                                              v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
#   --spot                FDT_TPU_SPOT=1       create a Spot TPU (--preemptible for the older kind)
#   --config=FILE         FDT_CONFIG           for run, e.g. configs/vitb16.py
#   --workdir=gs://...    FDT_WORKDIR          for run; shared by all workers, resumed from if it has
#                                              checkpoints
#   --env=KEY=VALUE                            extra environment for the trainer (repeatable)
#   --ref=REF             FDT_REF              git ref that setup copies (default HEAD: commit first)
#   --python=PYTHON       FDT_TPU_PYTHON       Python on the workers (default python3.11, apt-installed
#                                              if missing: JAX needs >= 3.11, the images have 3.10)
#   --delete-after                             delete the TPU VM once the logs step ends
#   --dry-run                                  print the commands, one per line, run nothing
# Arguments starting with --config. go to the trainer (use the --config.KEY=VALUE form), and so
# does everything after --.
#
# Example:
#   launch/tpu_vm.sh all --dry-run --name=fdt-v4 --zone=us-central2-b --accelerator=v4-32 \
#     --config=configs/vitb16.py --workdir=gs://BUCKET/runs/vitb16 --config.batch_size=4096
set -eo pipefail  # not -u: the bash 3.2 of macOS takes an empty array for an unset one

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

LIBTPU_INDEX=https://storage.googleapis.com/jax-releases/libtpu_releases.html

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
usage() { sed -n '3,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# shellcheck source=launch/quote.sh
source "$REPO/launch/quote.sh"
# shellcheck source=launch/args.sh
source "$REPO/launch/args.sh"

# Prints the command, then runs it unless --dry-run.
run() {
  if ((DRY_RUN)); then
    quote_all "$@"; echo
  else
    echo "+ $(quote_all "$@")" >&2
    "$@"
  fi
}

default_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
  esac
}

NAME=${FDT_TPU_NAME:-}
ZONE=${FDT_TPU_ZONE:-}
PROJECT=${FDT_TPU_PROJECT:-}
ACCELERATOR=${FDT_TPU_ACCELERATOR:-}
VERSION=${FDT_TPU_VERSION:-}
SPOT=${FDT_TPU_SPOT:-0}
PREEMPTIBLE=0
CONFIG=${FDT_CONFIG:-}
WORKDIR=${FDT_WORKDIR:-}
REF=${FDT_REF:-HEAD}
PYTHON=${FDT_TPU_PYTHON:-python3.11}
DELETE_AFTER=0
DRY_RUN=0
STEPS=()
TRAINER_ENV=()
TRAINER_ARGS=()

set_option() {
  case $1 in
    --name) NAME=$2 ;;
    --zone) ZONE=$2 ;;
    --project) PROJECT=$2 ;;
    --accelerator) ACCELERATOR=$2 ;;
    --version) VERSION=$2 ;;
    --config) CONFIG=$2 ;;
    --workdir) WORKDIR=$2 ;;
    --env) [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants KEY=VALUE, got: $2"
           TRAINER_ENV+=("$2") ;;
    --ref) REF=$2 ;;
    --python) PYTHON=$2 ;;
  esac
}

VALUE_OPTIONS='--name|--zone|--project|--accelerator|--version|--config|--workdir|--env|--ref|--python'
take_word() {
  case $1 in
    create | setup | run | logs | stop | delete) STEPS+=("$1") ;;
    all) STEPS+=(create setup run logs) ;;
    --dry-run) DRY_RUN=1 ;;
    --spot) SPOT=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    --delete-after) DELETE_AFTER=1 ;;
    *) return 1 ;;
  esac
}
parse_args "$@"

has_step() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }

((${#STEPS[@]})) || die "give at least one step: create setup run logs stop delete all (see --help)"
[[ -n $NAME ]] || die "--name is required (or FDT_TPU_NAME)"
[[ -n $ZONE ]] || die "--zone is required (or FDT_TPU_ZONE)"
if has_step create; then
  [[ -n $ACCELERATOR ]] || die "--accelerator is required to create (e.g. v4-32, v5litepod-16)"
  VERSION=${VERSION:-$(default_version "$ACCELERATOR")}
  [[ -n $VERSION ]] || die "--version is required for accelerator $ACCELERATOR"
  ((!(SPOT && PREEMPTIBLE))) || die "--spot and --preemptible exclude each other"
fi
if has_step run; then
  [[ -n $CONFIG ]] || die "--config is required to run (e.g. --config=configs/vitb16.py)"
  [[ -n $WORKDIR ]] || die "--workdir is required to run (e.g. --workdir=gs://BUCKET/runs/NAME)"
  [[ $WORKDIR == gs://* ]] || die "--workdir must be a gs:// path that every worker can write, got: $WORKDIR"
fi
if ((DELETE_AFTER)) && [[ ${STEPS[${#STEPS[@]} - 1]} != logs ]]; then
  die "--delete-after needs logs as the last step (as in all), so it waits for the trainer"
fi

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -z $PROJECT ]] || WHERE+=(--project="$PROJECT")

# What the workers run, each as one line (so that --dry-run prints one line per command), in
# the home directory that ssh starts in: the code in fdt_jax/, Python in fdt_jax_venv/, the
# trainer's output in fdt_jax_run.log and its process id in fdt_jax_run.pid. The $(...) in
# single quotes are for the workers' shell.
join() { local sep=$1 out=$2 s; shift 2; for s in "$@"; do out+="$sep$s"; done; printf '%s' "$out"; }

ALIVE='[ -s fdt_jax_run.pid ] && kill -0 "$(cat fdt_jax_run.pid)" 2>/dev/null'
REFUSE_IF_ALIVE="if $ALIVE; then "'echo "$(hostname): a trainer is running; stop it first" >&2; exit 1; fi'

setup_command() {
  local jax_version py
  jax_version=$(sed -n 's/^jax==\([^ ;#]*\).*/\1/p' "$REPO/requirements.txt")
  [[ -n $jax_version ]] || die "no jax==VERSION pin in $REPO/requirements.txt"
  py=$(quote "$PYTHON")
  join '; ' 'set -e' "$REFUSE_IF_ALIVE" \
    "[ -x fdt_jax_venv/bin/pip ] || $py -m venv --clear fdt_jax_venv 2>/dev/null || { sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y $py $py-venv && $py -m venv --clear fdt_jax_venv; }" \
    'rm -rf fdt_jax && mkdir fdt_jax && tar -xzf fdt_jax.tar.gz -C fdt_jax && rm fdt_jax.tar.gz' \
    'fdt_jax_venv/bin/pip install -q --upgrade pip' \
    "fdt_jax_venv/bin/pip install -q -r fdt_jax/requirements.txt \"jax[tpu]==$jax_version\" -f $LIBTPU_INDEX" \
    'echo "$(hostname): ready, jax $(fdt_jax_venv/bin/python -c "import jax; print(jax.__version__)")"'
}

run_command() {
  # --multihost=yes: the trainer cannot tell a TPU VM from a laptop, so it is told.
  local trainer=(../fdt_jax_venv/bin/python -m fdt_jax.main
    --config="$CONFIG" --workdir="$WORKDIR" --multihost=yes "${TRAINER_ARGS[@]}")
  if ((${#TRAINER_ENV[@]})); then trainer=(env "${TRAINER_ENV[@]}" "${trainer[@]}"); fi
  join '; ' "$REFUSE_IF_ALIVE" \
    'echo "=== $(date -u) $(hostname)" >> fdt_jax_run.log' \
    'cd fdt_jax || exit 1' \
    "nohup $(quote_all "${trainer[@]}") >> ../fdt_jax_run.log 2>&1 < /dev/null & "'echo $! > ../fdt_jax_run.pid'
}

LOGS_COMMAND="if $ALIVE; then "'tail -n 200 -F --pid="$(cat fdt_jax_run.pid)" fdt_jax_run.log; else tail -n 200 fdt_jax_run.log; fi'

STOP_COMMAND="if $ALIVE; then $(join '; ' 'pid=$(cat fdt_jax_run.pid)' 'kill "$pid"' \
  'for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done' \
  'kill -9 "$pid" 2>/dev/null || true' 'echo "$(hostname): stopped"'); "'else echo "$(hostname): not running"; fi'

step_create() {
  local describe=("${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state)')
  local create=("${GCLOUD[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR" --version="$VERSION")
  if ((SPOT)); then create+=(--spot); fi
  if ((PREEMPTIBLE)); then create+=(--preemptible); fi
  if ((DRY_RUN)); then
    run "${describe[@]}"
    echo "# only if it does not exist (a PREEMPTED or TERMINATED one is deleted first):"
    run "${create[@]}"
    return
  fi
  local state
  state=$("${describe[@]}" 2>/dev/null) || state=""
  case $state in
    "") run "${create[@]}" ;;
    READY) echo "TPU VM $NAME is READY: reusing it" >&2 ;;
    PREEMPTED | TERMINATED)
      echo "TPU VM $NAME is $state: deleting and recreating it" >&2
      step_delete
      run "${create[@]}" ;;
    *) die "TPU VM $NAME is $state; try again once it is READY" ;;
  esac
}

step_setup() {
  local tarball="${TMPDIR:-/tmp}/fdt_jax-$NAME.tar.gz"
  if ((!DRY_RUN)) && [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no) ]]; then
    echo "tpu_vm.sh: warning: uncommitted changes are not copied (git archive $REF)" >&2
  fi
  run git -C "$REPO" archive --format=tar.gz --output="$tarball" "$REF"
  run "${GCLOUD[@]}" scp "$tarball" "$NAME:fdt_jax.tar.gz" "${WHERE[@]}" --worker=all
  run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$(setup_command)"
}

step_run() { run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$(run_command)"; }
step_logs() { run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=0 --command="$LOGS_COMMAND"; }
step_stop() { run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$STOP_COMMAND"; }
step_delete() { run "${GCLOUD[@]}" delete "$NAME" "${WHERE[@]}" --quiet; }

for step in "${STEPS[@]}"; do
  "step_$step"
done
if ((DELETE_AFTER)); then
  step_delete
fi
