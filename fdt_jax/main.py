r"""Trains (and evaluates) a model: flags -> config -> train_and_evaluate.

  python -m fdt_jax.main --config=configs/tiny.py --workdir=runs/tiny \
      [--config.batch_size=64 --config.total_steps=500 ...]

Rerunning the same command resumes from the latest checkpoint in the workdir.
"""

import logging
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # clu imports TensorFlow; keep its start-up quiet

from absl import app, flags
from ml_collections import config_flags

from fdt_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and summaries go here.')
_MULTIHOST = flags.DEFINE_enum(
    'multihost', 'auto', ['auto', 'yes', 'no'],
    'Start jax.distributed: auto (from JAX_COORDINATOR_ADDRESS / SLURM), yes (TPU pods), no.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  config = cli.start(argv, _CONFIG, _MULTIHOST.value)
  from fdt_jax.train.loop import dump_results, train_and_evaluate  # after jax.distributed
  try:
    results = train_and_evaluate(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
    logging.debug('traceback of the error below', exc_info=True)  # shown with --verbosity=1
    cli.fail(str(e))
  if results:
    print(dump_results(results))


if __name__ == '__main__':  # grain's worker processes import this module again
  app.run(main, flags_parser=cli.parse_flags)
