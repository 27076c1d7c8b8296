r"""Image-caption shards users already have -> a dataset the trainer reads.

  python -m fdt_jax.data.convert --input='/data/cc3m/{00000..00331}.tar' --output=/data/cc3m_fdt
  python -m fdt_jax.main --config=... --config.data.name=dir:/data/cc3m_fdt --config.data.tokenizer=...

Inputs: webdataset / img2dataset tars, whose members are grouped by key (000123.jpg
with 000123.txt, or 000123.json holding 'caption' or 'text'), or CSV / TSV files with
an image path column and a caption column (paths relative to the file's folder), cut
into chunks of --rows_per_shard rows. Each tar or chunk becomes one output shard, in
order, converted by a pool of --workers processes.

The output is a TFDS dataset folder (ArrayRecord shards, dataset_info.json,
features.json) read with `tfds.builder_from_directory(OUT).as_data_source(split)`, as
`open_converted` does; TensorFlow is not used. Records are {'image': JPEG bytes (the
original bytes of a clean RGB JPEG, else re-encoded), 'captions': [one caption]}: a
list, so COCO-style records with several captions go through the same pipeline.

  OUT/dataset_info.json, features.json        TFDS metadata of every split converted here
  OUT/image_captions-train.array_record-00000-of-00332, ...
  OUT/conversion.json                          counts per split (`conversion_stats`)
  OUT/conversion/train/plan.json               the inputs and options of the split
  OUT/conversion/train/00000-of-00332.json     a finished shard's counts

Resumable: a shard is written under a temporary name and renamed, then its counts
file is; a rerun converts only the shards without one (or whose input changed) and
assembles the metadata from the counts files. Bad input never stops the conversion
and is never dropped silently: each record not written is counted under the first
of SKIP_REASONS that applies, each change under MODIFICATIONS, and a missing or
truncated input shard is listed (a missing one is retried by the next run).
"""

import collections
import dataclasses
import functools
import glob
import io
import json
import multiprocessing
import os
import re
import tempfile
import time
from concurrent import futures
from typing import Callable

from absl import app, flags
from etils import epath
import numpy as np
from PIL import Image

from fdt_jax import cli
from fdt_jax.data.transforms import to_rgb
from fdt_jax.data.shards import (DEFAULT_CAPTION_COLUMNS, DEFAULT_IMAGE_COLUMNS, FORMATS,
                                 ConversionError, CsvChunk, BrokenShard, csv_chunks, csv_records,
                                 infer_format, resolve_inputs, tar_records)

NAME = 'image_captions'  # the TFDS dataset name, in every file name; not the folder's
JPEG_QUALITY = 95  # img2dataset's default
# One record per chunk for random access, as TFDS writes; uncompressed because JPEG
# bytes do not compress (the default zstd cost 15% of the time and saved nothing).
WRITER_OPTIONS = 'group_size:1,uncompressed'

SKIP_REASONS = {  # in the order they are checked
    'missing_image': 'a caption without an image (or an empty path cell)',
    'missing_caption': 'an image without a caption',
    'empty_caption': 'a caption that is empty or only whitespace',
    'image_not_found': 'a CSV path that does not exist or cannot be read',
    'image_too_large': "more pixels than PIL's decompression-bomb limit",
    'image_too_small': 'shorter side below min_size',
    'corrupt_image': 'bytes that do not decode (truncated, not an image)',
    'shard_truncated': 'the record being read when a tar ended early',
}
MODIFICATIONS = {  # of written records
    'converted_to_rgb': 'grayscale, CMYK, palette, alpha (matted on white) or 16-bit',
    'reencoded': 'stored as a new JPEG: not a JPEG, not RGB, or resized',
    'resized': 'shorter side brought down to resize_max',
    'caption_truncated': 'cut at a word boundary to max_caption_chars',
    'caption_not_utf8': 'undecodable bytes replaced by U+FFFD',
}



# --- One record -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Options:
  """What decides the records written: a rerun with other options is another conversion."""
  resize_max: int = 0  # downscale when the shorter side is larger; 0 keeps the size
  min_size: int = 8
  max_caption_chars: int = 1000


