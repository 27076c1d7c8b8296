"""The training loop: data -> sharded global batch -> train step -> metrics,
checkpoints and evaluations, resuming from the latest checkpoint in the workdir."""

import functools
import json
import logging
import signal
import threading

import jax
import numpy as np
from clu import periodic_actions
from flax import nnx

from fdt_jax import parallel
from fdt_jax.config import check_config
from fdt_jax.data.sources import build_data
from fdt_jax.eval import build_evaluators, due_evaluators
from fdt_jax.models import get_family, model_config
from fdt_jax.objectives import check_objectives, combine
from fdt_jax.run import (Checkpointer, check_config_change, check_writable, create_writer,
                         save_run_files, trim_metrics)
from fdt_jax.train.optimizer import make_optimizer
from fdt_jax.train.state import prepare_train_state
from fdt_jax.train.step import train_step


class NonFiniteLossError(FloatingPointError):
  pass


# The exit code of a run stopped by SIGTERM or SIGINT after saving its checkpoint (sysexits.h's
# EX_TEMPFAIL: try again). Rerunning the same command resumes; launch/ restarts on it.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
  """SIGTERM / SIGINT: the checkpoint of `step` is saved and durable."""

  def __init__(self, step: int, signal_name: str, directory):
    super().__init__(f'{signal_name}: saved step {step} in {directory}; rerun the same command '
                     'to resume')
    self.step = step


def first_nonfinite(history):
  """The first step among [(step, metrics)] whose loss or new parameters are not finite."""
  for step, m in history:
    if not (np.isfinite(m['loss']) and np.isfinite(m['param_norm'])):
      return step
  return None


def mean_metrics(history) -> dict:
  return {k: float(np.mean([m[k] for _, m in history])) for k in history[-1][1]}


def check_batch_fields(family, data) -> None:
  if missing := [f for f in family.batch_fields if f not in data.batch_fields]:
    raise ValueError(f'model family {family.name!r} needs batch fields {", ".join(missing)} that '
                     f'data {data.config.data.name!r} does not provide (it gives '
                     f'{", ".join(data.batch_fields)})')


