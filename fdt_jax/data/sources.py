"""Which records a run reads: the config's dataset name -> random-access sources and
the tokenizer, sized for the model (its image size, context length and vocabulary;
this package imports no model: the caller hands the model's config in)."""

import dataclasses
import functools
import os
from typing import Any

from etils import epath

from fdt_jax.data import pipeline
from fdt_jax.data.clip_bpe import make_tokenizer
from fdt_jax.data.tokenizer import Tokenizer

DIR_PREFIX = 'dir:'  # config.data.name = 'dir:PATH': shards converted by fdt_jax.data.convert


def converted_dir(name: str) -> str | None:
  """PATH of a 'dir:PATH' data name (user home expanded), None for other names."""
  if not name.startswith(DIR_PREFIX):
    return None
  path = name[len(DIR_PREFIX):]
  if not path:
    raise ValueError('config.data.name is dir: without a path: set --config.data.name=dir:PATH '
                     'to the output of python -m fdt_jax.data.convert')
  return os.path.expanduser(path)


def prepared_shapes(data_cfg, image_size: int):
  """The embedded dataset for this config, generated on first use (then cached on disk)."""
  s = data_cfg.shapes
  return _prepared_shapes(data_cfg.data_dir, image_size, s.seed, s.num_train, s.num_validation,
                          s.num_test, s.num_compositional, s.vocab_size)


@functools.cache
def _prepared_shapes(data_dir: str, image_size: int, seed: int, num_train: int, num_validation: int,
                     num_test: int, num_compositional: int, vocab_size: int):
  from fdt_jax.data import shapes_tfds  # TFDS builder code, only needed for this dataset
  # Generated deterministically, so hosts with local disks make identical copies;
  # on a shared disk a lock file makes the others wait for the first.
  return shapes_tfds.prepare_shapes(
      data_dir or None, image_size=image_size, seed=seed, num_train=num_train,
      num_validation=num_validation, num_test=num_test, num_compositional=num_compositional,
      vocab_size=vocab_size)


@dataclasses.dataclass
class Data:
  """Everything the trainer and the evaluators need to know about the data."""
  config: Any  # the whole run config
  tokenizer: Tokenizer  # or data.clip_bpe.ClipBpeTokenizer (data.tokenizer=clip)
  image_size: int
  # What each training batch holds: images uint8 [batch, size, size, 3], tokens int32 [batch, length].
  batch_fields: tuple[str, ...] = ('images', 'tokens')
  # With data.concepts: (record, caption) -> MVPTR's 'phrases', 'tags', 'phrase_spans'.
  concept_fields: Any = None

  def split(self, split: str, name: str | None = None):
    """A random-access source of {'image', 'captions', ...} records."""
    return open_source(self.config.data, split, self.image_size, name)

  def conversion_counts(self) -> dict:
    """For shards converted by fdt_jax.data.convert: records written and skipped per
    reason in the training split, as flat metrics; {} for other sources."""
    path = converted_dir(self.config.data.name)
    if path is None:
      return {}
    from fdt_jax.data.converted import conversion_stats
    stats = conversion_stats(path)['splits'].get('train', {})
    counts = {'data/records_written': stats.get('records_written', 0)}
    counts.update({f'data/skipped_{k}': v for k, v in stats.get('skipped', {}).items()})
    counts['data/missing_shards'] = len(stats.get('missing_shards', []))
    counts['data/broken_shards'] = len(stats.get('broken_shards', []))
    if 'captions_without_concepts' in stats:  # converted with --concepts
      counts['data/captions_without_concepts'] = stats['captions_without_concepts']
    return counts

  def train_iterator(self, *, process_index: int, process_count: int):
    data_cfg = self.config.data
    make_example = pipeline.MakeExample(self.tokenizer, self.image_size, data_cfg.augmentation,
                                        self.concept_fields)
    if data_cfg.mixture:  # ((name, weight), ...)
      sources = [self.split('train', name) for name, _ in data_cfg.mixture]
      weights = [float(weight) for _, weight in data_cfg.mixture]
    else:
      sources, weights = [self.split('train')], None
    return pipeline.train_iterator(
        sources, make_example, weights=weights, seed=self.config.seed,
        batch_size=self.config.batch_size, process_index=process_index,
        process_count=process_count, num_workers=data_cfg.num_workers)


def open_source(data_cfg, split: str, image_size: int = 0, name: str | None = None):
  """'shapes', 'dir:PATH' (shards converted by fdt_jax.data.convert) or a TFDS name."""
  name = name or data_cfg.name
  if name == 'shapes':
    return prepared_shapes(data_cfg, image_size).data_source(split)
  if (path := converted_dir(name)) is not None:
    from fdt_jax.data.converted import open_converted
    return open_converted(path, split)
  return open_tfds(name, split, data_cfg.data_dir)


class CaptionedSource:
  """A TFDS source whose records get a 'captions' list, whatever the dataset calls it."""

  def __init__(self, source, name: str):
    self.source = source
    self.name = name

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.source[index]
    if 'captions' in record and isinstance(record['captions'], dict):  # coco_captions
      record['captions'] = list(record['captions']['text'])
    elif 'captions' not in record:
      for key in ('caption', 'text', 'label_text'):
        if key in record:
          record['captions'] = [record[key]]
          break
    return record

  def __repr__(self):
    return f'CaptionedSource({self.name})'