def clean_caption(text: str, max_chars: int) -> tuple[str, list[str]]:
  """Stripped, undecodable bytes replaced, cut at the last word boundary within max_chars."""
  modified = []
  try:
    text.encode('utf-8')
  except UnicodeEncodeError:
    text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
    modified.append('caption_not_utf8')
  text = text.strip()
  if len(text) > max_chars:
    head = text[:max_chars + 1]  # one more: a space there means the cut is between words
    boundary = max((i for i, char in enumerate(head) if char.isspace()), default=0)
    text = (head[:boundary] if boundary else text[:max_chars]).rstrip()
    modified.append('caption_truncated')
  return text, modified


def to_jpeg(data: bytes, options: Options) -> tuple[str | None, bytes | None, list[str]]:
  """(skip reason, JPEG bytes, modifications): the bytes as they are for a clean RGB JPEG."""
  try:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if min(width, height) < options.min_size:
      return 'image_too_small', None, []
    target = None
    if options.resize_max and min(width, height) > options.resize_max:
      scale = options.resize_max / min(width, height)
      target = (max(options.resize_max, round(width * scale)),
                max(options.resize_max, round(height * scale)))
    # MPO: a camera JPEG with more frames appended; JPEG decoders read the first.
    keep = image.format in ('JPEG', 'MPO') and image.mode == 'RGB' and target is None
    # A JPEG decoded at 1/8 scale (or nearer the target size) still reads every byte,
    # so truncation shows, at less than half the cost: most of the inverse DCT is skipped.
    if keep or target:
      image.draft('RGB', (max(width // 8, 1), max(height // 8, 1)) if keep else target)
    image.load()
  except Image.DecompressionBombError:
    return 'image_too_large', None, []
  except Exception:  # PIL raises many types for bytes it cannot decode
    return 'corrupt_image', None, []
  if keep:
    return None, data, []
  modified = ['reencoded']
  if image.mode != 'RGB':
    image = to_rgb(image)
    modified.append('converted_to_rgb')
  if target is not None:
    image = image.resize(target, Image.Resampling.BICUBIC)  # as transforms.py; Lanczos: 30% slower
    modified.append('resized')
  out = io.BytesIO()
  image.save(out, format='JPEG', quality=JPEG_QUALITY)
  return None, out.getvalue(), modified


def convert_record(image: bytes | str | None, caption: str | None, options: Options
                   ) -> tuple[str | None, dict | None, list[str]]:
  """(skip reason, example, modifications); `image` is bytes or a file path."""
  if image is None:
    return 'missing_image', None, []
  if caption is None:
    return 'missing_caption', None, []
  caption, modified = clean_caption(caption, options.max_caption_chars)
  if not caption:
    return 'empty_caption', None, []
  if isinstance(image, str):
    try:
      with open(image, 'rb') as f:
        image = f.read()
    except OSError:
      return 'image_not_found', None, []
  reason, jpeg, image_modified = to_jpeg(image, options)
  if reason:
    return reason, None, []
  return None, {'image': jpeg, 'captions': [caption]}, image_modified + modified


# --- One shard --------------------------------------------------------------------

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


@functools.cache
def _features():
  import tensorflow_datasets as tfds  # only the feature and naming code: no TensorFlow
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(encoding_format='jpeg'),
      'captions': tfds.features.Sequence(tfds.features.Text()),
  })


def _file_template(output: str, split: str):
  import tensorflow_datasets as tfds
  return tfds.core.ShardedFileTemplate(data_dir=tfds.core.Path(output), dataset_name=NAME, split=split,
                                       filetype_suffix='array_record')


def shard_path(output: str, split: str, index: int, num_shards: int) -> str:
  """TFDS's name for the shard: f'{NAME}-{split}.array_record-{index:05d}-of-{num_shards:05d}'."""
  template = _file_template(output, split)
  return os.fspath(template.sharded_filepath(shard_index=index, num_shards=num_shards))


def _input_state(path: str) -> dict | None:
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def shard_done(task: ShardTask) -> bool:
  """Written completely from this input; a finished shard whose input is gone stays done."""
  counts = _read_json(task.counts_path)
  if counts is None or counts.get('source') != task.source or not os.path.exists(task.data_path):
    return False
  now = _input_state(task.source)
  return now is None or now == counts['input']


def convert_shard(task: ShardTask) -> dict:
  """Writes one output shard and its counts file; returns the counts. A missing input
  writes nothing and returns status 'missing'."""
  from array_record.python.array_record_module import ArrayRecordWriter
  start = time.perf_counter()
  counts = {'source': task.source, 'status': 'ok', 'records_read': 0, 'records_written': 0,
            'skipped': collections.Counter(), 'modified': collections.Counter()}
  if task.csv:
    counts['rows'] = [task.csv.first_row, task.csv.first_row + task.csv.num_rows - 1]
  counts['input'] = _input_state(task.source)
  if counts['input'] is None:
    return {**counts, 'status': 'missing', 'error': 'not found'}
  features = _features()
  temporary = task.counts_path[:-len('.json')] + '.array_record.tmp'
  os.makedirs(os.path.dirname(temporary), exist_ok=True)
  writer = ArrayRecordWriter(temporary, WRITER_OPTIONS)
  unreadable = None
  try:
    records = csv_records(task.source, task.csv) if task.csv else tar_records(task.source)
    for image, caption in records:
      counts['records_read'] += 1
      reason, example, modified = convert_record(image, caption, task.options)
      if reason:
        counts['skipped'][reason] += 1
        continue
      writer.write(features.serialize_example(example))
      counts['records_written'] += 1
      counts['modified'].update(modified)
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
  os.replace(temporary, task.data_path)
  _write_json(task.counts_path, counts)  # last: its presence says the shard is done
  return counts


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value) -> None:
  """Atomically: a reader sees the old file or the new one."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tempfile.NamedTemporaryFile('w', dir=os.path.dirname(path), prefix='.tmp-', suffix='.json',
                                   delete=False) as f:
    json.dump(value, f, indent=1)
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)


# --- The whole conversion ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
  """The output shards of a split, and what made them (compared on reruns)."""
  split: str
  input_format: str
  sources: list[str]
  missing_sources: list[str]  # CSV files not found (a missing tar is a shard, retried)
  settings: dict
  tasks: list[ShardTask]

  def record(self) -> dict:
    """As plan.json holds it (JSON types, so that it compares equal to the file's)."""
    return json.loads(json.dumps({
        'format': self.input_format, 'sources': self.sources, 'settings': self.settings,
        'shards': [[t.source, dataclasses.asdict(t.csv) if t.csv else None] for t in self.tasks]}))


def plan_shards(inputs: str | list[str], output: str, *, split: str = 'train',
                input_format: str | None = None, image_column: str | None = None,
                caption_column: str | None = None, delimiter: str = 'auto',
                rows_per_shard: int = 10_000, resize_max: int = 0, min_size: int = 8,
                max_caption_chars: int = 1000) -> Plan:
  """Which output shard comes from which input; reads only CSV files. Bad usage raises
  ConversionError."""
  if not re.fullmatch(r'[A-Za-z0-9_]+', split):
    raise ConversionError(f'split {split!r}: use letters, digits and underscores')
  for name, value, low in (('rows_per_shard', rows_per_shard, 1), ('resize_max', resize_max, 0),
                           ('min_size', min_size, 1), ('max_caption_chars', max_caption_chars, 1)):
    if value < low:
      raise ConversionError(f'{name}={value}: must be at least {low}')
  sources = resolve_inputs(inputs)
  if not any(os.path.isfile(p) for p in sources):
    raise ConversionError(f'no input matched {inputs if isinstance(inputs, str) else " ".join(inputs)}')
  input_format = input_format or infer_format(sources)
  if input_format not in FORMATS:
    raise ConversionError(f'unknown format {input_format!r}: use one of {", ".join(FORMATS)}')
  output = os.path.abspath(os.path.expanduser(output))
  options = Options(resize_max, min_size, max_caption_chars)
  settings = dataclasses.asdict(options)
  shards, missing = [], []
  if input_format == 'csv':
    settings.update(image_column=image_column, caption_column=caption_column, delimiter=delimiter,
                    rows_per_shard=rows_per_shard)
    for path in sources:
      if not os.path.isfile(path):
        missing.append(path)
        continue
      chunks = csv_chunks(path, rows_per_shard=rows_per_shard, delimiter=delimiter,
                          image_column=image_column, caption_column=caption_column)
      shards += [(path, chunk) for chunk in chunks]
    if not shards:
      raise ConversionError(f'the CSV files hold no rows: {" ".join(sources)}')
  else:
    shards = [(path, None) for path in sources]
  tasks = [ShardTask(output, split, i, len(shards), path, options, chunk)
           for i, (path, chunk) in enumerate(shards)]
  return Plan(split, input_format, sources, missing, settings, tasks)


def convert(inputs: str | list[str], output: str, *, split: str = 'train', workers: int | None = None,
            overwrite: bool = False, log: Callable[[str], None] = functools.partial(print, flush=True),
            **plan_options) -> dict:
  """Converts `inputs` into split `split` of the dataset folder `output`; returns the
  split's counts (as `conversion_stats(output)['splits'][split]`). Resumes an earlier
  run of the same conversion; other inputs or options for a split already there raise
  ConversionError unless `overwrite`. `plan_options`: see `plan_shards`."""
  if workers is not None and workers < 1:
    raise ConversionError(f'workers={workers}: must be at least 1')
  output = os.path.abspath(os.path.expanduser(output))
  try:
    os.makedirs(output, exist_ok=True)
    tempfile.TemporaryFile(dir=output).close()
  except OSError as e:
    raise ConversionError(f'cannot write to --output={output}: {e.strerror or e}') from None
  plan = plan_shards(inputs, output, split=split, **plan_options)
  split_dir = os.path.join(output, 'conversion', split)
  earlier = _read_json(os.path.join(split_dir, 'plan.json'))
  if earlier is not None and earlier != plan.record():
    if not overwrite:
      raise ConversionError(f'{output} already holds split {split!r} converted from other inputs or '
                            'options: pass --overwrite to replace it, or another --output or --split')
    log(f'convert {split}: replacing the earlier conversion of this split')
    _remove_split(output, split)
  if earlier != plan.record():
    _write_json(os.path.join(split_dir, 'plan.json'), plan.record())
  for path in plan.missing_sources:
    log(f'convert {split}: missing input {path}')

  todo = [task for task in plan.tasks if not shard_done(task)]
  total = len(plan.tasks)
  if len(todo) < total:
    log(f'convert {split}: resuming, {total - len(todo)} of {total} shards already converted')
  workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
  progress = _Progress(split, total, total - len(todo), log)
  if workers == 1:
    for task in todo:
      progress.done(task, convert_shard(task))
  else:
    # spawn: a forked copy of a process that runs JAX or TensorFlow threads can deadlock
    pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'))
    try:
      running = {pool.submit(convert_shard, task): task for task in todo}
      for future in futures.as_completed(running):
        progress.done(running[future], future.result())
    finally:
      pool.shutdown(wait=False, cancel_futures=True)
  stats = finalize(output)['splits'][split]
  log(f'convert {split}: {stats["records_written"]:,} of {stats["records_read"]:,} records written to '
      f'{output}; skipped: {_listed(stats["skipped"])}; modified: {_listed(stats["modified"])}; '
      f'{len(stats["missing_shards"])} missing and {len(stats["broken_shards"])} broken shards')
  return stats


def _listed(counts: dict) -> str:
  return ', '.join(f'{n:,} {reason}' for reason, n in counts.items()) or 'none'


class _Progress:
  """One log line per finished shard: its counts, the totals of this run and the rate."""

  def __init__(self, split, total, already, log):
    self.split, self.total, self.finished, self.log = split, total, already, log
    self.start, self.done_here, self.read, self.written = time.perf_counter(), 0, 0, 0

  def done(self, task: ShardTask, counts: dict):
    self.finished += 1
    self.done_here += 1
    self.read += counts['records_read']
    self.written += counts['records_written']
    elapsed = time.perf_counter() - self.start
    eta = elapsed / self.done_here * (self.total - self.finished)
    written, skipped = counts['records_written'], counts['records_read'] - counts['records_written']
    status = '' if counts['status'] == 'ok' else f' {counts["status"].upper()} ({counts.get("error", "")})'
    self.log(f'convert {self.split}: shard {self.finished}/{self.total} {task.name}{status}: '
             f'{written:,} written, {skipped:,} skipped | this run: {self.written:,} of {self.read:,} written, '
             f'{self.read / max(elapsed, 1e-9):,.0f} records/s, {elapsed:.0f} s, ETA {eta:.0f} s')


def _remove_split(output: str, split: str) -> None:
  """The files of an earlier conversion of `split` (ours only: named by TFDS's template)."""
  template = _file_template(output, split)
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
  splits, split_infos = {}, []
  for split in sorted(os.listdir(root)):
    plan = _read_json(os.path.join(root, split, 'plan.json'))
    if plan is None:
      continue
    splits[split], lengths = _split_counts(output, split, plan)
    num_bytes = sum(os.path.getsize(shard_path(output, split, i, len(lengths)))
                    for i in range(len(lengths)))
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=num_bytes,
                                           filename_template=_file_template(output, split)))
    for pattern in ('*.tmp', '.tmp-*'):  # left by runs killed in the middle of a shard
      for name in glob.glob(os.path.join(root, split, pattern)):
        os.remove(name)
  described = '; '.join(f'{split}: {stats["records_written"]:,} records from {len(stats["sources"])} '
                        f'{stats["format"]} files' for split, stats in splits.items())
  # check_data=False: the check reads with as_dataset, which imports TensorFlow and
  # does not support ArrayRecord files.
  tfds.folder_dataset.write_metadata(
      data_dir=output, features=_features(), split_infos=split_infos, check_data=False,
      description=f'Image-caption pairs converted by fdt_jax.data.convert ({described}); '
                  'counts in conversion.json.')
  summary = {'splits': splits, 'skip_reasons': SKIP_REASONS, 'modifications': MODIFICATIONS}
  _write_json(os.path.join(output, 'conversion.json'), summary)
  return summary


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
  lengths = []
  for index, (source, chunk) in enumerate(plan['shards']):
    task = ShardTask(output, split, index, num_shards, source, Options(), chunk and CsvChunk(**chunk))
    counts = _read_json(task.counts_path)
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
    lengths.append(counts['records_written'])
  stats['skipped'] = {reason: stats['skipped'][reason] for reason in SKIP_REASONS if stats['skipped'][reason]}
  stats['modified'] = {kind: stats['modified'][kind] for kind in MODIFICATIONS if stats['modified'][kind]}
  return stats, lengths


