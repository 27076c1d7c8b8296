"""The PyTorch side stands alone: a tiny run, trained and exported here, loads with torch and
open_clip in a process where `import jax` fails, tokenizes captions to the ids the run was
trained with, and gives the embeddings JAX gives. Also the quick tier's end-to-end step."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, micro_config

pytest.importorskip('torch')
pytest.importorskip('open_clip')

CAPTIONS = ['a large red circle on the left.', 'a small blue square above a green triangle.']

# On PYTHONPATH ahead of the repository: every JAX-stack import fails, as on a machine
# without it.
BLOCK_JAX = '''
import importlib.abc, sys

class BlockJax(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in {'jax', 'jaxlib', 'flax', 'optax', 'orbax', 'grain', 'clu'}:
      raise ImportError(f'{name} is blocked: the PyTorch side must not import it')
    return None

sys.meta_path.insert(0, BlockJax())
'''

TORCH_SIDE = '''
import json, sys
import numpy as np, torch
from PIL import Image
from fdt_jax.export import torch_fdt

out, image_path, captions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model, preprocess, tokenizer = torch_fdt.load_exported(out)
tokens = tokenizer(captions)
with torch.no_grad():
  image = model.encode_image(preprocess(Image.open(image_path))[None])
  text = model.encode_text(tokens)
np.savez(out + '/torch.npz', tokens=tokens.numpy(), image=image.embedding.numpy(),
         text=text.embedding.numpy(), image_fdt_weights=image.fdt_weights.numpy())
blocked = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'orbax')]
print(json.dumps({'blocked_modules_loaded': blocked}))
'''


@pytest.fixture(scope='module')
def exported_tiny_run(shapes_dir, tmp_path_factory):
  """A micro run of two steps, exported with python -m fdt_jax.export's function."""
  from fdt_jax.export.__main__ import export_run
  from fdt_jax.train import loop
  root = tmp_path_factory.mktemp('torch_side')
  config = micro_config(shapes_dir, total_steps=2, checkpoint_every_steps=2, log_every_steps=1)
  config.evals = {}
  loop.train_and_evaluate(config, str(root / 'run'))
  assert export_run(str(root / 'run'), str(root / 'exported' / 'tiny')) == 2
  (root / 'block').mkdir()
  (root / 'block' / 'sitecustomize.py').write_text(BLOCK_JAX)
  return root


def run_without_jax(root, *args):
  env = {**os.environ, 'PYTHONPATH': f'{root / "block"}{os.pathsep}{ROOT}'}
  result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_the_block_stops_jax(tmp_path):
  (tmp_path / 'sitecustomize.py').write_text(BLOCK_JAX)
  result = subprocess.run([sys.executable, '-c', 'import jax'], capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(tmp_path)})
  assert result.returncode != 0 and 'jax is blocked' in result.stderr


@pytest.mark.slow  # with the next: trains and exports a tiny run (~40 s): the full suite only
def test_an_export_loads_in_pytorch_without_jax_and_gives_the_jax_embeddings(exported_tiny_run):
  from fdt_jax.data.transforms import CLIP_MEAN, CLIP_STD
  from fdt_jax.models import model_config
  from fdt_jax.run import load_run
  root = exported_tiny_run
  out = root / 'exported' / 'tiny'
  run = load_run(str(root / 'run'))
  size = model_config(run.config.model).vision.image_size
  pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(root / 'image.png')  # the model's size: preprocess only normalises

  stdout = run_without_jax(root, '-c', textwrap.dedent(TORCH_SIDE), str(out), str(root / 'image.png'),
                           json.dumps(CAPTIONS))
  assert json.loads(stdout.strip().splitlines()[-1]) == {'blocked_modules_loaded': []}
  torch_side = np.load(out / 'torch.npz')

  tokens = run.tokenizer.encode(CAPTIONS)
  np.testing.assert_array_equal(torch_side['tokens'], tokens)  # the ids the run trained with
  images = ((pixels / 255.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD))[None].astype(np.float32)
  image, text = run.model.encode_image(images), run.model.encode_text(tokens)
  np.testing.assert_allclose(torch_side['image'], np.asarray(image.embedding), atol=1e-4)
  np.testing.assert_allclose(torch_side['text'], np.asarray(text.embedding), atol=1e-4)
  np.testing.assert_allclose(torch_side['image_fdt_weights'], np.asarray(image.fdt_weights), atol=1e-4)


@pytest.mark.slow
def test_the_readme_pytorch_example_runs_as_written_without_jax(exported_tiny_run):
  readme = (ROOT / 'README.md').read_text()
  example, = [block for block in re.findall(r'```python\n(.*?)```', readme, re.S)
              if 'torch_fdt' in block]
  stdout = run_without_jax(exported_tiny_run, '-c', example)  # in the folder holding exported/tiny
  assert 'tensor(' in stdout
