"""The 'mvptr' family: its masks, each registered loss against a direct computation, the
pointing game on a hand-made case, and a run through the trainer that resumes exactly and
evaluates with the concept evaluators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import fake_images_and_tokens, load_config, micro_family_config
from fdt_jax.data import concepts
from fdt_jax.models import build_model, model_config
from fdt_jax.models import mvptr as family
from fdt_jax.objectives import get_objective
from test_mamo import saved_state


def mvptr_config(shapes_dir, **overrides):
  """configs/tiny.py:mvptr on the micro towers and the small shapes data."""
  return micro_family_config(shapes_dir, 'mvptr', dict(visual_layers=1, fusion_layers=1),
                             **overrides)


def fake_batch(cfg, size=8, seed=0):
  rng, images, tokens = fake_images_and_tokens(cfg, size, seed)
  concept = lambda n, fill: np.where(rng.random((size, n)) < fill,
                                     rng.integers(concepts.FIRST_ID, concepts.VOCAB_SIZE, (size, n)), 0)
  return {'images': jnp.asarray(images), 'tokens': jnp.asarray(tokens),
          'phrases': jnp.asarray(concept(concepts.MAX_PHRASES, 0.8)),
          'tags': jnp.asarray(concept(concepts.MAX_TAGS, 0.6))}


def test_the_family_and_the_data_agree_on_the_concept_ids(shapes_dir):
  assert (family.CONCEPT_PAD, family.CONCEPT_MASK) == (concepts.PAD_ID, concepts.MASK_ID)
  cfg = model_config(load_config('configs/tiny.py', 'mvptr').model)
  assert cfg.num_concepts == concepts.VOCAB_SIZE and cfg.max_phrases == concepts.MAX_PHRASES


@pytest.mark.parametrize('path', ['configs/tiny.py', 'configs/vitb16.py'])
def test_the_mvptr_configs_name_known_pieces_and_the_b16_size_is_as_documented(path):
  from fdt_jax.eval import EVALUATORS
  from fdt_jax.models import count_params, get_family
  from fdt_jax.objectives import check_objectives
  config = load_config(path, 'mvptr')
  check_objectives(config.objectives, get_family(config.model.name))
  assert all(e.type in EVALUATORS for e in config.evals.values()) and config.data.concepts
  if path == 'configs/vitb16.py':  # its docstring: 404M parameters, 94M in the shared table
    model = nnx.eval_shape(lambda: build_model(config.model, 0))
    assert round(count_params(nnx.state(model, nnx.Param)) / 1e6) == 404
    assert round(count_params(nnx.state(model.embedding, nnx.Param)) / 1e6) == 94


def test_masks_have_the_authors_ratios_and_touch_only_what_is_present(shapes_dir):
  config = mvptr_config(shapes_dir)
  config.model.concept_dropout = 0.3
  cfg = model_config(config.model)
  batch = fake_batch(cfg, size=2048)
  out = jax.tree.map(np.asarray, family.prepare_batch(batch, jax.random.key(3), cfg))
  tokens, tags, phrases = (np.asarray(batch[k]) for k in ('tokens', 'tags', 'phrases'))
  is_word = (tokens > 0) & (tokens < cfg.vocab_size - 1)
  assert not out['word_mask'][~is_word].any() and abs(out['word_mask'][is_word].mean() - 0.15) < 0.01
  # Withheld: about 30 % of the examples lose all their tags, apart from their phrases.
  withheld_tags = ~out['tag_valid'].any(-1) & (tags > 0).any(-1)
  withheld_phrases = ~out['phrase_valid'].any(-1) & (phrases > 0).any(-1)
  assert abs(withheld_tags.mean() - 0.3) < 0.04 and abs(withheld_phrases.mean() - 0.3) < 0.04
  assert (withheld_tags != withheld_phrases).any()
  assert (out['tag_valid'] == ((tags > 0) & ~withheld_tags[:, None])).all()
  assert not out['tag_mask'][~out['tag_valid']].any()
  assert abs(out['tag_mask'][out['tag_valid']].mean() - 0.15) < 0.02
  assert not out['phrase_mask'][~out['phrase_valid']].any()
  assert abs(out['phrase_mask'][out['phrase_valid']].mean() - 0.15) < 0.03  # no spans given
  assert (out['grounded_phrases'] == out['phrase_valid'] & ~out['phrase_mask']).all()
  assert (out['wpg_negative'] != np.arange(2048)).all()
  assert set(out['wpg_choice'].ravel()) == {0, 1, 2}
  again = family.prepare_batch(batch, jax.random.key(3), cfg)  # the step's key decides
  assert (np.asarray(again['word_mask']) == out['word_mask']).all()
  assert (np.asarray(again['wpg_choice']) == out['wpg_choice']).all()


def test_a_phrase_holding_a_masked_word_is_masked_whole(shapes_dir):
  config = mvptr_config(shapes_dir)
  config.model.concept_dropout = 0.0
  cfg = model_config(config.model)
  batch = fake_batch(cfg, size=512)
  spans = np.zeros((512, concepts.MAX_PHRASES, 2), np.int32)
  spans[:, 0] = (0, 3)  # phrase 0 spans words 0-2 (every caption has >= 3 words)
  batch['phrase_spans'] = jnp.asarray(spans)
  out = jax.tree.map(np.asarray, family.prepare_batch(batch, jax.random.key(0), cfg))
  holds = out['word_mask'][:, :3].any(-1) & out['phrase_valid'][:, 0]
  assert holds.sum() > 100 and out['phrase_mask'][holds, 0].all()
  free = ~out['word_mask'][:, :3].any(-1) & out['phrase_valid'][:, 0]
  assert 0.05 < out['phrase_mask'][free, 0].mean() < 0.3  # the others at 15 %


def log_softmax(x):
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_itm_with_hardest_negatives_is_the_cross_entropy_of_pairs_and_negatives():
  logits = np.random.default_rng(0).normal(size=(5, 2, 2)).astype(np.float32)
  loss, metrics = get_objective('itm_hardest').fn({'match_logits': logits}, {})
  expected = np.mean([-log_softmax(logits[b, k])[1 - k] for b in range(5) for k in range(2)])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  right = [np.argmax(logits[b, k]) == 1 - k for b in range(5) for k in range(2)]
  np.testing.assert_allclose(float(metrics['accuracy']), np.mean(right))


def test_mcr_and_wpg_read_the_family_outputs_and_the_prepared_batch():
  rng = np.random.default_rng(1)
  batch_size, num_tags, num_concepts = 3, 4, 9
  logits = rng.normal(size=(batch_size, num_tags, num_concepts)).astype(np.float32)
  tags = rng.integers(2, num_concepts, (batch_size, num_tags))
  tag_mask = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]], bool)
  loss, _ = get_objective('mcr').fn({'mcr_logits': logits}, {'tags': tags, 'tag_mask': tag_mask})
  expected = np.mean([-log_softmax(logits[b, t])[tags[b, t]] for b, t in zip(*np.nonzero(tag_mask))])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)

  phrases = rng.normal(size=(batch_size, 2, 6)).astype(np.float32)
  patches = rng.normal(size=(batch_size, 5, 6)).astype(np.float32)
  grounded = np.array([[True, True], [True, False], [False, False]])
  choice = rng.integers(0, 3, (batch_size, 2, 2))
  negative = np.array([2, 0, 1])

  def score(b, image, which):
    picked = []
    for p in np.nonzero(grounded[b])[0]:
      v = phrases[b, p] / np.linalg.norm(phrases[b, p])
      cosines = sorted((v @ r / np.linalg.norm(r) for r in patches[image]), reverse=True)
      picked.append(cosines[choice[b, which, p]])
    return np.mean(picked)

  hinges = [max(0.0, 0.2 + score(b, negative[b], 1) - score(b, b, 0)) for b in (0, 1)]
  loss, _ = get_objective('wpg').fn(
      {'phrase_features': phrases, 'patch_features': patches},
      {'grounded_phrases': grounded, 'wpg_negative': negative, 'wpg_choice': choice})
  np.testing.assert_allclose(float(loss), np.mean(hinges), atol=1e-6)


@pytest.mark.slow  # eager forward passes of the micro model: ~30 s on 2 busy cores
def test_the_model_pairs_each_example_with_its_hardest_negative(shapes_dir):
  """match_logits[:, 1] is the ITM head on the hardest other image (first half of the batch)
  or the hardest other text (second half), recomputed here from the model's own parts."""
  config = mvptr_config(shapes_dir)
  cfg = model_config(config.model)
  model = build_model(config.model, 0)
  batch = family.prepare_batch(fake_batch(cfg, size=6), jax.random.key(0), cfg)
  out = model(batch)
  similarity = np.array(out['text_embedding'] @ out['image_embedding'].T)
  np.fill_diagonal(similarity, -np.inf)
  vocab, tokens = cfg.vocab_size, batch['tokens']
  tags_in = jnp.where(batch['tag_mask'], 1, batch['tags']) + vocab
  _, _, patches = model.encode_visual(batch['images'], tags_in, batch['tag_valid'])
  words = jnp.where(batch['word_mask'], 1 + vocab, tokens)
  ids = family.text_ids(words, jnp.where(batch['phrase_mask'], 1, batch['phrases']), vocab)
  valid = jnp.concatenate([jnp.arange(40) <= np.argmax(np.asarray(tokens), -1)[:, None],
                           batch['phrase_valid']], 1)
  text = model.encode_words(ids, valid)
  eot = np.argmax(np.asarray(tokens), -1)
  for b in range(6):
    t, i = (b, np.argmax(similarity[b])) if b < 3 else (np.argmax(similarity[:, b]), b)
    fused, _ = model.fuse(text[t:t + 1], valid[t:t + 1], patches[i:i + 1])
    np.testing.assert_allclose(out['match_logits'][b, 1], model.itm_head(fused[0, eot[t]]),
                               atol=1e-5)


