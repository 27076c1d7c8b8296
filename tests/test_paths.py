"""Every path a user gives goes through etils.epath: exports, the tokenizer, init_from, the
workdir's files and metrics, converted data's statistics work on gs:// as on a local disk,
here on an in-memory gs:// (conftest.gcs_in_memory) that runs offline."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from etils import epath
from flax import nnx

from fdt_jax.data.converted import conversion_stats
from fdt_jax.data.tokenizer import Tokenizer, train_tokenizer
from fdt_jax.export import export_open_clip, import_open_clip, read_config
from fdt_jax.models import build_model, clip_config
from fdt_jax.run import JsonlWriter, load_config, read_jsonl, save_run_files, tokenizer_path

CAPTIONS = ['a large red circle on the left.', 'a cyan cross.', 'a small blue square.'] * 8


def test_the_in_memory_bucket_is_not_the_local_disk(gcs_in_memory, tmp_path):
  epath.Path('gs://bucket/x/file.txt').parent.mkdir(parents=True, exist_ok=True)
  epath.Path('gs://bucket/x/file.txt').write_text('hello')
  assert list(gcs_in_memory) == ['bucket/x/file.txt']
  assert not epath.Path('/bucket/x/file.txt').exists()


def test_an_export_to_gs_is_the_local_export_and_imports_back(gcs_in_memory, tmp_path):
  cfg = clip_config('micro', fdt=dict(num_tokens=32, dim=16), text=dict(vocab_size=64, context_length=16))
  model = build_model(cfg, seed=3)
  local_tokenizer = train_tokenizer(CAPTIONS, str(tmp_path / 'captions.model'), 64)
  remote_tokenizer = 'gs://bucket/data/captions.model'
  epath.Path(remote_tokenizer).parent.mkdir(parents=True, exist_ok=True)
  epath.Path(remote_tokenizer).write_bytes(epath.Path(local_tokenizer).read_bytes())

  export_open_clip(model, cfg, str(tmp_path / 'export'), tokenizer_path=local_tokenizer)
  export_open_clip(model, cfg, 'gs://bucket/exports/micro', tokenizer_path=remote_tokenizer)
  local = {p.name: p.read_bytes() for p in (tmp_path / 'export').iterdir()}
  remote = {p.name: p.read_bytes() for p in epath.Path('gs://bucket/exports/micro').iterdir()}
  assert local == remote and len(local) == 5

  assert read_config('gs://bucket/exports/micro') == cfg
  imported = import_open_clip('gs://bucket/exports/micro', cfg)  # config.model.init_from=gs://...
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(imported), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_workdir_files_and_the_tokenizer_on_gs(gcs_in_memory, tmp_path):
  local_tokenizer = train_tokenizer(CAPTIONS, str(tmp_path / 'captions.model'), 64)
  config = ml_collections.ConfigDict({'seed': 3, 'data': {'tokenizer': local_tokenizer}})
  save_run_files('gs://bucket/run', config, local_tokenizer)
  assert load_config('gs://bucket/run').seed == 3
  remote = tokenizer_path('gs://bucket/run')
  assert remote == 'gs://bucket/run/tokenizer.model'
  np.testing.assert_array_equal(Tokenizer(remote, 16).encode(CAPTIONS[:3]),
                                Tokenizer(local_tokenizer, 16).encode(CAPTIONS[:3]))


def test_metrics_are_appended_on_gs_and_never_read_back(gcs_in_memory, monkeypatch):
  from etils.epath import backend
  modes = []
  real_open = backend.fsspec_backend.open

  def spy(path, mode):
    modes.append(mode)
    return real_open(path, mode)

  epath.Path('gs://bucket/run').mkdir(parents=True, exist_ok=True)
  monkeypatch.setattr(backend.fsspec_backend, 'open', spy)
  writer = JsonlWriter('gs://bucket/run')
  for step in (1, 2, 3):
    writer.write_scalars(step, {'train/loss': np.float32(1.0 / step)})
  monkeypatch.setattr(backend.fsspec_backend, 'open', real_open)
  assert all('a' in mode for mode in modes) and len(modes) == 3, modes
  assert [r['step'] for r in read_jsonl('gs://bucket/run/metrics.jsonl')] == [1, 2, 3]


def test_metrics_append_to_what_a_local_file_holds(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 0, "x": 1}\n')
  JsonlWriter(str(tmp_path)).write_scalars(5, {'x': 2})
  assert read_jsonl(tmp_path / 'metrics.jsonl') == [{'step': 0, 'x': 1}, {'step': 5, 'x': 2}]


def test_converted_data_statistics_on_gs(gcs_in_memory):
  stats = {'train': {'records_written': 11}}
  epath.Path('gs://bucket/cc3m').mkdir(parents=True, exist_ok=True)
  epath.Path('gs://bucket/cc3m/conversion.json').write_text(json.dumps(stats))
  assert conversion_stats('gs://bucket/cc3m') == stats


def test_shapes_refuses_a_remote_data_dir_in_one_line():
  from fdt_jax.data.shapes_tfds import prepare_shapes
  with pytest.raises(ValueError, match='generated on a local disk, not in gs://bucket/tfds'):
    prepare_shapes('gs://bucket/tfds')
