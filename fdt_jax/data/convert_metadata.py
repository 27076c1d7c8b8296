"""The metadata of a converted folder, assembled from its shards' counts files: TFDS's
dataset_info.json and features.json, and conversion.json. See fdt_jax.data.convert."""

import collections
import glob
import os

from fdt_jax.atomic_write import write_json_atomically
from fdt_jax.data.convert_record import MODIFICATIONS, SKIP_REASONS, Options
from fdt_jax.data.convert_shard import ShardTask
from fdt_jax.data.converted import (NAME, WRITER_OPTIONS, features, file_template, read_json,
                                    shard_path)
from fdt_jax.data.shards import CsvChunk


def remove_split(output: str, split: str) -> None:
  """The files of an earlier conversion of `split` (ours only: named by TFDS's template)."""
  template = file_template(output, split)
  for name in os.listdir(output):
    info = template.parse_filename_info(name)
    if info is not None and info.split == split and info.dataset_name == NAME:
      os.remove(os.path.join(output, name))
  split_dir = os.path.join(output, 'conversion', split)
  for name in os.listdir(split_dir) if os.path.isdir(split_dir) else []:
    os.remove(os.path.join(split_dir, name))


def finalize(output: str) -> dict:
  """TFDS metadata for every split converted into `output`, and conversion.json, both
  assembled from the shards' counts files; returns conversion.json's content."""
  import tensorflow_datasets as tfds
  root = os.path.join(output, 'conversion')
  splits, split_infos, concepts = {}, [], False
  for split in sorted(os.listdir(root)):
    plan = read_json(os.path.join(root, split, 'plan.json'))
    if plan is None:
      continue
    concepts |= bool(plan['settings'].get('concepts'))  # the same for every split (convert checks)
    splits[split], lengths = _split_counts(output, split, plan)
    num_bytes = sum(os.path.getsize(shard_path(output, split, i, len(lengths)))
                    for i in range(len(lengths)))
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=num_bytes,
                                           filename_template=file_template(output, split)))
    for pattern in ('*.tmp', '.tmp-*'):  # left by runs killed in the middle of a shard
      for name in glob.glob(os.path.join(root, split, pattern)):
        os.remove(name)
  described = '; '.join(f'{split}: {stats["records_written"]:,} records from {len(stats["sources"])} '
                        f'{stats["format"]} files' for split, stats in splits.items())
  # check_data=False: the check reads with as_dataset, which imports TensorFlow and
  # does not support ArrayRecord files.
  tfds.folder_dataset.write_metadata(
      data_dir=output, features=features(concepts), split_infos=split_infos, check_data=False,
      description=f'Image-caption pairs converted by fdt_jax.data.convert ({described}); '
                  'counts in conversion.json.')
  summary = {'splits': splits, 'skip_reasons': SKIP_REASONS, 'modifications': MODIFICATIONS}
  write_json_atomically(os.path.join(output, 'conversion.json'), summary)
  return summary


def concept_counts(output: str, split: str) -> tuple[collections.Counter, int, int]:
  """(captions stating each tuple, captions, captions stating none) over the converted shards
  of `split`, summed from their counts files (so in no particular order of shards)."""
  plan = read_json(os.path.join(output, 'conversion', split, 'plan.json'))
  tuples, captions, without = collections.Counter(), 0, 0
  for index, (source, chunk) in enumerate(plan['shards'] if plan else []):
    task = ShardTask(output, split, index, len(plan['shards']), source, Options(), chunk and CsvChunk(**chunk))
    counts = read_json(task.counts_path)
    if counts is not None and os.path.exists(task.data_path):
      tuples.update(counts.get('concepts', {}))
      captions += counts['records_written']  # one caption per record written
      without += counts.get('captions_without_concepts', 0)
  return tuples, captions, without


def _split_counts(output: str, split: str, plan: dict) -> tuple[dict, list[int]]:
  """The split's counts summed over its shards, and the shard lengths. A shard without
  counts (its input is missing) gets an empty file: TFDS numbers shards 0..n-1, no gaps."""
  from array_record.python.array_record_module import ArrayRecordWriter
  num_shards = len(plan['shards'])
  missing_files = [p for p in plan['sources'] if plan['format'] == 'csv' and not os.path.isfile(p)]
  stats = {'records_read': 0, 'records_written': 0, 'skipped': collections.Counter(),
           'modified': collections.Counter(), 'num_shards': num_shards, 'shards_converted': 0,
           'missing_shards': missing_files, 'broken_shards': {}, 'format': plan['format'],
           'settings': plan['settings'], 'sources': plan['sources']}
  if plan['settings'].get('concepts'):
    stats['captions_without_concepts'] = 0
  lengths = []
  for index, (source, chunk) in enumerate(plan['shards']):
    task = ShardTask(output, split, index, num_shards, source, Options(), chunk and CsvChunk(**chunk))
    counts = read_json(task.counts_path)
    if counts is None or not os.path.exists(task.data_path):
      counts = {'records_read': 0, 'records_written': 0, 'skipped': {}, 'modified': {}}
      stats['missing_shards'].append(task.label)
      ArrayRecordWriter(task.data_path, WRITER_OPTIONS).close()
    else:
      stats['shards_converted'] += 1
    if counts.get('status') == 'broken':
      stats['broken_shards'][task.label] = counts['error']
    for key in ('records_read', 'records_written'):
      stats[key] += counts[key]
    for key in ('skipped', 'modified'):
      stats[key].update(counts[key])
    if 'captions_without_concepts' in stats:
      stats['captions_without_concepts'] += counts.get('captions_without_concepts', 0)
    lengths.append(counts['records_written'])
  stats['skipped'] = {reason: stats['skipped'][reason] for reason in SKIP_REASONS if stats['skipped'][reason]}
  stats['modified'] = {kind: stats['modified'][kind] for kind in MODIFICATIONS if stats['modified'][kind]}
  return stats, lengths