class PointAtTheBrightestPatch(nnx.Module):
  """A hand-made 'model' for the pointing game: every phrase's cosines are the patches'
  brightness, so its best patch is where the image is bright."""

  def __init__(self, patch_size):
    self.patch_size = patch_size

  def ground(self, images, tokens, phrases):
    size, side = images.shape[0], images.shape[1] // self.patch_size
    patches = images.mean(-1).reshape(size, side, self.patch_size, side, self.patch_size)
    brightness = patches.mean((2, 4)).reshape(size, 1, side * side)
    return jnp.broadcast_to(brightness, (size, phrases.shape[1], side * side))


def shapes_record(objects, relation, caption, bright_cell):
  """A record as the shapes TFDS source gives it; the image is dark but for one bright cell
  of its 3x3 grid (24 px: one 8 px patch per cell)."""
  from fdt_jax.data import shapes
  image = np.zeros((24, 24, 3), np.uint8)
  row, column = divmod(bright_cell, 3)
  image[8 * row:8 * row + 8, 8 * column:8 * column + 8] = 255
  return {'image': image, 'captions': [caption.encode()], 'relation': shapes.RELATIONS.index(relation),
          'objects': {'colour': [concepts.COLOUR_NAMES.index(o[0]) for o in objects],
                      'shape': [shapes.SHAPES.index(o[1]) for o in objects],
                      'size': [shapes.SIZES.index(o[2]) for o in objects],
                      'position': [shapes.POSITIONS.index(o[3]) for o in objects]}}


