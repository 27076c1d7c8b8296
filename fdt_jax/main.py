r"""Trains (and evaluates) a model: flags -> config -> train_and_evaluate.

  python -m fdt_jax.main --config=configs/tiny.py --workdir=runs/tiny \
      [--config.batch_size=64 --config.total_steps=500 ...]

Rerunning the same command resumes from the latest checkpoint in the workdir.
"""

import logging
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # clu imports TensorFlow; keep its start-up quiet

from absl import app, flags

from fdt_jax import cli

_FLAGS = cli.define_flags('config', 'workdir', 'multihost')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  config = cli.start(argv, _FLAGS.config, _FLAGS.multihost.value)
  from fdt_jax.train.loop import dump_results, train_and_evaluate  # after jax.distributed
  try:
    results = train_and_evaluate(config, _FLAGS.workdir.value)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
    logging.debug('traceback of the error below', exc_info=True)  # shown with --verbosity=1
    cli.fail(str(e))
  if results:
    print(dump_results(results))


if __name__ == '__main__':  # grain's worker processes import this module again
  app.run(main, flags_parser=cli.parse_flags)
