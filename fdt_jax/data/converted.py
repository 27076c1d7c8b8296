"""A converted dataset folder (fdt_jax.data.convert writes it): its file names, its
counts, and reading it back as a random-access source the trainer uses."""

import functools
import json
import os

from etils import epath
import numpy as np

NAME = 'image_captions'  # the TFDS dataset name, in every file name; not the folder's
# One record per chunk for random access, as TFDS writes; uncompressed because JPEG
# bytes do not compress (the default zstd cost 15% of the time and saved nothing).
WRITER_OPTIONS = 'group_size:1,uncompressed'
TOKENIZER = 'sentencepiece.model'  # the trainer's default tokenizer for dir:PATH data


@functools.cache
def features(concepts: bool = False):
  """The records' features; with `concepts` (convert --concepts), one JSON text per caption
  of the tuples it states (data/converted_concepts.py)."""
  import tensorflow_datasets as tfds  # only the feature and naming code: no TensorFlow
  fields = {'image': tfds.features.Image(encoding_format='jpeg'),
            'captions': tfds.features.Sequence(tfds.features.Text())}
  if concepts:
    fields['concepts'] = tfds.features.Sequence(tfds.features.Text())
  return tfds.features.FeaturesDict(fields)


def file_template(output: str, split: str):
  import tensorflow_datasets as tfds
  return tfds.core.ShardedFileTemplate(data_dir=tfds.core.Path(output), dataset_name=NAME, split=split,
                                       filetype_suffix='array_record')


def shard_path(output: str, split: str, index: int, num_shards: int) -> str:
  """TFDS's name for the shard: f'{NAME}-{split}.array_record-{index:05d}-of-{num_shards:05d}'."""
  template = file_template(output, split)
  return os.fspath(template.sharded_filepath(shard_index=index, num_shards=num_shards))



def read_json(path: str) -> dict | None:
  try:
    return json.loads(epath.Path(path).read_text())  # local or gs://
  except (OSError, ValueError):
    return None


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
  stats = read_json(os.path.join(os.path.expanduser(path), 'conversion.json'))
  if stats is None:
    raise FileNotFoundError(f'{path} holds no conversion.json: not converted by fdt_jax.data.convert')
  return stats
