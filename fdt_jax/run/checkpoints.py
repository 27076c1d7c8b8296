"""orbax checkpoints of the train state and the data iterator, saved together.

A checkpoint holds the step, parameters, optimizer state (and the EMA teacher's
parameters if the model family keeps one) and, for every host,
the position of its grain iterator, so a resumed run sees exactly the batches
the interrupted one would have seen. orbax writes each step into a temporary
directory and renames it when complete: a crash never leaves a half-written
checkpoint that a later run would load.
"""

import dataclasses
import os

from etils import epath
import grain
import orbax.checkpoint as ocp


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

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    # Not orbax's should_save, which also saves the first step of every run.
    return step % self.every_steps == 0 or self.manager.reached_preemption(step)

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """-> state (laid out as `abstract_state` says); the iterator is restored in place."""
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
    target = {'params': abstract_params}
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    return step, restored['state']['params']

  def wait(self):
    """Blocks until checkpoints being written in the background are complete."""
    self.manager.wait_until_finished()

  def close(self):
    self.wait()
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()  # also on errors: a save already under way is finished, not dropped