# --- Reading back -----------------------------------------------------------------

def open_converted(path: str, split: str = 'train', **kwargs):
  """Random access to a converted split: records {'image': uint8 [H, W, 3], 'captions':
  [bytes]}, a grain-compatible source. `kwargs` go to TFDS (e.g. decoders=...)."""
  import tensorflow_datasets as tfds
  path = os.path.expanduser(path)
  if not epath.Path(path, 'dataset_info.json').exists():  # local or gs://
    raise FileNotFoundError(f'{path} holds no converted dataset (no dataset_info.json): run '
                            f'python -m fdt_jax.data.convert --input=... --output={path}')
  builder = tfds.builder_from_directory(path)
  if split.split('[')[0] not in builder.info.splits:
    raise ValueError(f'{path} has no split {split!r}; it has {", ".join(builder.info.splits)}')
  return builder.as_data_source(split=split, **kwargs)


TOKENIZER = 'sentencepiece.model'  # the trainer's default tokenizer for dir:PATH data


def write_tokenizer(path: str, vocab_size: int, *, split: str = 'train',
                    max_captions: int = 1_000_000) -> str:
  """Trains a sentencepiece model on (an even sample of) a converted split's captions
  and stores it as PATH/sentencepiece.model, where the trainer looks for it."""
  import tensorflow_datasets as tfds
  from fdt_jax.data.tokenizer import train_tokenizer
  source = open_converted(path, split, decoders={'image': tfds.decode.SkipDecoding()})
  indices = np.linspace(0, len(source) - 1, min(len(source), max_captions)).astype(int)
  captions = (c.decode('utf-8') if isinstance(c, bytes) else c
              for i in np.unique(indices) for c in source[int(i)]['captions'])
  return train_tokenizer(captions, os.path.join(os.path.expanduser(path), TOKENIZER), vocab_size)


