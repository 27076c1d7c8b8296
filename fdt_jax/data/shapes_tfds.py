"""The 'shapes' dataset (fdt_jax.data.shapes) as TFDS ArrayRecord files, generated once
and cached: the builder, and `prepare_shapes`, which is safe to interrupt and to call
from several processes at once."""

import contextlib
import dataclasses
import fcntl
import io
import os
import time

from PIL import Image
import tensorflow_datasets as tfds

from fdt_jax.data import shapes
from fdt_jax.data.shapes import CONCEPTS, COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, SPLITS, generate_example
from fdt_jax.data.tokenizer import train_tokenizer


# --- TFDS -------------------------------------------------------------------------

@dataclasses.dataclass(eq=False, kw_only=True)
class ShapesConfig(tfds.core.BuilderConfig):
  image_size: int = 64
  seed: int = 0
  split_sizes: tuple[int, int, int, int] = (20_000, 1_000, 1_000, 1_000)  # in SPLITS order


def shapes_config(image_size: int, seed: int, split_sizes: tuple[int, ...]) -> ShapesConfig:
  name = f'{image_size}px_seed{seed}_' + '_'.join(str(n) for n in split_sizes)
  return ShapesConfig(name=name, image_size=image_size, seed=seed, split_sizes=tuple(split_sizes))


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  def initialize_from_bucket(self):
    """Nothing of ours is on TFDS's bucket; TFDS would still leave an empty /tmp/tmp*tfds."""


class ShapesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes the splits of `config=shapes_config(...)`.

  Not registered with TFDS: `tfds.data_source('fdt_shapes/<config>:<version>', data_dir=...)`
  reads the prepared files back without this class.
  """

  name = 'fdt_shapes'
  # Bump when the generator changes: the version is part of the cache path.
  VERSION = tfds.core.Version('1.0.0')

  # TFDS looks for a checksums file next to the builder's code, and for a builder in a
  # package that lookup imports `importlib_resources`, a backport Python >= 3.9 does
  # not install. Nothing is downloaded, so there is no checksums file to find.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    label = tfds.features.ClassLabel
    return _LocalDatasetInfo(
        builder=self,
        description=shapes.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
            'captions': tfds.features.Sequence(tfds.features.Text()),
            'objects': tfds.features.Sequence({
                'colour': label(names=list(COLOURS)), 'shape': label(names=list(SHAPES)),
                'size': label(names=list(SIZES)), 'position': label(names=list(POSITIONS)),
                'bbox': tfds.features.BBoxFeature()}),
            'relation': label(names=list(RELATIONS)),
            'concepts': tfds.features.Sequence(label(names=list(CONCEPTS))),
        }),
        disable_shuffling=True,  # record i is example i
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)  # TFDS cannot write an empty split
            for split, n in zip(SPLITS, self.builder_config.split_sizes) if n > 0}

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    start = time.perf_counter()
    for index in range(num_examples):
      example = generate_example(cfg.seed, split, index, cfg.image_size)
      png = io.BytesIO()
      Image.fromarray(example['image']).save(png, format='png')  # PIL, so TFDS needs no TensorFlow
      example['image'] = png.getvalue()
      yield index, example
      if (index + 1) % 5000 == 0 or index + 1 == num_examples:
        print(f'shapes {split}: {index + 1}/{num_examples} examples, '
              f'{time.perf_counter() - start:.0f} s', flush=True)


# --- Preparation ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShapesData:
  """Where a prepared 'shapes' dataset lives: `tfds.data_source(tfds_name, data_dir=data_dir)`."""
  tfds_name: str       # 'fdt_shapes/<config>:<version>'
  data_dir: str
  tokenizer_path: str  # sentencepiece model trained on the training captions
  split_sizes: dict[str, int]
  image_size: int

  def data_source(self, split: str, **kwargs):
    """Random access to one split (a grain-compatible data source)."""
    return tfds.data_source(self.tfds_name, split=split, data_dir=self.data_dir, download=False, **kwargs)


def prepare_shapes(data_dir: str | None, *, image_size: int = 64, seed: int = 0,
                   num_train: int = 20_000, num_validation: int = 1_000, num_test: int = 1_000,
                   num_compositional: int = 1_000, vocab_size: int = 256) -> ShapesData:
  """Generates the dataset and its tokenizer once; later calls only check two files.

  Safe to interrupt (TFDS writes into an 'incomplete.*' folder and renames it when
  done; the tokenizer is written to a temporary file and renamed) and to call from
  several processes at once (they take turns on a lock file). `data_dir=None` is
  TFDS's default data dir. A split of size 0 is left out.
  """
  if num_train < 1 or min(num_validation, num_test, num_compositional) < 0:
    raise ValueError('shapes needs num_train >= 1 (the tokenizer learns from its captions) '
                     'and no negative split size')
  if data_dir and '://' in data_dir:  # generated here, under a file lock: a local disk only
    raise ValueError(f'the embedded shapes data is generated on a local disk, not in {data_dir}: '
                     'set --config.data.data_dir to a local folder (gs:// is for TFDS datasets)')
  config = shapes_config(image_size, seed, (num_train, num_validation, num_test, num_compositional))
  data_dir = os.path.abspath(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR))
  version = ShapesBuilder.VERSION
  dataset_dir = os.path.join(data_dir, ShapesBuilder.name, config.name, str(version))
  data = ShapesData(
      tfds_name=f'{ShapesBuilder.name}/{config.name}:{version}', data_dir=data_dir,
      tokenizer_path=os.path.join(dataset_dir, f'sentencepiece_{vocab_size}.model'),
      split_sizes={s: n for s, n in zip(SPLITS, config.split_sizes) if n > 0}, image_size=image_size)
  if _prepared(dataset_dir, data.tokenizer_path):
    return data
  os.makedirs(data_dir, exist_ok=True)
  with _locked(os.path.join(data_dir, f'.{ShapesBuilder.name}_{config.name}.lock')):
    if _prepared(dataset_dir, data.tokenizer_path):  # another process did it meanwhile
      return data
    start = time.perf_counter()
    if not os.path.exists(os.path.join(dataset_dir, 'dataset_info.json')):
      print(f'Generating {data.tfds_name} ({sum(config.split_sizes)} examples) in {data_dir}', flush=True)
      builder = ShapesBuilder(config=config, data_dir=data_dir, file_format='array_record')
      builder.download_and_prepare()
    train = data.data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
    texts = (t.decode() for i in range(len(train)) for t in train[i]['captions'])
    train_tokenizer(texts, data.tokenizer_path, vocab_size)
    print(f'Prepared {data.tfds_name} and its tokenizer in {time.perf_counter() - start:.1f} s', flush=True)
  return data


def _prepared(dataset_dir: str, tokenizer_path: str) -> bool:
  # TFDS renames the finished folder into place, so dataset_info.json means complete.
  return os.path.exists(os.path.join(dataset_dir, 'dataset_info.json')) and os.path.exists(tokenizer_path)


@contextlib.contextmanager
def _locked(path: str):
  """An exclusive lock on `path`; a file system without locks (some network mounts) goes unlocked."""
  with open(path, 'w') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX)
    except OSError as e:
      print(f'shapes: cannot lock {path} ({e}); preparing without a lock', flush=True)
    yield  # closing the file releases the lock
