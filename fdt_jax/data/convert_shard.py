"""One output shard: converting it from its input, and knowing whether it is done
(so that a rerun converts only the rest). See fdt_jax.data.convert."""

import collections
import dataclasses
import json
import os
import time

from fdt_jax.atomic_write import write_json_atomically
from fdt_jax.data.convert_record import Options, convert_record
from fdt_jax.data.converted import WRITER_OPTIONS, features, read_json, shard_path
from fdt_jax.data.shards import BrokenShard, CsvChunk, csv_records, tar_records


@dataclasses.dataclass(frozen=True)
class ShardTask:
  """Output shard `index` of `num_shards` of `split`: a whole tar, or a chunk of a CSV."""
  output: str
  split: str
  index: int
  num_shards: int
  source: str
  options: Options
  csv: CsvChunk | None = None

  @property
  def name(self) -> str:
    rows = f' rows {self.csv.first_row}-{self.csv.first_row + self.csv.num_rows - 1}' if self.csv else ''
    return os.path.basename(self.source) + rows

  @property
  def label(self) -> str:
    """The input in full, for the metadata."""
    return os.path.join(os.path.dirname(self.source), self.name)

  @property
  def data_path(self) -> str:
    return shard_path(self.output, self.split, self.index, self.num_shards)

  @property
  def counts_path(self) -> str:
    name = f'{self.index:05d}-of-{self.num_shards:05d}.json'
    return os.path.join(self.output, 'conversion', self.split, name)



def input_state(path: str) -> dict | None:
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def shard_done(task: ShardTask) -> bool:
  """Written completely from this input; a finished shard whose input is gone stays done."""
  counts = read_json(task.counts_path)
  if counts is None or counts.get('source') != task.source or not os.path.exists(task.data_path):
    return False
  now = input_state(task.source)
  return now is None or now == counts['input']


def convert_shard(task: ShardTask) -> dict:
  """Writes one output shard and its counts file; returns the counts. A missing input
  writes nothing and returns status 'missing'. With concepts, the counts also hold how
  many captions state each tuple ('concepts', for the vocabulary) and how many state none."""
  from array_record.python.array_record_module import ArrayRecordWriter
  start = time.perf_counter()
  counts = {'source': task.source, 'status': 'ok', 'records_read': 0, 'records_written': 0,
            'skipped': collections.Counter(), 'modified': collections.Counter()}
  if task.csv:
    counts['rows'] = [task.csv.first_row, task.csv.first_row + task.csv.num_rows - 1]
  counts['input'] = input_state(task.source)
  if counts['input'] is None:
    return {**counts, 'status': 'missing', 'error': 'not found'}
  example_features = features(bool(task.options.concepts))
  tuples = collections.Counter()  # captions stating each tuple
  if task.options.concepts:
    counts['captions_without_concepts'] = 0
  temporary = task.counts_path[:-len('.json')] + '.array_record.tmp'
  os.makedirs(os.path.dirname(temporary), exist_ok=True)
  writer = ArrayRecordWriter(temporary, WRITER_OPTIONS)
  unreadable = None
  try:
    if task.csv:  # rows have no key (an image may have several captions)
      records = ((None, image, caption) for image, caption in csv_records(task.source, task.csv))
    else:
      records = tar_records(task.source)
    keys = set()
    for key, image, caption in records:
      counts['records_read'] += 1
      if key is not None and key in keys:  # written once, the repeats counted
        counts['skipped']['duplicate_key'] += 1
        continue
      keys.add(key)
      reason, example, modified = convert_record(image, caption, task.options)
      if reason:
        counts['skipped'][reason] += 1
        continue
      writer.write(example_features.serialize_example(example))
      counts['records_written'] += 1
      counts['modified'].update(modified)
      if task.options.concepts:
        for field in example['concepts']:
          stated = [name for name, _, _ in json.loads(field)]  # each once
          tuples.update(stated)
          counts['captions_without_concepts'] += not stated
  except BrokenShard as e:
    counts.update(status='broken', error=str(e))
    if e.pending:
      counts['records_read'] += 1
      counts['skipped']['shard_truncated'] += 1
  except OSError as e:  # the input vanished or cannot be opened: retried by the next run
    unreadable = e
  writer.close()
  if unreadable:
    os.remove(temporary)
    return {**counts, 'status': 'missing', 'error': f'{type(unreadable).__name__}: {unreadable}'}
  counts.update(skipped=dict(counts['skipped']), modified=dict(counts['modified']),
                seconds=round(time.perf_counter() - start, 3))
  if task.options.concepts:
    counts['concepts'] = dict(sorted(tuples.items()))
  os.replace(temporary, task.data_path)
  write_json_atomically(task.counts_path, counts)  # last: its presence says the shard is done
  return counts
