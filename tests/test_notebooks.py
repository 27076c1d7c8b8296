"""The notebooks in colabs/ run top to bottom (as on a fresh Colab runtime, minus the install,
since fdt_jax is importable here) on micro runs: one trained inside a notebook, one loaded."""

import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, SMALL_SHAPES, micro_config

COLABS = ROOT / 'colabs'


def micro_overrides(data_dir: str) -> dict:
  """conftest's micro_config as the notebooks' FDT_NOTEBOOK_OVERRIDES (dotted keys)."""
  overrides = {'data.data_dir': data_dir, 'model.variant': 'micro', 'model.vision.image_size': 32,
               'model.text.context_length': 40, 'model.fdt.num_tokens': 64, 'model.fdt.dim': 16,
               'batch_size': 16, 'log_every_steps': 4, 'optimizer.learning_rate': 3e-3,
               'optimizer.warmup_init_lr': 3e-3, 'optimizer.warmup_steps': 0}
  overrides.update({f'data.shapes.{k}': v for k, v in SMALL_SHAPES.items()})
  return overrides


@pytest.fixture(scope='module')
def fdt_run(shapes_dir, tmp_path_factory):
  from fdt_jax.train import loop
  workdir = tmp_path_factory.mktemp('fdt_run')
  config = micro_config(shapes_dir, total_steps=8, checkpoint_every_steps=8)
  config.evals = {}
  loop.train_and_evaluate(config, str(workdir))
  return str(workdir)


def execute(name: str, env: dict, monkeypatch) -> nbformat.NotebookNode:
  """Runs colabs/<name> in a fresh kernel (which inherits `env`); raises on a failing cell."""
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(COLABS / name, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(COLABS)}}).execute()
  return notebook


def outputs(notebook) -> tuple[str, int]:
  """(all printed text, number of PNG images shown)."""
  text, images = [], 0
  for cell in notebook.cells:
    for output in cell.get('outputs', []):
      text.append(output.get('text', ''))
      images += 'image/png' in output.get('data', {})
  return ''.join(text), images


@pytest.mark.parametrize('name', ['explore_fdt_tokens.ipynb', 'compare_fdt_clip.ipynb'])
def test_notebooks_are_committed_without_outputs(name):
  notebook = nbformat.read(COLABS / name, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.slow
def test_explore_notebook_on_a_loaded_run(fdt_run, tmp_path, monkeypatch):
  notebook = execute('explore_fdt_tokens.ipynb', {
      'FDT_NOTEBOOK_WORKDIR': fdt_run, 'FDT_NOTEBOOK_EXAMPLES': '32',
      'FDT_NOTEBOOK_RUNS': str(tmp_path)}, monkeypatch)
  text, images = outputs(notebook)
  assert 'step 8: 32 test images' in text and 'text->image R@1' in text and 'agreement' in text
  assert images == 5  # retrieval, patches, words, purity, usage
  assert not os.listdir(tmp_path)  # nothing trained


@pytest.mark.slow
def test_compare_notebook_trains_clip_inside_and_loads_fdt(fdt_run, shapes_dir, tmp_path, monkeypatch):
  notebook = execute('compare_fdt_clip.ipynb', {
      'FDT_NOTEBOOK_FDT_WORKDIR': fdt_run, 'FDT_NOTEBOOK_STEPS': '4',
      'FDT_NOTEBOOK_EXAMPLES': '32', 'FDT_NOTEBOOK_RUNS': str(tmp_path),
      'FDT_NOTEBOOK_OVERRIDES': json.dumps(micro_overrides(shapes_dir))}, monkeypatch)
  text, images = outputs(notebook)
  assert 'FDT at step 8, CLIP at step 4; 32 test images' in text
  assert ' FDT: i2t_R@1' in text and 'CLIP: i2t_R@1' in text and 'agreement' in text
  assert images == 4  # retrieval twice, patches, purity
  clip_config = json.loads((tmp_path / 'notebook_clip' / 'config.json').read_text())
  assert clip_config['model']['fdt']['enabled'] is False and clip_config['total_steps'] == 4
