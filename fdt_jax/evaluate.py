r"""Evaluates a checkpoint with the config's evaluators and prints a table.

  python -m fdt_jax.evaluate --config=configs/tiny.py --workdir=runs/tiny [--step=N] \
      [--config.eval_batch_size=128 ...]

The config says what to evaluate (`config.evals`); the workdir says which model: a config
whose model differs from the run's (WORKDIR/config.json) is refused.
Results also go to WORKDIR/metrics.jsonl, at the checkpoint's step.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags  # noqa: E402

from fdt_jax import cli, parallel  # noqa: E402

_FLAGS = cli.define_flags('config', 'workdir', 'step', 'multihost')
flags.mark_flags_as_required(['config', 'workdir'])


# Model keys that do not change which model a checkpoint holds.
EVAL_MAY_CHANGE = ('model.dtype', 'model.remat', 'model.remat_policy', 'model.fdt.max_pool',
                   'model.init_from', 'model.init_text_tower', 'model.ema_decay')


def evaluate(config, workdir: str, step: int | None = None) -> tuple[int, dict]:
  """(step, {evaluator/metric: value}) for a checkpoint of `workdir`."""
  import jax
  from flax import nnx

  from fdt_jax.data.sources import build_data
  from fdt_jax.eval import build_evaluators
  from fdt_jax.models import model_config
  from fdt_jax.run import (JsonlWriter, abstract_params, config_changes, load_config,
                           restore_params, tokenizer_path)

  if not config.evals:
    raise ValueError('the config lists no evaluators: add some under config.evals')
  differ = [k for k in config_changes(load_config(workdir).to_dict(), config)
            if k.startswith('model.') and k not in EVAL_MAY_CHANGE]
  if differ:
    raise ValueError(f'the config\'s model differs from the run\'s in {workdir}/config.json '
                     f'({", ".join(differ[:4])}): evaluate with the config it was trained with')
  if not config.data.tokenizer and tokenizer_path(workdir):
    config = config.unlock()
    config.data.tokenizer = tokenizer_path(workdir)  # the one the run trained with
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  model_cfg = model_config(config.model)
  data = build_data(config, model_cfg)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract = abstract_params(config.model, mesh, rules)
    step, params = restore_params(workdir, abstract, step)
    evaluators = build_evaluators(config, data, graphdef, mesh, parallel.shardings_of(abstract))
    results = {}
    for name, evaluator in evaluators.items():
      results.update({f'{name}/{k}': v for k, v in evaluator.run(params).items()})
  if jax.process_index() == 0:
    JsonlWriter(workdir).write_scalars(step, results)
  return step, results


def table(step: int, results: dict) -> str:
  width = max(len(k) for k in results)
  lines = [f'{"step":<{width}}  {step}'] + [f'{k:<{width}}  {v:8.2f}' for k, v in results.items()]
  return '\n'.join(lines)


def main(argv):
  config = cli.start(argv, _FLAGS.config, _FLAGS.multihost.value)
  try:
    step, results = evaluate(config, _FLAGS.workdir.value, _FLAGS.step.value)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(str(e))
  print(table(step, results))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