def train_and_evaluate(config, workdir: str, accept_config_change: bool = False):
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the
  metrics of the last evaluation. Raises Preempted after saving on SIGTERM / SIGINT.

  Everything about the input is checked before anything is written to the workdir: the
  settings, a config that differs from the run's (accept_config_change lets a deliberate
  change through, recorded), the model, the objectives, the mesh and the data."""
  check_config(config)
  config_changes = check_config_change(workdir, config, accept_config_change)
  family = get_family(config.model.name)
  model_cfg = model_config(config.model)
  check_objectives(config.objectives, family)
  mesh = parallel.make_mesh(config.mesh)
  parallel.check_batch_size(config.batch_size, mesh, config.accumulation_steps)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  data = build_data(config, model_cfg)
  check_batch_fields(family, data)
  check_writable(workdir)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  objective = combine(dict(config.objectives))
  init_params = None
  if config.model.init_from:  # e.g. FDT training from pretrained CLIP towers
    from fdt_jax.formats.open_clip import import_open_clip
    init_params = import_open_clip(config.model.init_from, model_cfg, seed=config.seed,
                                   tokenizer=data.tokenizer.model_path,
                                   text_tower=config.model.get('init_text_tower', True))
  checkpointer = Checkpointer(workdir, every_steps=config.checkpoint_every_steps,
                              keep=config.keep_checkpoints)
  latest = checkpointer.latest_intact_step()  # damaged newer ones are moved aside

  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules), checkpointer:
    graphdef, abstract_state, init = prepare_train_state(
        config.model, tx, mesh, rules, config.seed, teacher=family.teacher)
    shardings = parallel.shardings_of(abstract_state)
    train_iter = data.train_iterator(process_index=jax.process_index(),
                                     process_count=jax.process_count())
    if latest is None:
      state = init(init_params)
    else:
      logging.info('Resuming from the checkpoint of step %d in %s', latest, checkpointer.directory)
      state = checkpointer.restore(latest, abstract_state, train_iter)
    # The run's files change only now that the model, the data and the state are known good.
    save_run_files(workdir, config, data.tokenizer.model_path, config_changes)
    if jax.process_index() == 0:  # the steps after the checkpoint are trained, and logged, again
      trim_metrics(workdir, after_step=-1 if latest is None else latest)
    writer = create_writer(workdir)
    if latest is None and (counts := data.conversion_counts()):  # what the conversion skipped
      logging.info('Training data %s: %s', config.data.name, counts)
      writer.write_scalars(0, counts)
    step_fn = jax.jit(
        functools.partial(train_step, graphdef=graphdef, tx=tx, objective=objective,
                          schedule=schedule, seed=config.seed, prepare_batch=family.prepare_batch,
                          batch_metrics=family.batch_metrics,
                          model_cfg=model_cfg, ema_decay=float(config.model.get('ema_decay', 0.0)),
                          accumulation_steps=config.accumulation_steps),
        in_shardings=(shardings, parallel.batch_sharding(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=(0,))
    evaluators = build_evaluators(config, data, graphdef, mesh, shardings.params)
    report = periodic_actions.ReportProgress(
        num_train_steps=config.total_steps, writer=writer, every_steps=config.log_every_steps,
        every_secs=None)

    step = int(state.step)
    if step >= config.total_steps:
      logging.info('Already trained for %d steps; evaluating only', step)
      return run_evaluators(evaluators, state.params, step, writer, report)  # all of them
    history = []  # (step, device metrics) since the last log
    results = {}
    with StopOnSignal() as signals:
      while step < config.total_steps:
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          batch = parallel.global_batch(next(train_iter), mesh)
          state, step_metrics = step_fn(state, batch)
        step += 1
        history.append((step, step_metrics))
        report(step)
        # Read once per step: a signal arriving later in this step is seen at the next one,
        # so the decision to stop and the decision to save are always taken together.
        stop = signals.received or ('SIGTERM' if checkpointer.reached_preemption(step) else None)
        is_last = step == config.total_steps
        save_now = checkpointer.should_save(step) or is_last or stop
        if step % config.log_every_steps == 0 or save_now:
          write_train_metrics(writer, history, checkpointer)  # raises if training diverged
          history = []
        if save_now:
          checkpointer.save(step, state, train_iter, force=True)
        if stop:
          checkpointer.wait()  # durable, on every host, before saying so
          if checkpointer.latest_step() != step:
            raise RuntimeError(f'{stop}: the checkpoint of step {step} was not saved')
          writer.flush()
          raise Preempted(step, stop, checkpointer.directory)
        if due := due_evaluators(config, evaluators, step, is_last):
          results.update(run_evaluators(due, state.params, step, writer, report))
  return results


def run_evaluators(evaluators, params, step, writer, report) -> dict:
  results = {}
  for name, evaluator in evaluators.items():
    with report.timed(f'eval_{name}'):
      values = evaluator.run(params)
    results.update({f'{name}/{k}': v for k, v in values.items()})
  if results:
    writer.write_scalars(step, results)
    writer.flush()
  return results


def write_train_metrics(writer, history, checkpointer) -> None:
  """Averages the metrics of the steps since the last log; stops on divergence.

  Runs before every checkpoint, so a checkpoint never holds a diverged state.
  """
  host_history = [(s, jax.device_get(m)) for s, m in history]
  bad = first_nonfinite(host_history)
  if bad is not None:
    good = checkpointer.latest_step()
    where = (f'the last good checkpoint is step {good} in {checkpointer.directory}' if good is not None
             else 'no checkpoint was saved before it (a rerun starts from scratch)')
    raise NonFiniteLossError(
        f'training diverged at step {bad} (non-finite loss or parameters); {where}: lower the '
        'learning rate or enable gradient clipping (--config.optimizer.grad_clip_norm=1.0)')
  step = host_history[-1][0]
  writer.write_scalars(step, {f'train/{k}': v for k, v in mean_metrics(host_history).items()})


class StopOnSignal:
  """On a single process, SIGTERM (a preempted VM, `launch/tpu_vm.sh stop`) and SIGINT
  (Ctrl-C) make the loop finish the step, save it and raise Preempted; `received` names the
  signal. With jax.distributed, JAX's own preemption notifier takes SIGTERM and orbax's
  `reached_preemption` makes every host stop at the same step instead."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


def dump_results(results: dict) -> str:
  return json.dumps({k: round(float(v), 4) for k, v in results.items()}, indent=1)
