"""orbax checkpoints of the train state and the data iterator, saved together.

A checkpoint holds the step, parameters, optimizer state (and the EMA teacher's
parameters if the model family keeps one) and, for every host,
the position of its grain iterator, so a resumed run sees exactly the batches
the interrupted one would have seen. orbax writes each step into a temporary
directory and renames it when complete: a crash never leaves a half-written
checkpoint that a later run would load; checksums written after each save
(run.integrity) catch what happens to the files later.
"""

import dataclasses
import logging
import os

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

from fdt_jax.run.integrity import Integrity


def param_shapes(tree) -> dict[str, tuple]:
  """{'fdt.fdt_tokens': (1024, 128), ...} of parameters (abstract, concrete or orbax's
  metadata, where each nnx variable is saved as {'value': array})."""
  def name(path):
    keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
    return '.'.join(keys[:-1] if keys and keys[-1] == 'value' else keys)
  return {name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class Checkpointer:

  def __init__(self, workdir: str, *, every_steps: int = 1, keep: int | None = None,
               asynchronous: bool = True, read_only: bool = False):
    self.directory = epath.Path(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')
    if read_only and not self.directory.exists():
      raise FileNotFoundError(f'no checkpoints in {workdir}: train first, or check --workdir')
    self.every_steps = every_steps
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, create=not read_only,
            read_only=read_only, enable_async_checkpointing=asynchronous),
        item_names=('state', 'data'))
    self.integrity = Integrity(self.directory)
    self.read_only = read_only

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def latest_intact_step(self) -> int | None:
    """The newest checkpoint whose files match their checksums. Newer damaged ones are moved
    to WORKDIR/checkpoints_damaged (each named in the log); if every checkpoint is damaged,
    ValueError."""
    moved = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      problem = self.integrity.problem(step)
      if problem is None:
        if moved:
          logging.warning('resuming from step %d instead', step)
        return step
      if jax.process_index() == 0:
        target = self.integrity.move_aside(step)
        logging.warning('checkpoint %d is damaged (%s): moved to %s', step, problem, target)
      moved.append(step)
      self._sync(f'moved aside {step}')
      self.manager.reload()
    if moved:
      raise ValueError(f'no checkpoint in {self.directory} is intact (steps {moved} were damaged '
                       f'and moved to {self.integrity.damaged_dir}): restore them from a copy, or '
                       'use a new --workdir to start again')
    return None

  def _sync(self, name: str) -> None:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(name)

  def _record_checksums(self) -> None:
    """Checksums of the checkpoints orbax has finalized (process 0)."""
    if jax.process_index() == 0 and not self.read_only:
      self.integrity.record(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    # Not orbax's should_save, which also saves the first step of every run.
    return step % self.every_steps == 0

  def reached_preemption(self, step: int) -> bool:
    """With jax.distributed: every host gets the same answer for the same step once
    JAX's preemption notifier has seen SIGTERM on any of them. Call it once per step."""
    return self.manager.reached_preemption(step)

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    self._record_checksums()  # of the earlier ones, finished by now or before
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """-> state (laid out as `abstract_state` says); the iterator is restored in place."""
    self.check_holds(step, abstract_state.params)
    try:
      return self._restore(step, abstract_state, data_iterator)
    except ValueError as e:
      if getattr(abstract_state, 'ema_params', ...) is not None or 'ema_params' not in str(e):
        raise
    # Written before the train state had an `ema_params` field (None without a teacher).
    fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
              if f.name != 'ema_params'}
    return abstract_state.replace(**self._restore(step, fields, data_iterator))

  def _restore(self, step: int, abstract_state, data_iterator):
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items))['state']

  def restore_params(self, step: int | None, abstract_params):
    """(step, params) of a checkpoint (the latest by default), laid out as
    `abstract_params` says; the optimizer state is not read."""
    steps = self.manager.all_steps()
    step = self.latest_step() if step is None else step
    if step is None or step not in steps:
      raise FileNotFoundError(f'no checkpoint for step {step} in {self.directory}; '
                              f'available: {sorted(steps)}')
    if problem := self.integrity.problem(step):
      raise ValueError(f'checkpoint {step} in {self.directory} is damaged ({problem}): choose '
                       f'another with --step (available: {sorted(steps)})')
    self.check_holds(step, abstract_params)
    target = {'params': abstract_params}
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    return step, restored['state']['params']

  def check_holds(self, step: int, abstract_params) -> None:
    """Raises ValueError, in one line, if checkpoint `step` holds other parameters than the
    model of `abstract_params` (a config that is not the run's)."""
    metadata = ocp.PyTreeCheckpointer().metadata(self.directory / str(step) / 'state')
    saved = param_shapes(metadata.item_metadata['params'])
    wanted = param_shapes(abstract_params)
    problems = []
    if lacks := sorted(wanted.keys() - saved.keys()):
      problems.append(f'{len(lacks)} parameters of the model are not in it ({lacks[0]}, ...)')
    if extra := sorted(saved.keys() - wanted.keys()):
      problems.append(f'{len(extra)} of its parameters are not in the model ({extra[0]}, ...)')
    if shapes := [k for k in sorted(wanted.keys() & saved.keys()) if wanted[k] != saved[k]]:
      k = shapes[0]
      problems.append(f'{len(shapes)} differ in shape ({k}: {saved[k]} saved, {wanted[k]} wanted)')
    if problems:
      raise ValueError(f'checkpoint {step} in {self.directory} is not of this model: '
                       f'{"; ".join(problems)}; use the config the run was trained with')

  def wait(self):
    """Blocks until checkpoints being written in the background are complete and their
    checksums written."""
    self.manager.wait_until_finished()
    self._record_checksums()

  def close(self):
    self.wait()
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()  # also on errors: a save already under way is finished, not dropped
