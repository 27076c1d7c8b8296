r"""Evaluates a checkpoint with the config's evaluators and prints a table.

  python -m fdt_jax.evaluate --config=configs/tiny.py --workdir=runs/tiny [--step=N] \
      [--config.evals.imagenet.max_examples=1000 ...]

The config says what to evaluate (`config.evals`); the workdir says which model.
Results also go to WORKDIR/metrics.jsonl, at the checkpoint's step.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fdt_jax import cli, parallel  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run whose checkpoint to evaluate.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step; default: the latest.')
_MULTIHOST = flags.DEFINE_enum('multihost', 'auto', ['auto', 'yes', 'no'], 'As in fdt_jax.main.')
flags.mark_flags_as_required(['config', 'workdir'])


def evaluate(config, workdir: str, step: int | None = None) -> tuple[int, dict]:
  """(step, {evaluator/metric: value}) for a checkpoint of `workdir`."""
  import jax
  from flax import nnx

  from fdt_jax.data.sources import build_data
  from fdt_jax.eval import build_evaluators
  from fdt_jax.train import metrics as metrics_lib
  from fdt_jax.train.checkpoints import Checkpointer
  from fdt_jax.train.state import abstract_params, state_shardings
  from fdt_jax.train.workdir import tokenizer_path

  if not config.evals:
    raise ValueError('the config lists no evaluators: add some under config.evals')
  if not config.data.tokenizer and tokenizer_path(workdir):
    config = config.unlock()
    config.data.tokenizer = tokenizer_path(workdir)  # the one the run trained with
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  data = build_data(config)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract = abstract_params(data.model_config, mesh, rules)
    step, params = Checkpointer(workdir, read_only=True).restore_params(step, abstract)
    evaluators = build_evaluators(config, data, graphdef, mesh, state_shardings(abstract))
    results = {}
    for name, evaluator in evaluators.items():
      results.update({f'{name}/{k}': v for k, v in evaluator.run(params).items()})
  if jax.process_index() == 0:
    metrics_lib.JsonlWriter(workdir).write_scalars(step, results)
  return step, results


def table(step: int, results: dict) -> str:
  width = max(len(k) for k in results)
  lines = [f'{"step":<{width}}  {step}'] + [f'{k:<{width}}  {v:8.2f}' for k, v in results.items()]
  return '\n'.join(lines)


def main(argv):
  config = cli.start(argv, _CONFIG, _MULTIHOST.value)
  try:
    step, results = evaluate(config, _WORKDIR.value, _STEP.value)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(str(e))
  print(table(step, results))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
