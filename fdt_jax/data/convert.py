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
With --concepts, records also hold each caption's MVPTR concepts (scene-graph tuples from
data/phrases.py, with their characters) and the train split's counts make the concept
vocabulary (data/converted_concepts.py).

  OUT/dataset_info.json, features.json        TFDS metadata of every split converted here
  OUT/image_captions-train.array_record-00000-of-00332, ...
  OUT/conversion.json                          counts per split (`conversion_stats`)
  OUT/concepts.json                            with --concepts: the concept vocabulary
  OUT/conversion/train/plan.json               the inputs and options of the split
  OUT/conversion/train/00000-of-00332.json     a finished shard's counts

Resumable: a shard is written under a temporary name and renamed, then its counts
file is; a rerun converts only the shards without one (or whose input changed) and
assembles the metadata from the counts files. Bad input never stops the conversion
and is never dropped silently: each record not written is counted under the first
of SKIP_REASONS that applies, each change under MODIFICATIONS, and a missing or
truncated input shard is listed (a missing one is retried by the next run).
"""

import dataclasses
import functools
import json
import multiprocessing
import os
import re
import tempfile
import time
from concurrent import futures
from typing import Callable

from absl import app, flags

from fdt_jax import cli
from fdt_jax.atomic_write import write_json_atomically
from fdt_jax.data.convert_metadata import concept_counts, finalize, remove_split
from fdt_jax.data.convert_record import Options
from fdt_jax.data.convert_shard import ShardTask, convert_shard, shard_done
from fdt_jax.data.converted import TOKENIZER, conversion_stats, open_converted, read_json, write_tokenizer
from fdt_jax.data.converted_concepts import DEFAULT_MIN_COUNT, VOCABULARY, write_vocabulary
from fdt_jax.data.shards import (DEFAULT_CAPTION_COLUMNS, DEFAULT_IMAGE_COLUMNS, FORMATS,
                                 ConversionError, csv_chunks, infer_format, resolve_inputs)

__all__ = ['ConversionError', 'conversion_stats', 'convert', 'convert_shard', 'open_converted',
           'plan_shards', 'write_tokenizer']


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
                max_caption_chars: int = 1000, concepts: bool = False) -> Plan:
  """Which output shard comes from which input; reads only CSV files. Bad usage raises
  ConversionError. `concepts`: store each caption's tuples (MVPTR's concepts)."""
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
  extractor = ''
  if concepts:
    from importlib.metadata import PackageNotFoundError
    from fdt_jax.data.phrases import extractor_name
    try:
      extractor = extractor_name()
    except PackageNotFoundError:
      raise ConversionError('--concepts needs TextBlob: pip install textblob==0.20.1') from None
  options = Options(resize_max, min_size, max_caption_chars, extractor)
  settings = dataclasses.asdict(options)
  if not concepts:
    del settings['concepts']  # as plan.json files written before --concepts existed
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
            concept_min_count: int = DEFAULT_MIN_COUNT, **plan_options) -> dict:
  """Converts `inputs` into split `split` of the dataset folder `output`; returns the
  split's counts (as `conversion_stats(output)['splits'][split]`). Resumes an earlier
  run of the same conversion; other inputs or options for a split already there raise
  ConversionError unless `overwrite`. `plan_options`: see `plan_shards`. With
  concepts=True the train split also writes the concept vocabulary (OUT/concepts.json) of
  the tuples stated by at least `concept_min_count` captions; rerunning a finished
  conversion with another count only rewrites it."""
  if workers is not None and workers < 1:
    raise ConversionError(f'workers={workers}: must be at least 1')
  if concept_min_count < 1:
    raise ConversionError(f'concept_min_count={concept_min_count}: must be at least 1')
  output = os.path.abspath(os.path.expanduser(output))
  try:
    os.makedirs(output, exist_ok=True)
    tempfile.TemporaryFile(dir=output).close()
  except OSError as e:
    raise ConversionError(f'cannot write to --output={output}: {e.strerror or e}') from None
  plan = plan_shards(inputs, output, split=split, **plan_options)
  _check_concepts_alike(output, plan)
  split_dir = os.path.join(output, 'conversion', split)
  earlier = read_json(os.path.join(split_dir, 'plan.json'))
  if earlier is not None and earlier != plan.record():
    if not overwrite:
      raise ConversionError(f'{output} already holds split {split!r} converted from other inputs or '
                            'options: pass --overwrite to replace it, or another --output or --split')
    log(f'convert {split}: replacing the earlier conversion of this split')
    remove_split(output, split)
  if earlier != plan.record():
    write_json_atomically(os.path.join(split_dir, 'plan.json'), plan.record())
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
  vocabulary_path = os.path.join(output, VOCABULARY)
  log(f'convert {split}: {stats["records_written"]:,} of {stats["records_read"]:,} records written to '
      f'{output}; skipped: {_listed(stats["skipped"])}; modified: {_listed(stats["modified"])}; '
      f'{len(stats["missing_shards"])} missing and {len(stats["broken_shards"])} broken shards')
  if 'concepts' in plan.settings:
    log(f'convert {split}: {stats["captions_without_concepts"]:,} captions state no concept')
  if 'concepts' not in plan.settings and split == 'train' and os.path.exists(vocabulary_path):
    os.remove(vocabulary_path)  # of an earlier conversion with --concepts, now replaced
  if 'concepts' in plan.settings and split == 'train':
    tuples, captions, without = concept_counts(output, split)
    vocabulary = write_vocabulary(output, tuples, min_count=concept_min_count,
                                  extractor=plan.settings['concepts'], captions=captions,
                                  captions_without_concepts=without)
    log(f'convert {split}: {len(vocabulary["names"]):,} of {len(tuples):,} concepts stated by >= '
        f'{concept_min_count} captions written to {vocabulary_path}; train with '
        f'--config.data.concepts=True --config.model.num_concepts={vocabulary["num_concepts"]}')
  return stats


def _check_concepts_alike(output: str, plan: Plan) -> None:
  """One features.json describes every split of a folder: all with concepts or none."""
  root = os.path.join(output, 'conversion')
  for split in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    other = read_json(os.path.join(root, split, 'plan.json'))
    if split != plan.split and other and ('concepts' in other['settings']) != ('concepts' in plan.settings):
      how = 'with' if 'concepts' in other['settings'] else 'without'
      raise ConversionError(f'{output} holds split {split!r} converted {how} --concepts: convert every '
                            'split of a folder the same way, or use another --output')


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
  flags.DEFINE_bool('concepts', False, "Also store each caption's concepts (MVPTR's phrases: "
                    'objects, attributes, relations; data/phrases.py) and, for the train split, '
                    f'their vocabulary (OUT/{VOCABULARY}).')
  flags.DEFINE_integer('concept_min_count', DEFAULT_MIN_COUNT, 'With --concepts: the vocabulary keeps '
                       'the concepts stated by at least this many train captions (MVPTR: 50).')
  flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}', code=2)
  f = flags.FLAGS
  try:
    convert(f.input, f.output, split=f.split, workers=f.workers, overwrite=f.overwrite,
            input_format=f.format, image_column=f.image_column, caption_column=f.caption_column,
            delimiter=f.delimiter.encode().decode('unicode_escape'), rows_per_shard=f.rows_per_shard,
            resize_max=f.resize_max, min_size=f.min_size, max_caption_chars=f.max_caption_chars,
            concepts=f.concepts, concept_min_count=f.concept_min_count)
    if f.tokenizer_vocab_size:
      model = write_tokenizer(f.output, f.tokenizer_vocab_size, split=f.split,
                              max_captions=f.tokenizer_captions)
      print(f'convert {f.split}: tokenizer of {f.tokenizer_vocab_size} ids written to {model}')
  except ConversionError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