def test_each_shapes_concept_has_its_kind_in_the_vocabulary_order():
  """data/concepts.py lists 6 shapes, then 48 colour-shape, 12 size-shape and 144 relation
  concepts, from id 2."""
  from fdt_jax.eval.concepts import TAG_KINDS, tag_kinds
  want = np.repeat([-1, 0, 1, 2, 3], [2, 6, 48, 12, 144])
  np.testing.assert_array_equal(tag_kinds(), want)
  assert TAG_KINDS[tag_kinds()[concepts.CONCEPT_IDS['small star']]] == 'size_shape'


@pytest.mark.slow  # compiles two MVPTR micro models' forward passes: ~40 s
def test_vsc_through_the_fdt_head_grounds_the_patch_and_word_outputs(shapes_dir):
  """configs/tiny.py:mvptr_fdt: the VSC embeddings are FDT's, normalize(sparsemax(max over
  positions of <q_i, F_c> / sqrt(d) / T) @ F), over the visual encoder's patch outputs and
  the text encoder's word outputs up to end-of-text, recomputed here in NumPy with optax's
  simplex projection as sparsemax; the step logs FDT's health; inspect's features agree."""
  import optax
  from fdt_jax.models.clip import fdt_health
  config = micro_family_config(shapes_dir, 'mvptr_fdt', dict(visual_layers=1, fusion_layers=1))
  config.model.fdt.update(num_tokens=32, dim=16, temperature=0.5)  # a sparse support here
  cfg = model_config(config.model)
  model = build_model(config.model, 0)
  assert model.fdt is not None and not hasattr(model, 'text_projection')
  batch = family.prepare_batch(fake_batch(cfg), jax.random.key(1), cfg)
  out = model(batch)
  assert {'image_fdt_weights', 'text_fdt_weights'} <= out.keys()

  def fdt_embedding(query, features, valid):
    q = np.asarray(query(features), np.float64)  # [batch, positions, dim]
    table = np.asarray(model.fdt.fdt_tokens[...], np.float64)
    scores = np.where(valid[..., None], q @ table.T / np.sqrt(16) / 0.5, -np.inf).max(1)
    weights = np.asarray(jax.vmap(optax.projections.projection_simplex)(jnp.asarray(scores, jnp.float32)))
    e = weights @ table
    return e / np.linalg.norm(e, axis=-1, keepdims=True), weights

  tags_in = jnp.where(batch['tag_mask'], 1, batch['tags']) + cfg.vocab_size
  _, _, patches = model.encode_visual(batch['images'], tags_in, batch['tag_valid'])
  want, weights = fdt_embedding(model.fdt.query_image, patches, np.ones(patches.shape[:2], bool))
  np.testing.assert_allclose(out['image_embedding'], want, atol=2e-5)
  assert 1 < np.mean(np.sum(weights > 0, -1)) < 32  # sparse, not one-hot
  words_in = jnp.where(batch['word_mask'], 1 + cfg.vocab_size, batch['tokens'])
  phrases_in = jnp.where(batch['phrase_mask'], 1, batch['phrases'])
  text, _ = model._text(batch['tokens'], batch['phrases'], batch['phrase_valid'],
                        ids=family.text_ids(words_in, phrases_in, cfg.vocab_size))
  length = batch['tokens'].shape[1]
  valid = np.arange(length) <= np.argmax(np.asarray(batch['tokens']) == cfg.vocab_size - 1, 1)[:, None]
  want, _ = fdt_embedding(model.fdt.query_text, text[:, :length], valid)
  np.testing.assert_allclose(out['text_embedding'], want, atol=2e-5)
  metrics = family.batch_metrics(out, batch)
  np.testing.assert_allclose(metrics['fdt/agreement'],
                             fdt_health(out['image_fdt_weights'], out['text_fdt_weights'])['fdt/agreement'])
  # Images and captions alone (the evaluators' and fdt_jax.inspect's path): no tags, no phrases.
  alone = model.encode_image(batch['images'])
  features = model.fdt_image_features(batch['images'])
  np.testing.assert_allclose(alone.embedding, fdt_embedding(
      model.fdt.query_image, features, np.ones(features.shape[:2], bool))[0], atol=2e-5)
  features, valid = model.fdt_text_features(batch['tokens'])
  np.testing.assert_allclose(model.encode_text(batch['tokens']).embedding,
                             fdt_embedding(model.fdt.query_text, features, np.asarray(valid))[0], atol=2e-5)


