"""FDT token inspection: known answers on hand-made weights, and the Colab notebook run
end to end on a real (tiny) training run."""

import json

import numpy as np

from conftest import ROOT, micro_config
from fdt_jax.eval import tokens
from fdt_jax.train import loop


def test_concept_tokens_finds_the_tokens_a_concept_raises():
  rng = np.random.default_rng(0)
  labels = rng.random((200, 2)) < 0.5
  weights = rng.random((200, 10)) * 0.01
  weights[labels[:, 0], 3] += 1.0  # concept 'a' uses token 3, then 7
  weights[labels[:, 0], 7] += 0.5
  weights[labels[:, 1], 1] += 1.0  # concept 'b' uses token 1
  result = tokens.concept_tokens(weights, labels, ['a', 'b'], k=2)
  assert result['a'] == [3, 7]
  assert result['b'][0] == 1


def test_modality_agreement_counts_shared_top_tokens():
  agreement = tokens.modality_agreement({'a': [1, 2, 3, 4], 'b': [5, 6, 7, 8]},
                                        {'a': [4, 3, 9, 10], 'b': [1, 2, 3, 4], 'c': [1]})
  assert agreement == {'a': 0.5, 'b': 0.0}


def test_top_tokens_lists_only_nonzero_weights_heaviest_first():
  weights = np.array([[0.0, 0.7, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]])
  assert tokens.top_tokens(weights, k=3) == [[(1, 0.7), (3, 0.3)], [(0, 1.0)]]


def test_the_colab_notebook_runs_on_a_trained_model(shapes_dir, tmp_path, capsys):
  config = micro_config(shapes_dir, total_steps=4, checkpoint_every_steps=4)
  config.evals = {}
  loop.train_and_evaluate(config, str(tmp_path))
  notebook = json.loads((ROOT / 'colabs' / 'explore_fdt_tokens.ipynb').read_text())
  namespace = {}
  for cell in notebook['cells']:
    if cell['cell_type'] == 'code':
      source = ''.join(cell['source']).replace("WORKDIR = 'runs/tiny'", f'WORKDIR = {str(tmp_path)!r}')
      exec(compile(source, 'notebook', 'exec'), namespace)
  printed = capsys.readouterr().out
  assert 'mean agreement' in printed and 'R@1 on these examples' in printed
  weights = namespace['image_weights']
  np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)  # sparsemax rows
  assert weights.shape == (len(namespace['records']), config.model.fdt.num_tokens)