def open_tfds(name: str, split: str, data_dir: str = ''):
  """A prepared TFDS dataset, read through `tfds.data_source` (ArrayRecord files)."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'TFDS does not know a dataset called {name!r}: check the name in the '
                     'TFDS catalog, or use dir:PATH for shards converted by fdt_jax.data.convert') from None
  try:
    source = builder.as_data_source(split=split)
  except (KeyError, NotImplementedError, FileNotFoundError, AssertionError) as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    raise FileNotFoundError(
        f'TFDS dataset {name!r} (split {split!r}) is not prepared as ArrayRecord in {where} '
        f'({type(e).__name__}): run `tfds build {name} --data_dir={where} --file_format=array_record` '
        '(datasets with a manual download, like imagenet2012, say where to put the files)') from None
  return CaptionedSource(source, name)


def label_names(name: str, data_dir: str = '', key: str = 'label') -> list[str]:
  """A TFDS classification dataset's class names, readable ('maple_tree' -> 'maple tree')."""
  import tensorflow_datasets as tfds
  names = tfds.builder(name, data_dir=data_dir or None).info.features[key].names
  return [n.replace('_', ' ') for n in names]


def check_source(name: str, data_dir: str = '') -> None:
  """Fails in one line if the source `name` cannot exist: a dir:PATH that is not there, a
  name TFDS does not know. (Whether a TFDS dataset is prepared is said when it is opened.)"""
  if name == 'shapes':
    return
  if (path := converted_dir(name)) is not None:
    if not epath.Path(path).is_dir():
      raise FileNotFoundError(f'config.data.name = {name!r}: there is no directory {path}; give '
                              'the output directory of python -m fdt_jax.data.convert')
    return
  import tensorflow_datasets as tfds
  try:
    tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'config.data.name = {name!r}: TFDS does not know this dataset; check the '
                     'name in the TFDS catalog, or use dir:PATH for shards converted by '
                     'fdt_jax.data.convert') from None


def build_data(config, model_cfg) -> Data:
  """Prepares the data (generating 'shapes' on first use) and loads the tokenizer.

  `model_cfg`: the model family's config; its `image_size`, `context_length` and
  `vocab_size` say what the batches must hold.
  """
  data_cfg = config.data
  for name, _ in data_cfg.mixture or ((data_cfg.name, 1.0),):
    check_source(name, data_cfg.data_dir)
  fields = ('images', 'tokens')
  path = converted_dir(data_cfg.name)
  if data_cfg.get('concepts') and (data_cfg.mixture or (data_cfg.name != 'shapes' and path is None)):
    raise ValueError(f'config.data.concepts = True: concepts (phrases and tags) are known for the '
                     f'shapes data and for dir:PATH converted with --concepts, not '
                     f'{"a mixture" if data_cfg.mixture else repr(data_cfg.name)}; set it to False')
  make_concept_fields = concept_fields_maker(data_cfg, model_cfg) if data_cfg.get('concepts') else None
  tokenizer_path = data_cfg.tokenizer
  if data_cfg.name == 'shapes':
    tokenizer_path = tokenizer_path or prepared_shapes(data_cfg, model_cfg.image_size).tokenizer_path
  elif path is not None and not tokenizer_path:
    from fdt_jax.data.converted import TOKENIZER  # written by convert --tokenizer_vocab_size
    converted = epath.Path(path, TOKENIZER)
    tokenizer_path = str(converted) if converted.exists() else ''
  if not tokenizer_path:
    raise ValueError(f'dataset {data_cfg.name!r} needs a tokenizer: set --config.data.tokenizer '
                     'to a sentencepiece .model file (python -m fdt_jax.data.convert '
                     '--tokenizer_vocab_size=N trains one next to converted shards)')
  tokenizer = make_tokenizer(tokenizer_path, model_cfg.context_length)
  if tokenizer.vocab_size > model_cfg.vocab_size:
    raise ValueError(f'the tokenizer {tokenizer_path} has {tokenizer.vocab_size} ids but the model '
                     f'only {model_cfg.vocab_size}: set --config.model.text.vocab_size='
                     f'{tokenizer.vocab_size}')
  if make_concept_fields is not None:
    fields += ('phrases', 'tags', 'phrase_spans')
  return Data(config=config, tokenizer=tokenizer, image_size=model_cfg.image_size, batch_fields=fields,
              concept_fields=make_concept_fields(tokenizer) if make_concept_fields else None)


def concept_fields_maker(data_cfg, model_cfg):
  """tokenizer -> ((record, caption) -> MVPTR's concept fields): the shapes generator's, or
  those of a converted folder's vocabulary. Checks first, in one line, that the data has
  concepts and that the model's `num_concepts` (if it has one) is their number + 2."""
  num_concepts = getattr(model_cfg, 'num_concepts', None)
  if data_cfg.name == 'shapes':
    from fdt_jax.data.concepts import VOCAB_SIZE, example_concepts
    if num_concepts is not None and num_concepts != VOCAB_SIZE:
      raise ValueError(f'config.model.num_concepts = {num_concepts} but the shapes data has '
                       f'{VOCAB_SIZE - 2} concepts: set --config.model.num_concepts={VOCAB_SIZE} '
                       '(the concepts, padding and mask)')
    return lambda tokenizer: functools.partial(example_concepts, tokenizer=tokenizer)
  from fdt_jax.data.converted_concepts import ConvertedConcepts, check_num_concepts, read_vocabulary
  path = converted_dir(data_cfg.name)
  vocabulary = read_vocabulary(path)
  if num_concepts is not None:
    check_num_concepts(vocabulary, num_concepts, path)
  return lambda tokenizer: ConvertedConcepts.from_vocabulary(vocabulary, tokenizer)
