"""Token statistics on hand-made weights with known answers, and `python -m fdt_jax.inspect`
end to end on a micro run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, micro_config
from fdt_jax.eval import token_stats as ts

A, B = [True, False], [False, True]


def test_a_token_that_fires_only_on_one_concept_is_pure():
  labels = np.array([A, A, B, B])
  weights = np.array([[1.0, 0.0], [0.6, 0.4], [0.0, 1.0], [0.0, 1.0]])
  weights[1] = [1.0, 0.0]
  np.testing.assert_allclose(ts.token_purity(ts.concept_mass(weights, labels)), [1.0, 1.0])
  assert ts.mean_purity(ts.concept_mass(weights, labels)) == pytest.approx(1.0)


def test_a_token_split_evenly_between_two_concepts_has_purity_one_half():
  labels = np.array([A, B, A, B])
  weights = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(ts.token_purity(ts.concept_mass(weights, labels)), [0.5, 0.5])


def test_an_input_with_several_concepts_splits_its_weight_among_them():
  labels = np.array([[True, True], A])  # the first input shows A and B
  weights = np.array([[1.0], [1.0]])
  mass = ts.concept_mass(weights, labels)
  np.testing.assert_allclose(mass, [[1.5, 0.5]])  # A: 1/2 + 1, B: 1/2
  assert ts.token_purity(mass)[0] == pytest.approx(0.75)
  three = np.array([[True, True, True]])
  np.testing.assert_allclose(ts.concept_mass(np.array([[0.3, 0.7]]), three),
                             [[0.1, 0.1, 0.1], [0.7 / 3] * 3])


def test_mean_purity_weighs_tokens_by_their_mass_and_ignores_unused_ones():
  labels = np.array([A, A, A, B])
  # token 0: mass 3, all on A (purity 1); token 1: mass 1 split A/B (0.5); token 2 unused
  weights = np.array([[1, 0, 0], [1, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0]], float)
  mass = ts.concept_mass(weights, labels)
  purity = ts.token_purity(mass)
  np.testing.assert_allclose(purity[:2], [2.5 / 3, 0.5 / 1])
  assert np.isnan(purity[2])
  assert ts.mean_purity(mass) == pytest.approx((2.5 + 0.5) / 4)


def test_inputs_without_labels_carry_no_mass():
  labels = np.array([A, [False, False]])
  mass = ts.concept_mass(np.array([[1.0], [1.0]]), labels)
  np.testing.assert_allclose(mass, [[1.0, 0.0]])


def test_weights_that_do_not_sum_to_one_are_rescaled():
  labels = np.array([A, B])
  np.testing.assert_allclose(ts.concept_mass(np.array([[0.2, 0.2], [0.0, 3.0]]), labels),
                             [[0.5, 0.0], [0.5, 1.0]])


def test_purity_of_concept_aligned_tokens_beats_its_permuted_chance():
  rng = np.random.default_rng(0)
  concept = rng.integers(4, size=20000)
  labels = np.eye(4, dtype=bool)[concept]
  weights = np.eye(8)[2 * concept + rng.integers(2, size=20000)]  # two tokens per concept
  result = ts.purities(weights, labels, {'first_two': [0, 1]})
  assert result[''] == pytest.approx(1.0)
  assert result['_first_two'] == pytest.approx(1.0)
  assert result['_chance'] == pytest.approx(0.25, abs=0.02)  # each concept's share
  assert result['_first_two_chance'] == pytest.approx(0.5, abs=0.02)
  assert sorted(ts.permuted(labels).sum(0)) == sorted(labels.sum(0))


def test_purity_of_tokens_blind_to_concepts_equals_its_chance():
  rng = np.random.default_rng(1)
  labels = rng.random((4000, 5)) < [0.5, 0.3, 0.2, 0.1, 0.05]
  weights = ts.normalized(rng.random((4000, 6)) * (rng.random((4000, 6)) < 0.4))
  result = ts.purities(weights, labels)
  assert result[''] == pytest.approx(result['_chance'], abs=0.02)


def test_agreement_of_identical_disjoint_and_overlapping_weights():
  same = np.array([[0.2, 0.8, 0.0]])
  assert ts.agreement(same, same)[0] == pytest.approx(1.0)
  assert ts.agreement(np.array([[1.0, 0, 0]]), np.array([[0, 0.5, 0.5]]))[0] == 0.0
  assert ts.agreement(np.array([[0.5, 0.5, 0]]), np.array([[0.5, 0, 0.5]]))[0] == pytest.approx(0.5)
  assert ts.agreement(np.array([[0.7, 0.3]]), np.array([[0.4, 0.6]]))[0] == pytest.approx(0.7)


def test_chance_agreement_pairs_every_image_with_another_caption():
  partner = ts.derangement(50, seed=3)
  assert sorted(partner) == list(range(50)) and not np.any(partner == np.arange(50))
  eye = np.eye(50)
  assert ts.agreement(eye, eye).mean() == 1.0
  assert ts.chance_agreement(eye, eye).mean() == 0.0


def test_dead_tokens_are_those_no_input_of_either_modality_uses():
  image = np.array([[0.5, 0, 0.5, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
  text = np.array([[0, 0, 0, 1.0, 0, 0], [0, 0, 0, 1.0, 0, 0]])
  np.testing.assert_array_equal(ts.tokens_in_use(image, text), [1, 0, 1, 1, 0, 0])
  assert ts.tokens_in_use(image).sum() == 2


def test_active_and_effective_number_of_tokens():
  weights = np.array([[0.5, 0.5, 0, 0], [1, 0, 0, 0], [0.25] * 4, [0.9, 0.1, 0, 0]])
  np.testing.assert_array_equal(ts.active_counts(weights), [2, 1, 4, 2])
  np.testing.assert_allclose(ts.effective_counts(weights), [2, 1, 4, 1 / 0.82])


def test_words_group_sentencepiece_pieces_and_keep_punctuation_apart():
  pieces = ['▁a', '▁tri', 'angle', '▁on', '▁the', '▁left', '.', ts.END_OF_TEXT]
  assert ts.position_words(pieces) == ['a', 'triangle', 'triangle', 'on', 'the', 'left', '.',
                                       ts.END_OF_TEXT]


def test_top_words_score_the_word_at_the_argmax_by_the_caption_weight():
  words = [['a', 'red', 'star'], ['a', 'red', 'disc'], ['a', 'blue', 'star']]
  weights = np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
  argmax = np.array([[1, 2], [1, 0], [1, 2]])  # token 0 fires at the colour, token 1 at the shape
  result = ts.top_words(weights, argmax, words, tokens=[0, 1], k=3)
  assert result[0] == [('red', 1.5), ('blue', 0.2)]
  assert result[1] == [('star', pytest.approx(1.3))]  # caption 1 gives token 1 no weight


def test_top_inputs_are_the_heaviest_nonzero_rows():
  weights = np.array([[0.1, 0.9], [0.7, 0.3], [0.0, 1.0], [0.4, 0.6]])
  assert ts.top_inputs(weights, 0, 3) == [1, 3, 0]
  assert ts.top_inputs(np.array([[0.0, 1.0], [0.2, 0.8]]), 0, 5) == [1]


def test_top_tokens_lists_only_nonzero_weights_heaviest_first():
  from fdt_jax.eval.tokens import top_tokens
  weights = np.array([[0.0, 0.7, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]])
  assert top_tokens(weights, k=3) == [[(1, 0.7), (3, 0.3)], [(0, 1.0)]]


# --- python -m fdt_jax.inspect on micro runs ----------------------------------------

@pytest.fixture(scope='module')
def fdt_run(shapes_dir, tmp_path_factory):
  from fdt_jax.train import loop
  workdir = tmp_path_factory.mktemp('fdt_run')
  config = micro_config(shapes_dir, total_steps=16, checkpoint_every_steps=16)
  config.evals = {}
  loop.train_and_evaluate(config, str(workdir))
  return str(workdir)


def run_inspect(*args):
  return subprocess.run([sys.executable, '-m', 'fdt_jax.inspect', *args], cwd=ROOT, text=True,
                        capture_output=True, timeout=300)


def error_lines(result):
  assert result.returncode != 0
  return [line for line in result.stderr.splitlines() if line.startswith('error:')]


@pytest.mark.slow
def test_inspect_writes_consistent_numbers_and_the_figures(fdt_run, tmp_path):
  from PIL import Image
  out = tmp_path / 'report'
  result = run_inspect(f'--workdir={fdt_run}', f'--out={out}', '--max_examples=40')
  assert result.returncode == 0, result.stderr[-3000:]
  numbers = json.loads((out / 'inspect.json').read_text())
  for key in ['tokens_in_use', 'dead_tokens', 'active_per_image', 'active_per_text',
              'effective_per_image', 'effective_per_text', 'purity_image', 'purity_text',
              'purity_image_chance', 'purity_text_chance', 'agreement', 'agreement_chance',
              'num_tokens', 'num_examples', 'step', 'purity_image_colour', 'purity_text_shape_chance']:
    assert key in numbers, key
  assert numbers['num_tokens'] == 64 and numbers['num_examples'] == 40 and numbers['step'] == 16
  assert numbers['tokens_in_use'] + numbers['dead_tokens'] == numbers['num_tokens']
  assert max(numbers['tokens_in_use_image'], numbers['tokens_in_use_text']) <= numbers['tokens_in_use'] \
      <= numbers['tokens_in_use_image'] + numbers['tokens_in_use_text']
  for modality in ('image', 'text'):  # 1 / sum w^2 never exceeds the support size
    assert 1 <= numbers[f'effective_per_{modality}'] <= numbers[f'active_per_{modality}'] + 1e-6
    assert numbers[f'active_per_{modality}'] <= numbers[f'tokens_in_use_{modality}']
  for key, value in numbers.items():
    if key.startswith(('purity', 'agreement')):
      assert 0 < value <= 1, (key, value)

  table = json.loads((out / 'tokens.json').read_text())
  assert len(table) == numbers['tokens_in_use']
  assert sum(e['image_mass'] for e in table) == pytest.approx(40, rel=1e-4)  # rows sum to 1
  assert sum(e['text_mass'] for e in table) == pytest.approx(40, rel=1e-4)
  report = (out / 'report.md').read_text()
  for name in ['token_patches.png', 'token_words.png', 'purity.png', 'usage.png']:
    assert f']({name})' in report
    with Image.open(out / name) as png:
      assert png.format == 'PNG' and min(png.size) > 100


@pytest.mark.slow
def test_activations_match_the_model_and_its_score_maps(fdt_run):
  from fdt_jax.data import shapes
  from fdt_jax.eval import tokens
  run = tokens.load_run(fdt_run)
  acts = tokens.activations(run, 'test', max_examples=20)
  _, image_weights = tokens.encode(run.model, images=acts.images)
  _, text_weights = tokens.encode(run.model, texts=acts.captions, tokenizer=run.tokenizer)
  np.testing.assert_allclose(acts.image_weights, image_weights, atol=1e-5)
  np.testing.assert_allclose(acts.text_weights, text_weights, atol=1e-5)
  maps = tokens.image_score_maps(run.model, acts.images[:3], [0, 5, 63])  # [3, 3, grid, grid]
  assert maps.shape == (3, 3, 4, 4)  # 32 px images, 8 px patches
  np.testing.assert_array_equal(maps.reshape(3, 3, 16).argmax(-1), acts.image_argmax[:3, [0, 5, 63]])
  # Words line up with the token positions, end-of-text included, and spell the caption.
  encoded = run.tokenizer.encode(acts.captions)
  lengths = np.array([len(w) for w in acts.words])
  np.testing.assert_array_equal(lengths, np.argmax(encoded, 1) + 1)
  pieces = run.tokenizer.pieces(encoded[0])
  assert pieces[-1] == '<end>'
  assert ''.join(pieces[:-1]).replace('▁', ' ').strip() == acts.captions[0].lower()
  # A caption's argmax lies on a word of that caption, never on padding.
  assert np.all(acts.text_argmax < lengths[:, None])
  assert acts.labels.shape == (20, len(shapes.CONCEPTS)) and acts.labels.any(1).all()


@pytest.mark.slow
def test_inspect_refuses_a_clip_run_in_one_line(fdt_run, tmp_path):
  # A CLIP run's workdir without training one: the FDT run's checkpoints under a config with
  # FDT off. The config alone says it is not an FDT run, before any checkpoint is read.
  config = json.loads((pathlib.Path(fdt_run) / 'config.json').read_text())
  config['model']['fdt']['enabled'] = False
  (tmp_path / 'config.json').write_text(json.dumps(config))
  (tmp_path / 'tokenizer.model').write_bytes((pathlib.Path(fdt_run) / 'tokenizer.model').read_bytes())
  (tmp_path / 'checkpoints').symlink_to(pathlib.Path(fdt_run) / 'checkpoints')
  lines = error_lines(run_inspect(f'--workdir={tmp_path}'))
  assert len(lines) == 1 and 'plain CLIP' in lines[0], lines


def test_inspect_refuses_a_directory_that_is_not_a_run(tmp_path):
  lines = error_lines(run_inspect(f'--workdir={tmp_path}'))
  assert len(lines) == 1 and 'config.json' in lines[0], lines
