"""Which records a run reads: the config's dataset name -> random-access sources,
the tokenizer, and the model config that fits them."""

import dataclasses
import functools
from typing import Any

from fdt_jax.data import pipeline
from fdt_jax.data.tokenizer import Tokenizer
from fdt_jax.models import CLIPConfig, model_config


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
  shapes: Any = None  # the prepared shapes dataset, when that is the source

  @property
  def image_size(self) -> int:
    return self.model_config.vision.image_size

  def split(self, split: str, name: str | None = None):
    """A random-access source of {'image', 'captions', ...} records."""
    return open_source(self.config.data, split, self.shapes, name)

  def train_iterator(self, *, process_index: int, process_count: int):
    data_cfg = self.config.data
    make_example = pipeline.MakeExample(self.tokenizer, self.image_size, data_cfg.augmentation)
    return pipeline.train_iterator(
        self.split('train'), make_example, seed=self.config.seed,
        batch_size=self.config.batch_size, process_index=process_index,
        process_count=process_count, num_workers=data_cfg.num_workers)


def open_source(data_cfg, split: str, shapes=None, name: str | None = None):
  name = name or data_cfg.name
  if name == 'shapes':
    return shapes.data_source(split)
  raise ValueError(f'unknown dataset {name!r}: use shapes')


def build_data(config) -> Data:
  """Prepares the data (generating 'shapes' on first use) and loads the tokenizer."""
  data_cfg = config.data
  cfg = model_config(config.model)
  shapes = None
  tokenizer_path = data_cfg.tokenizer
  if data_cfg.name == 'shapes':
    s = data_cfg.shapes
    shapes = _prepared_shapes(data_cfg.data_dir, cfg.vision.image_size, s.seed, s.num_train,
                              s.num_validation, s.num_test, s.num_compositional, s.vocab_size)
    tokenizer_path = tokenizer_path or shapes.tokenizer_path
  if not tokenizer_path:
    raise ValueError(f'dataset {data_cfg.name!r} needs a tokenizer: set --config.data.tokenizer '
                     'to a sentencepiece .model file')
  tokenizer = Tokenizer(tokenizer_path, cfg.text.context_length)
  if tokenizer.vocab_size > cfg.text.vocab_size:
    raise ValueError(f'the tokenizer {tokenizer_path} has {tokenizer.vocab_size} ids but the text '
                     f'tower only {cfg.text.vocab_size}: set --config.model.text.vocab_size='
                     f'{tokenizer.vocab_size}')
  return Data(config=config, tokenizer=tokenizer, model_config=cfg, shapes=shapes)
