# shellcheck shell=bash
# Argument parsing shared by tpu_vm.sh and slurm_submit.sh; sourced, not run.
#
# The launcher defines, before calling `parse_args "$@"`:
#   VALUE_OPTIONS    'opt1|opt2|...': options taking a value, as --opt=VALUE or --opt VALUE
#   set_option OPT VALUE   stores one of them
#   take_word WORD   returns 0 if WORD is one of its own bare words or switches (and stores it)
#   die MESSAGE, usage
# Arguments starting with --config. and everything after -- go to TRAINER_ARGS.

ARGS_HINT='trainer arguments: --config.KEY=VALUE, or after --; see --help'

parse_args() {
  while (($#)); do
    case $1 in
      --config.*) TRAINER_ARGS+=("$1") ;;
      --) shift; TRAINER_ARGS+=("$@"); break ;;
      -h | --help) usage; exit 0 ;;
      *)
        if take_word "$1"; then
          :
        elif [[ $1 == --*=* ]]; then
          [[ ${1%%=*} =~ ^($VALUE_OPTIONS)$ ]] || die "unknown argument: $1 ($ARGS_HINT)"
          set_option "${1%%=*}" "${1#*=}"
        else
          [[ $1 =~ ^($VALUE_OPTIONS)$ ]] || die "unknown argument: $1 ($ARGS_HINT)"
          (($# >= 2)) || die "$1 needs a value"
          set_option "$1" "$2"
          shift
        fi ;;
    esac
    shift
  done
}