def test_the_pointing_game_on_a_hand_made_case():
  import types
  from fdt_jax import parallel
  from fdt_jax.eval.concepts import PointingGameEvaluator, patch_cells
  assert list(patch_cells(24, 8)) == list(range(9))
  assert list(patch_cells(64, 8)) == [0, 0, 0, 1, 1, 2, 2, 2] * 3 + [3, 3, 3, 4, 4, 5, 5, 5] * 2 + [
      6, 6, 6, 7, 7, 8, 8, 8] * 3  # a patch counts in the cell of its centre
  records = [
      # Phrases circle, red circle, small circle (at cell 0: hits), star, blue star (cell 5:
      # misses); the relation is the 7th concept, past the 5 kept.
      shapes_record([('red', 'circle', 'small', 'top_left'), ('blue', 'star', 'large', 'right')],
                    'left_of', 'a small red circle to the left of a large blue star.', 0),
      # square, green square, large square: 3 hits.
      shapes_record([('green', 'square', 'large', 'center')], 'none', 'a large green square.', 4),
      # 'circle' names both circles (cells 1 and 7: a hit, chance 2/9), 'red circle' misses,
      # 'blue circle' hits; the relation phrase is not scored.
      shapes_record([('red', 'circle', 'small', 'top'), ('blue', 'circle', 'small', 'bottom')],
                    'above', 'a red circle above a blue circle.', 7),
  ]
  toy = PointAtTheBrightestPatch(8)
  graphdef, params = nnx.split(toy, nnx.Param)
  mesh = parallel.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  embedder = types.SimpleNamespace(mesh=mesh, batch_size=8, num_workers=0, graphdef=graphdef)
  tokenizer = types.SimpleNamespace(encode=lambda texts: np.ones((len(texts), 4), np.int32))
  with jax.set_mesh(mesh):
    evaluator = PointingGameEvaluator(records, tokenizer=tokenizer, image_size=24,
                                      embedder=embedder, patch_size=8)
    got = evaluator.run(params)
  assert got['phrases'] == 5 + 3 + 3
  np.testing.assert_allclose(got['pointing_accuracy'], 100 * 8 / 11, atol=1e-4)
  np.testing.assert_allclose(got['chance'], 100 * (5 / 9 + 3 / 9 + 4 / 9) / 11, atol=1e-4)
  # Every best patch (cells 0, 4, 7) holds an object; objects fill 2, 1 and 2 of 9 cells.
  np.testing.assert_allclose(got['best_in_any_object'], 100, atol=1e-4)
  np.testing.assert_allclose(got['best_in_any_object_chance'], 100 * (5 * 2 + 3 * 1 + 3 * 2) / 9 / 11,
                             atol=1e-4)
  np.testing.assert_allclose(got['top_patch_share'], 100 * 5 / 11, atol=1e-4)  # patch 0, image 0


