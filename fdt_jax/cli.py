"""What the command-line entry points share: flag parsing with one-line errors."""

import sys

from absl import flags


def parse_flags(argv):
  """absl's parsing, with a bad --config or override reported in one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    fail(one_line(e), code=2)


def one_line(e: Exception) -> str:
  """ml_collections reports a bad key as an escaped repr and a failing config file with
  its traceback: keep the line that says what is wrong."""
  text = str(e).replace("\\'", "'").replace('\\n', ' ')
  if isinstance(e, (AttributeError, KeyError)):
    quoted = len(text) > 1 and text[0] == text[-1] == "'"
    text = 'unknown config key ' + (text[1:-1] if quoted else text)
  return [line.strip() for line in text.splitlines() if line.strip()][-1]


def fail(message: str, code: int = 1):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def start(argv, config_flag, multihost: str):
  """The common start of a command: no stray arguments, the --config value (a config
  file that failed to load is reported in one line: ml_collections defers that error
  to the first access), then jax.distributed."""
  from fdt_jax import parallel
  if len(argv) > 1:
    fail(f'unexpected arguments: {" ".join(argv[1:])}', code=2)
  config = config_flag.value
  try:
    config.seed
  except OSError as e:
    fail(one_line(e), code=2)
  parallel.initialize_distributed(multihost)
  return config