def conversion_stats(path: str) -> dict:
  """OUT/conversion.json: per split, records read and written, skipped per reason,
  modified per kind, missing and broken shards, sources and settings."""
  stats = _read_json(os.path.join(os.path.expanduser(path), 'conversion.json'))
  if stats is None:
    raise FileNotFoundError(f'{path} holds no conversion.json: not converted by fdt_jax.data.convert')
  return stats


# --- Command line -----------------------------------------------------------------

def _define_flags():
  """Here, not at import: the trainer imports open_converted and has flags of its own."""
  flags.DEFINE_multi_string('input', None, 'Tars or CSV/TSV files: paths, {a,b} and {000..123} '
                            'braces, globs; repeat the flag for more.')
  flags.DEFINE_string('output', None, 'The dataset folder to write (or to resume).')
  flags.DEFINE_string('split', 'train', 'The split to write.')
  flags.DEFINE_integer('workers', None, 'Processes converting shards; default: one per CPU.')
  flags.DEFINE_enum('format', None, FORMATS, 'Default: from the file extensions.')
  flags.DEFINE_string('image_column', None, f'CSV; default: {" or ".join(DEFAULT_IMAGE_COLUMNS)}.')
  flags.DEFINE_string('caption_column', None, f'CSV; default: {" or ".join(DEFAULT_CAPTION_COLUMNS)}.')
  flags.DEFINE_string('delimiter', 'auto', 'CSV; auto: tab for .tsv or a tab in the header, else comma.')
  flags.DEFINE_integer('rows_per_shard', 10_000, 'CSV rows per output shard.')
  flags.DEFINE_integer('resize_max', 0, 'Downscale images whose shorter side is larger; 0: keep.')
  flags.DEFINE_integer('min_size', 8, 'Skip images whose shorter side is smaller.')
  flags.DEFINE_integer('max_caption_chars', 1000, 'Truncate longer captions at a word boundary.')
  flags.DEFINE_bool('overwrite', False, 'Replace an earlier conversion of the split with other inputs.')
  flags.DEFINE_integer('tokenizer_vocab_size', 0, 'Also train a sentencepiece model of this many ids '
                       f'on the captions (OUT/{TOKENIZER}, found by the trainer); 0: none.')
  flags.DEFINE_integer('tokenizer_captions', 1_000_000, 'Captions sampled to train it.')
  flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}', code=2)
  f = flags.FLAGS
  try:
    convert(f.input, f.output, split=f.split, workers=f.workers, overwrite=f.overwrite,
            input_format=f.format, image_column=f.image_column, caption_column=f.caption_column,
            delimiter=f.delimiter.encode().decode('unicode_escape'), rows_per_shard=f.rows_per_shard,
            resize_max=f.resize_max, min_size=f.min_size, max_caption_chars=f.max_caption_chars)
    if f.tokenizer_vocab_size:
      model = write_tokenizer(f.output, f.tokenizer_vocab_size, split=f.split,
                              max_captions=f.tokenizer_captions)
      print(f'convert {f.split}: tokenizer of {f.tokenizer_vocab_size} ids written to {model}')
  except ConversionError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
