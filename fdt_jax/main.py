r"""Trains (and evaluates) a model: flags -> config -> train_and_evaluate.

  python -m fdt_jax.main --config=configs/tiny.py --workdir=runs/tiny \
      [--config.batch_size=64 --config.total_steps=500 ...]

Rerunning the same command resumes from the latest checkpoint in the workdir.
"""

import logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # clu imports TensorFlow; keep its start-up quiet

from absl import app, flags
from ml_collections import config_flags

from fdt_jax import parallel

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and summaries go here.')
_MULTIHOST = flags.DEFINE_enum(
    'multihost', 'auto', ['auto', 'yes', 'no'],
    'Start jax.distributed: auto (from JAX_COORDINATOR_ADDRESS / SLURM), yes (TPU pods), no.')
flags.mark_flags_as_required(['config', 'workdir'])


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  try:
    config.seed  # ml_collections defers a config file's load error to the first access
  except OSError as e:
    fail(one_line(e), code=2)
  parallel.initialize_distributed(_MULTIHOST.value)
  from fdt_jax.train.loop import dump_results, train_and_evaluate  # after jax.distributed
  try:
    results = train_and_evaluate(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
    logging.debug('traceback of the error below', exc_info=True)  # shown with --verbosity=1
    fail(str(e))
  if results:
    print(dump_results(results))


if __name__ == '__main__':  # grain's worker processes import this module again
  app.run(main, flags_parser=parse_flags)
