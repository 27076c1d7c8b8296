"""Shared test set-up: eight simulated CPU devices, float32 matmuls at full precision."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_default_matmul_precision', 'highest')

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A 'shapes' dataset small enough to generate in seconds, shared by the whole session.
SMALL_SHAPES = dict(seed=0, num_train=256, num_validation=32, num_test=64, num_compositional=32,
                    vocab_size=128)


def load_config(path: str, arg: str | None = None):
  """A configs/*.py file's get_config(), as `--config=path[:arg]` would load it."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def micro_config(data_dir: str, **overrides):
  """configs/tiny.py shrunk to seconds: 32 px shapes, a one-block model, a few steps."""
  c = load_config('configs/tiny.py')
  c.data.data_dir = data_dir
  c.data.shapes.update(SMALL_SHAPES)
  c.model.variant = 'micro'
  c.model.vision.image_size = 32
  c.model.text.context_length = 40
  # T = 10, not tiny's 1000: at T = 1000 this model's scores differ by ~1e-3, the sparsemax
  # spreads over all 64 tokens and the loss leaves chance slowly (measured: 2.774 -> 2.715
  # in 40 steps, 2.57 in 80; T = 10 drops more than 0.3 in 40), too slow for a smoke test.
  c.model.fdt.update(num_tokens=64, dim=16, temperature=10.0)
  c.update(batch_size=16, total_steps=24, log_every_steps=4, checkpoint_every_steps=8,
           eval_every_steps=0, eval_batch_size=32)
  c.optimizer.update(learning_rate=3e-3, warmup_init_lr=3e-3, warmup_steps=0)
  for key, value in overrides.items():
    target = c
    *path, last = key.split('.')
    for part in path:
      target = target[part]
    target[last] = value
  return c


def micro_family_config(data_dir: str, family: str, layers: dict, **overrides):
  """configs/tiny.py:FAMILY's model and objectives on micro_config's towers and data: micro
  sizes, 32 px, a 128-word vocabulary of 40 positions, the family's `layers` (e.g.
  fusion_layers=1), no evaluators."""
  config = micro_config(data_dir, **overrides)
  tiny = load_config('configs/tiny.py', family)
  config.model, config.objectives = tiny.model, tiny.objectives
  config.data.concepts = tiny.data.concepts
  config.model.update(variant='micro', vision={'image_size': 32}, **layers)
  config.model.text.update(context_length=40, vocab_size=128)
  config.evals = {}
  return config


def fake_images_and_tokens(cfg, size=8, seed=0):
  """(rng, images [size, S, S, 3] float32, tokens [size, context] ending in end-of-text = the
  largest id, then 0-padding) for a model config with image_size, context_length, vocab_size."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((size, cfg.context_length), np.int32)
  for row, length in zip(tokens, rng.integers(3, 20, size)):
    row[:length] = rng.integers(2, cfg.vocab_size - 1, length)
    row[length] = cfg.vocab_size - 1  # end-of-text
  images = rng.normal(size=(size, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
  return rng, images, tokens


@pytest.fixture
def gcs_in_memory(monkeypatch):
  """gs:// paths, for etils.epath (and so orbax, TFDS's epath calls and ours), go to fsspec's
  in-memory file system instead of Cloud Storage: a non-local backend that runs offline.
  Returns the store, {'bucket/path': file}."""
  from etils.epath import backend, gpath
  import fsspec.registry  # noqa: F401 - sys.modules holds the module; fsspec.registry is a view
  from fsspec.implementations.memory import MemoryFileSystem

  class MemoryBucket(MemoryFileSystem):
    protocol = ('gs', 'gcs')
    store = {}  # its own, not MemoryFileSystem's
    pseudo_dirs = ['']

    @classmethod
    def _strip_protocol(cls, path):  # 'gs://bucket/x' -> 'bucket/x', as gcsfs does
      path = str(path).removeprefix('gs://').removeprefix('gcs://')
      return path.rstrip('/')

  # Else epath reads gs:// with TensorFlow's gfile when TensorFlow is installed (a cached check).
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  for protocol in MemoryBucket.protocol:
    monkeypatch.setitem(sys.modules['fsspec.registry']._registry, protocol, MemoryBucket)
  backend.fsspec_backend._get_filesystem.cache_clear()
  yield MemoryBucket.store
  backend.fsspec_backend._get_filesystem.cache_clear()
