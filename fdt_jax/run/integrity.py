"""Checksums of saved checkpoints, so that a damaged one is found before it is loaded.

orbax makes a checkpoint appear only when it is complete, but it does not notice what
happens to the files afterwards: a truncated or deleted array file fails deep inside
tensorstore, and bytes overwritten in place can load without any error. So once a save
is finalized, the SHA-256 of every file in it is written to

    WORKDIR/checkpoint_checksums/STEP.json     {relative path: sha256}

and before a run resumes, the newest checkpoint is checked against it. A checkpoint that
fails is moved, never deleted, to WORKDIR/checkpoints_damaged/STEP, and the next newest is
tried. A checkpoint finalized just before a crash may have no checksums yet; it is used as
orbax left it (and said so in the log).
"""

import hashlib
import json
import logging

from etils import epath
import orbax.checkpoint as ocp

from fdt_jax.atomic_write import write_json_atomically

CHECKSUMS = 'checkpoint_checksums'
DAMAGED = 'checkpoints_damaged'


def _files(directory: epath.Path):
  for path in directory.iterdir():  # (epath has no recursive glob on gs://)
    if path.is_dir():
      yield from _files(path)
    else:
      yield path


def checksums(step_dir: epath.Path) -> dict[str, str]:
  """{path relative to step_dir: sha256 hex} of every file under step_dir."""
  sums = {}
  for path in sorted(_files(step_dir)):
    digest = hashlib.sha256()
    with path.open('rb') as f:
      while chunk := f.read(1 << 22):
        digest.update(chunk)
    sums[str(path.relative_to(step_dir))] = digest.hexdigest()
  return sums


class Integrity:
  """The checksums of the checkpoints in `checkpoints_dir` (WORKDIR/checkpoints)."""

  def __init__(self, checkpoints_dir: epath.Path):
    self.checkpoints_dir = checkpoints_dir
    self.sums_dir = checkpoints_dir.parent / CHECKSUMS
    self.damaged_dir = checkpoints_dir.parent / DAMAGED

  def _sums_file(self, step: int) -> epath.Path:
    return self.sums_dir / f'{step}.json'

  def record(self, steps) -> None:
    """Writes the checksums of finalized `steps` that have none yet, and removes those of
    checkpoints orbax has since deleted (older than the newest, kept no longer)."""
    steps = [s for s in steps if self._finalized(s)]
    for step in steps:
      if not self._sums_file(step).exists():
        write_json_atomically(self._sums_file(step), checksums(self.checkpoints_dir / str(step)))
    if steps and self.sums_dir.exists():
      for sums_file in self.sums_dir.glob('*.json'):
        if sums_file.stem.isdigit() and int(sums_file.stem) < max(steps) and int(sums_file.stem) not in steps:
          sums_file.unlink()

  def _finalized(self, step: int) -> bool:
    """orbax lists a step while its save is still under way; only a finished one is summed."""
    path = self.checkpoints_dir / str(step)
    return path.exists() and ocp.step.is_checkpoint_finalized(path)

  def problem(self, step: int) -> str | None:
    """What is wrong with checkpoint `step` (None: it matches its checksums, or has none)."""
    sums_file = self._sums_file(step)
    if not sums_file.exists():
      logging.warning('checkpoint %d has no checksums (saved just before a crash?): used unverified',
                      step)
      return None
    expected = json.loads(sums_file.read_text())
    actual = checksums(self.checkpoints_dir / str(step))
    if missing := sorted(expected.keys() - actual.keys()):
      return f'{len(missing)} files missing ({missing[0]}, ...)'
    if changed := sorted(k for k in expected if actual[k] != expected[k]):
      return f'{len(changed)} files changed since saved ({changed[0]}, ...)'
    return None

  def move_aside(self, step: int) -> epath.Path:
    """Moves the checkpoint (and its checksums) out of orbax's sight; deletes nothing."""
    target = self.damaged_dir / str(step)
    suffix = 0
    while target.exists():  # damaged twice at the same step: keep both
      suffix += 1
      target = self.damaged_dir / f'{step}.{suffix}'
    self.damaged_dir.mkdir(parents=True, exist_ok=True)
    (self.checkpoints_dir / str(step)).rename(target)
    if self._sums_file(step).exists():
      self._sums_file(step).rename(target.parent / f'{target.name}.checksums.json')
    return target
