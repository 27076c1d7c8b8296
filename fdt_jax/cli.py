"""What the command-line entry points share: their flags, flag parsing with one-line
errors, and the start of a command (the config, then jax.distributed)."""

import sys
import types

from absl import flags


def _define(name: str):
  if name in flags.FLAGS:  # another entry point imported in this process defined it already
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  if name == 'config':
    from ml_collections import config_flags
    return config_flags.DEFINE_config_file('config', None, 'A configs/*.py file[:ARG].',
                                           lock_config=True)
  if name == 'workdir':
    return flags.DEFINE_string('workdir', None, 'The run: checkpoints, metrics and summaries.')
  if name == 'step':
    return flags.DEFINE_integer('step', None, 'The checkpoint step; default: the latest.')
  if name == 'multihost':
    return flags.DEFINE_enum(
        'multihost', 'auto', ['auto', 'yes', 'no'],
        'Start jax.distributed: auto (from JAX_COORDINATOR_ADDRESS / SLURM), yes (TPU pods), no.')
  raise ValueError(f'no shared flag {name!r}')


def define_flags(*names: str):
  """The flags main, evaluate and export share, defined once here: --config, --workdir,
  --step, --multihost. Returns their holders as attributes (flags.config.value)."""
  return types.SimpleNamespace(**{name: _define(name) for name in names})


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
