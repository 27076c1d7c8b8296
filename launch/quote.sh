# shellcheck shell=bash
# Quoting shared by the launchers; sourced, not run.

# Quotes one word for a POSIX shell, like Python's shlex.quote.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    local sq="'" escaped="'\"'\"'"
    printf "'%s'" "${1//$sq/$escaped}"
  fi
}

# Quotes words for a shell, --flag=VALUE as --flag='VALUE' (the same word, easier to read).
quote_all() {
  local word out=""
  for word in "$@"; do
    out+=${out:+ }
    if [[ $word =~ ^--[A-Za-z0-9_.-]+= ]]; then
      out+="${word%%=*}=$(quote "${word#*=}")"
    else
      out+=$(quote "$word")
    fi
  done
  printf '%s' "$out"
}
