"""Where metrics go: TensorBoard and the log (clu), and `WORKDIR/metrics.jsonl`."""

import json
import logging
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface
from etils import epath

from fdt_jax.atomic_write import write_atomically

METRICS = 'metrics.jsonl'


class JsonlWriter(interface.MetricWriter):
  """WORKDIR/metrics.jsonl, one JSON object per write: {"step": N, "name": value, ...}.

  Every write appends one line through etils.epath, locally and on gs:// alike; this code
  never reads the file back. (An object store has no true append: its client, TensorFlow's
  gfile for gs://, uploads the whole object again when an appended file is closed.)
  """

  def __init__(self, workdir: str):
    self._path = epath.Path(workdir, METRICS)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    line = json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}) + '\n'
    with self._path.open('a') as f:
      f.write(line)

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def _plain(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return None if isinstance(value, float) and not np.isfinite(value) else value


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """Process 0 writes TensorBoard summaries and metrics.jsonl; every process logs."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True, asynchronous=False)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(workdir),
  ])


def trim_metrics(workdir: str, after_step: int) -> int:
  """Drops the records of steps after `after_step` from metrics.jsonl (the steps a resumed
  run trains again and logs again), and a last line cut short by a crash; the file is
  replaced whole, atomically. Returns the number of lines dropped."""
  path = epath.Path(workdir, METRICS)
  if not path.exists():
    return 0
  lines = path.read_text().splitlines(keepends=True)
  kept = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if i == len(lines) - 1:  # a write cut short: the step is trained and logged again
        continue
      raise ValueError(f'{path} line {i + 1} is not JSON: repair or move the file, then rerun') from None
    if record.get('step', 0) <= after_step:
      kept.append(line if line.endswith('\n') else line + '\n')
  dropped = len([l for l in lines if l.strip()]) - len(kept)
  if dropped:
    logging.info('metrics.jsonl: %d records after step %d dropped; those steps run again',
                 dropped, after_step)
    write_atomically(path, ''.join(kept))
  return dropped


def read_jsonl(path) -> list[dict]:
  return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]
