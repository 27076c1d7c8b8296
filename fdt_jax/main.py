r"""Trains (and evaluates) a model: flags -> config -> train_and_evaluate.

  python -m fdt_jax.main --config=configs/tiny.py --workdir=runs/tiny \
      [--config.batch_size=64 --config.total_steps=500 ...]

Rerunning the same command resumes from the latest checkpoint in the workdir. A config
that differs from the workdir's run in the model, the data, the optimizer or the seed is
refused (--accept_config_change continues the run with the change, recorded in
WORKDIR/config_changes.jsonl). SIGTERM or SIGINT saves the current step and exits with
code 75 (launch/ restarts on it).
"""

import logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # clu imports TensorFlow; keep its start-up quiet

from absl import app, flags

from fdt_jax import cli

_FLAGS = cli.define_flags('config', 'workdir', 'multihost')
_ACCEPT = flags.DEFINE_bool(
    'accept_config_change', False,
    'Continue the workdir\'s run although the config changes its model, data or optimizer.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  config = cli.start(argv, _FLAGS.config, _FLAGS.multihost.value)
  from fdt_jax.train.loop import (PREEMPTED_EXIT_CODE, Preempted, dump_results,  # after
                                  train_and_evaluate)  # jax.distributed
  try:
    results = train_and_evaluate(config, _FLAGS.workdir.value, _ACCEPT.value)
  except Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
    logging.debug('traceback of the error below', exc_info=True)  # shown with --verbosity=1
    cli.fail(str(e))
  if results:
    print(dump_results(results))


if __name__ == '__main__':  # grain's worker processes import this module again
  app.run(main, flags_parser=cli.parse_flags)