@pytest.mark.slow  # compiles the whole MVPTR step twice and the evaluators: about a minute
def test_mvptr_trains_resumes_exactly_and_evaluates_its_concepts(shapes_dir, tmp_path, monkeypatch):
  from fdt_jax import evaluate as evaluate_cli
  from fdt_jax.run import Checkpointer
  from fdt_jax.train import loop
  config = mvptr_config(shapes_dir, total_steps=6, checkpoint_every_steps=6, log_every_steps=1)
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  with monkeypatch.context() as patch:  # stopped (and saved) at step 3, then rerun
    patch.setattr(Checkpointer, 'reached_preemption', lambda self, step: step == 3)
    with pytest.raises(loop.Preempted):
      loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  straight, resumed = saved_state(tmp_path / 'straight'), saved_state(tmp_path / 'resumed')
  for a, b in zip(jax.tree.leaves(straight['params']), jax.tree.leaves(resumed['params']), strict=True):
    np.testing.assert_array_equal(a, b)

  config.evals = {'concepts': dict(type='concept_recovery', split='test', max_examples=24),
                  'pointing': dict(type='pointing_game', split='test', max_examples=24),
                  'test': dict(type='retrieval', split='test', max_examples=24)}
  step, results = evaluate_cli.evaluate(config, str(tmp_path / 'resumed'))
  printed = evaluate_cli.table(step, results)
  for key in ('concepts/tag_accuracy', 'concepts/image_gain', 'pointing/pointing_accuracy',
              'pointing/chance', 'test/rsum'):
    assert key in printed
  assert step == 6 and 0 <= results['concepts/tag_accuracy'] <= 100
  assert results['pointing/phrases'] > 24 and 0 < results['pointing/chance'] < 50
  # python -m fdt_jax.export writes it (its parity: tests/test_export_mvptr.py).
  from fdt_jax.export.__main__ import export_run
  from fdt_jax.formats.exported import MVPTR_WEIGHTS
  from safetensors.numpy import load_file
  assert export_run(str(tmp_path / 'resumed'), str(tmp_path / 'exported')) == 6
  np.testing.assert_array_equal(load_file(str(tmp_path / 'exported' / MVPTR_WEIGHTS))['visual_class'],
                                resumed['params']['visual_class']['value'])


