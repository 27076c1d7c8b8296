"""Which records a run reads: the config's dataset name -> random-access sources,
the tokenizer, and the model config that fits them."""

import dataclasses
import functools
import os
from typing import Any

from etils import epath

from fdt_jax.data import pipeline
from fdt_jax.data.tokenizer import Tokenizer
from fdt_jax.models import CLIPConfig, model_config


def prepared_shapes(data_cfg, image_size: int):
  """The embedded dataset for this config, generated on first use (then cached on disk)."""
  s = data_cfg.shapes
  return _prepared_shapes(data_cfg.data_dir, image_size, s.seed, s.num_train, s.num_validation,
                          s.num_test, s.num_compositional, s.vocab_size)


@functools.cache
def _prepared_shapes(data_dir: str, image_size: int, seed: int, num_train: int, num_validation: int,
                     num_test: int, num_compositional: int, vocab_size: int):
  from fdt_jax.data import shapes  # TFDS builder code, only needed for this dataset
  # Generated deterministically, so hosts with local disks make identical copies;
  # on a shared disk a lock file makes the others wait for the first.
  return shapes.prepare_shapes(
      data_dir or None, image_size=image_size, seed=seed, num_train=num_train,
      num_validation=num_validation, num_test=num_test, num_compositional=num_compositional,
      vocab_size=vocab_size)


@dataclasses.dataclass
class Data:
  """Everything the trainer and the evaluators need to know about the data."""
  config: Any  # the whole run config
  tokenizer: Tokenizer
  model_config: CLIPConfig

  @property
  def image_size(self) -> int:
    return self.model_config.vision.image_size

  def split(self, split: str, name: str | None = None):
    """A random-access source of {'image', 'captions', ...} records."""
    return open_source(self.config.data, split, self.image_size, name)

  def conversion_counts(self) -> dict:
    """For shards converted by fdt_jax.data.convert: records written and skipped per
    reason in the training split, as flat metrics; {} for other sources."""
    name = self.config.data.name
    if not name.startswith('dir:'):
      return {}
    from fdt_jax.data.convert import conversion_stats
    stats = conversion_stats(name[len('dir:'):])['splits'].get('train', {})
    counts = {'data/records_written': stats.get('records_written', 0)}
    counts.update({f'data/skipped_{k}': v for k, v in stats.get('skipped', {}).items()})
    counts['data/missing_shards'] = len(stats.get('missing_shards', []))
    counts['data/broken_shards'] = len(stats.get('broken_shards', []))
    return counts

  def train_iterator(self, *, process_index: int, process_count: int):
    data_cfg = self.config.data
    make_example = pipeline.MakeExample(self.tokenizer, self.image_size, data_cfg.augmentation)
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
  if name.startswith('dir:'):
    if not name[len('dir:'):]:
      raise ValueError('config.data.name is dir: without a path: set --config.data.name=dir:PATH '
                       'to the output of python -m fdt_jax.data.convert')
    from fdt_jax.data.convert import open_converted
    return open_converted(name[len('dir:'):], split)
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


def build_data(config) -> Data:
  """Prepares the data (generating 'shapes' on first use) and loads the tokenizer."""
  data_cfg = config.data
  cfg = model_config(config.model)
  tokenizer_path = data_cfg.tokenizer
  if data_cfg.name == 'shapes':
    tokenizer_path = tokenizer_path or prepared_shapes(data_cfg, cfg.vision.image_size).tokenizer_path
  elif data_cfg.name.startswith('dir:') and not tokenizer_path:
    from fdt_jax.data.convert import TOKENIZER  # written by convert --tokenizer_vocab_size
    converted = epath.Path(os.path.expanduser(data_cfg.name[len('dir:'):]), TOKENIZER)
    tokenizer_path = str(converted) if converted.exists() else ''
  if not tokenizer_path:
    raise ValueError(f'dataset {data_cfg.name!r} needs a tokenizer: set --config.data.tokenizer '
                     'to a sentencepiece .model file (python -m fdt_jax.data.convert '
                     '--tokenizer_vocab_size=N trains one next to converted shards)')
  tokenizer = Tokenizer(tokenizer_path, cfg.text.context_length)
  if tokenizer.vocab_size > cfg.text.vocab_size:
    raise ValueError(f'the tokenizer {tokenizer_path} has {tokenizer.vocab_size} ids but the text '
                     f'tower only {cfg.text.vocab_size}: set --config.model.text.vocab_size='
                     f'{tokenizer.vocab_size}')
  return Data(config=config, tokenizer=tokenizer, model_config=cfg)
