"""The grain input pipeline: random-access records -> shuffled, per-host, augmented,
tokenised batches, from an iterator whose position is saved with each checkpoint.

    source(s) -> shuffle (new order each epoch) -> repeat -> [mix by weight] -> example
    (one random caption, image transform, tokenise) -> this host's share -> batch
    -> [worker processes]

The per-example randomness is seeded by the example's global position, before the
split between hosts, so the global batch of a step holds the same examples with the
same captions and augmentations however many hosts read it.
"""

import dataclasses
from typing import Any, Callable

import grain
import numpy as np

from fdt_jax.data.transforms import mocov2_augment, resize_center_crop

AUGMENTATIONS = ('none', 'mocov2')


def caption_text(caption) -> str:
  return caption.decode('utf-8') if isinstance(caption, bytes) else str(caption)


@dataclasses.dataclass(frozen=True)
class MakeExample:
  """A record {'image', 'captions'} -> {'images': uint8 [size, size, 3], 'tokens': int32 [length]},
  plus what `extra(record, caption)` returns (e.g. MVPTR's concepts of the pair)."""
  tokenizer: Any
  image_size: int
  augmentation: str = 'none'
  extra: Callable | None = None

  def __post_init__(self):
    if self.augmentation not in AUGMENTATIONS:
      raise ValueError(f'unknown augmentation {self.augmentation!r}: use one of {AUGMENTATIONS}')

  def __call__(self, record, rng: np.random.Generator):
    captions = record['captions']
    caption = caption_text(captions[rng.integers(len(captions))])
    if self.augmentation == 'mocov2':
      image = mocov2_augment(record['image'], self.image_size, rng)
    else:
      image = resize_center_crop(record['image'], self.image_size)
    example = {'images': image, 'tokens': self.tokenizer.encode(caption)[0]}
    if self.extra is not None:
      example.update(self.extra(record, caption))
    return example


def train_iterator(sources, make_example: Callable, *, seed: int, batch_size: int,
                   process_index: int, process_count: int, weights=None, num_workers: int = 0,
                   num_threads: int = 4, prefetch: int = 8) -> grain.DatasetIterator:
  """An endless iterator over this host's batches of `batch_size / process_count` examples.

  `sources`: a list of random-access sources, mixed in proportion to `weights` when
  there are several (each shuffled and repeated on its own, so a small source is simply
  seen more often).
  """
  per_host, remainder = divmod(batch_size, process_count)
  if remainder:
    raise ValueError(f'batch_size {batch_size} does not divide over {process_count} processes')
  streams = [grain.MapDataset.source(s).seed(seed + i).shuffle().repeat()
             for i, s in enumerate(sources)]
  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, list(weights)).seed(seed)
  ds = ds.random_map(make_example)  # seeded from the pipeline's seed and the global position
  ds = ds[process_index::process_count].batch(per_host, drop_remainder=True)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


class _Padded:
  """Item `position` of `examples` with its 'index'; positions past the end are zero rows
  with index -1 (they pad the last global batch and never reach a metric)."""

  def __init__(self, examples):
    self.examples = examples
    self._zeros = None

  def __call__(self, position):
    position = int(position)
    if position < len(self.examples):
      return {**self.examples[position], 'index': np.int64(position)}
    if self._zeros is None:
      self._zeros = {k: np.zeros_like(v) for k, v in self.examples[0].items()}
    return {**self._zeros, 'index': np.int64(-1)}


def eval_batches(examples, *, batch_size: int, process_index: int, process_count: int,
                 num_workers: int = 0, num_threads: int = 4):
  """This host's share of every global batch over a random-access `examples` (each item a
  dict of arrays), in order, the last batch padded: the same number of batches on every
  host. As in training, batches are read by grain's threads, in `num_workers` worker
  processes if any (each worker reads whole batches, so the order holds)."""
  per_host = batch_size // process_count
  num_batches = -(-len(examples) // batch_size)
  positions = (np.arange(num_batches)[:, None] * batch_size + process_index * per_host
               + np.arange(per_host)[None]).ravel()
  ds = grain.MapDataset.source(positions).map(_Padded(examples)).batch(per_host)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads))
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


@dataclasses.dataclass(frozen=True)
class EvalImages:
  """Random access to evaluation images: item i = {'inputs': uint8 [size, size, 3] (CLIP's
  resize and centre crop of record indices[i]), 'label': int32 if `label_of`}."""
  source: Any
  image_size: int
  indices: Any = None  # which records; default all
  label_of: Callable | None = None  # record -> class id (picklable, for worker processes)

  def __len__(self):
    return len(self.source) if self.indices is None else len(self.indices)

  def __getitem__(self, i):
    record = self.source[int(i if self.indices is None else self.indices[i])]
    item = {'inputs': resize_center_crop(record['image'], self.image_size)}
    if self.label_of is not None:
      item['label'] = np.int32(self.label_of(record))
    return item


@dataclasses.dataclass(frozen=True)
class EvalArrays:
  """Random access to rows of arrays of equal length, e.g. {'inputs': tokens [n, length]}."""
  arrays: dict

  def __len__(self):
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i):
    return {k: v[i] for k, v in self.arrays.items()}