@pytest.mark.slow
def test_the_concept_recovery_evaluator_matches_a_direct_computation(shapes_dir):
  """On a 12-example split in one padded batch of 16: every tag masked once (1 in 7 per
  pass), counted here from the model's own predictions; the comparison with the next image
  leaves out the last example (paired with padding)."""
  from fdt_jax import parallel
  from fdt_jax.data.pipeline import caption_text, resize_center_crop
  from fdt_jax.data.sources import build_data
  from fdt_jax.data.transforms import normalize_images
  from fdt_jax.data import shapes
  from fdt_jax.eval import build_evaluators, token_stats
  config = mvptr_config(shapes_dir)
  config.eval_batch_size = 16
  config.evals = {'concepts': dict(type='concept_recovery', split='test', max_examples=12)}
  cfg = model_config(config.model)
  data = build_data(config, cfg)
  model = build_model(config.model, 0)
  graphdef, params = nnx.split(model, nnx.Param)
  mesh = parallel.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    evaluator = build_evaluators(config, data, graphdef, mesh,
                                 jax.tree.map(lambda x: x.sharding, params))['concepts']
    got = evaluator.run(params)

  source = data.split('test')
  records = [source[i] for i in range(12)]
  images = normalize_images(jnp.asarray(np.stack([resize_center_crop(r['image'], cfg.image_size)
                                                  for r in records])))
  tags = np.stack([concepts.example_concepts(r, caption_text(r['captions'][0]))['tags'] for r in records])
  # The kind of a tag by its id: 6 shapes, 48 colour-shape, 12 size-shape, 144 relations.
  kind = np.searchsorted([8, 56, 68], tags, side='right')
  right = {'true': np.zeros(4), 'other': np.zeros(4)}
  weights = {'true': 0, 'other': 0}
  for offset in range(7):  # pass k masks tag slots k, k + 7, k + 14
    mask = np.zeros_like(tags, bool)
    mask[:, offset::7] = True
    mask &= tags > 0
    for key, pixels in (('true', images), ('other', jnp.roll(images, -1, 0))):
      logits = np.asarray(model.recover_concepts(pixels, jnp.asarray(tags), jnp.asarray(mask)), np.float64)
      hits = (np.argmax(logits, -1) == tags) & mask
      hits = hits if key == 'true' else hits[:11]
      right[key] += [hits[kind[:len(hits)] == k].sum() for k in range(4)]
      probs = np.exp(logits - logits.max(-1, keepdims=True))
      weights[key] += np.einsum('bt,btv->bv', mask, probs / probs.sum(-1, keepdims=True))
  present = tags > 0
  count = {'true': [np.sum(present & (kind == k)) for k in range(4)],
           'other': [np.sum(present[:11] & (kind[:11] == k)) for k in range(4)]}
  for key, suffix in (('true', ''), ('other', '_other_image')):
    np.testing.assert_allclose(got['tag_accuracy' + suffix],
                               100 * right[key].sum() / np.sum(count[key]), atol=1e-4)
    for k, name in enumerate(('shape', 'colour_shape', 'size_shape', 'relation')):
      np.testing.assert_allclose(got[f'tag_accuracy_{name}{suffix}'],
                                 100 * right[key][k] / max(count[key][k], 1), atol=1e-4)
  # Purity of the recovered concepts: the same numbers as FDT tokens' from these weights.
  labels = token_stats.concept_labels(records, shapes.CONCEPTS)
  for key, suffix, rows in (('true', '', 12), ('other', '_other_image', 11)):
    want = token_stats.purities(weights[key][:rows], labels[:rows], token_stats.concept_types())
    assert want.keys() >= {'', '_chance', '_colour', '_relation_chance'}
    for name, value in want.items():
      np.testing.assert_allclose(got[f'purity{name}{suffix}'], value, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_itm_reranked_retrieval_matches_a_direct_computation(shapes_dir):
  from test_eval import check_itm_reranked_retrieval
  check_itm_reranked_retrieval(mvptr_config(shapes_dir))
