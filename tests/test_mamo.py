"""The 'mamo' family: joint masking, the EMA teacher, each loss against a direct
computation, and a run through the trainer that resumes exactly with its teacher."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import fake_images_and_tokens, micro_family_config
from fdt_jax.models import build_model, model_config
from fdt_jax.models.mamo import prepare_batch
from fdt_jax.objectives import combine, mamo as losses
from fdt_jax.train import loop
from fdt_jax.train.step import train_step


def mamo_config(shapes_dir, **overrides):
  """configs/tiny.py:mamo on the micro towers and the small shapes data."""
  return micro_family_config(shapes_dir, 'mamo', dict(fusion_layers=1), **overrides)


def fake_batch(cfg, size=8, seed=0):
  _, images, tokens = fake_images_and_tokens(cfg, size, seed)
  return {'images': jnp.asarray(images), 'tokens': jnp.asarray(tokens)}


def test_joint_masks_have_the_configured_ratios_and_cover_words_only(shapes_dir):
  cfg = model_config(mamo_config(shapes_dir).model)
  batch = fake_batch(cfg, size=512)
  out = prepare_batch(batch, jax.random.key(3), cfg)
  patches, words = np.asarray(out['patch_mask']), np.asarray(out['word_mask'])
  assert patches.shape == (512, (cfg.vision.image_size // cfg.vision.patch_size) ** 2)
  assert abs(patches.mean() - 0.75) < 0.02
  tokens = np.asarray(batch['tokens'])
  is_word = (tokens > 0) & (tokens < cfg.vocab_size - 1)
  assert not words[~is_word].any()  # never end-of-text or padding
  assert abs(words[is_word].mean() - 0.25) < 0.02
  again = prepare_batch(batch, jax.random.key(3), cfg)  # the step's key decides: resume repeats it
  assert (np.asarray(again['patch_mask']) == patches).all()
  other = prepare_batch(batch, jax.random.key(4), cfg)
  assert (np.asarray(other['patch_mask']) != patches).any()


def test_each_loss_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  n, length, vocab, width = 4, 6, 11, 5
  log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
  standardize = lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)

  itm_logits = rng.normal(size=(3 * n, 2)).astype(np.float32)
  labels = [1] * n + [0] * (2 * n)
  loss, _ = losses.itm({'itm_logits': itm_logits}, {})
  np.testing.assert_allclose(float(loss), np.mean([-log_softmax(l)[y] for l, y in zip(itm_logits, labels)]),
                             rtol=1e-6)

  logits = rng.normal(size=(n, length, vocab)).astype(np.float32)
  tokens = rng.integers(0, vocab, (n, length))
  mask = rng.random((n, length)) < 0.4
  loss, _ = losses.mlm({'mlm_logits': logits}, {'tokens': tokens, 'word_mask': mask})
  expected = np.mean([-log_softmax(logits[b, t])[tokens[b, t]] for b, t in zip(*np.nonzero(mask))])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)

  prediction = rng.normal(size=(n, length, width)).astype(np.float32)
  target = rng.normal(size=(n, length, width)).astype(np.float32) * 3 + 1
  expected = np.mean([np.mean((prediction[b, t] - standardize(target[b, t])) ** 2)
                      for b, t in zip(*np.nonzero(mask))])
  loss, _ = losses.implicit_target({'implicit_prediction': prediction, 'teacher': {'fused': target}},
                                   {'word_mask': mask})
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  loss, _ = losses.patch_target(
      {'patch_prediction': prediction, 'teacher': {'patch_features': target}}, {'patch_mask': mask})
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

  # With the image stream: the mean of the words' loss and the patches' (other positions).
  patches, patch_targets = rng.normal(size=(n, 9, width)), rng.normal(size=(n, 9, width)) * 2 - 1
  patch_mask = rng.random((n, 9)) < 0.75
  expected_patches = np.mean([np.mean((patches[b, p] - standardize(patch_targets[b, p])) ** 2)
                              for b, p in zip(*np.nonzero(patch_mask))])
  loss, parts = losses.implicit_target(
      {'implicit_prediction': prediction, 'implicit_image_prediction': patches,
       'teacher': {'fused': target, 'fused_patches': patch_targets}},
      {'word_mask': mask, 'patch_mask': patch_mask})
  np.testing.assert_allclose(float(parts['patches']), expected_patches, rtol=1e-5)
  np.testing.assert_allclose(float(loss), (expected + expected_patches) / 2, rtol=1e-5)


@pytest.mark.slow  # compiles the whole MAMO step: over a minute on 2 busy cores
def test_the_teacher_follows_the_ema_formula_and_gets_no_gradient(shapes_dir):
  config = mamo_config(shapes_dir)
  cfg = model_config(config.model)
  model = build_model(config.model, 0)
  graphdef, params = nnx.split(model, nnx.Param)
  teacher_params = jax.tree.map(lambda x: x * 0.5, params)  # a teacher unlike the student
  batch = prepare_batch(fake_batch(cfg), jax.random.key(0), cfg)
  objective = combine(dict(config.objectives))

  def loss_of_teacher(teacher):
    outputs = nnx.merge(graphdef, params)(batch)
    teacher_outputs = jax.lax.stop_gradient(nnx.merge(graphdef, teacher)(batch, teacher=True))
    return objective({**outputs, 'teacher': teacher_outputs}, batch)[0]

  grads = jax.jit(jax.grad(loss_of_teacher))(teacher_params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  # ... while the targets do depend on it (the regression losses change with the teacher).
  loss = jax.jit(loss_of_teacher)
  assert float(loss(teacher_params)) != float(loss(params))

  from fdt_jax.train.state import TrainState
  tx = optax.adamw(1e-3)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     ema_params=teacher_params)
  decay = 0.9
  new_state, _ = jax.jit(lambda s, b: train_step(
      s, b, graphdef=graphdef, tx=tx, objective=objective, schedule=lambda step: 1e-3,
      prepare_batch=prepare_batch, model_cfg=cfg, ema_decay=decay))(state, fake_batch(cfg))
  for ema, old, new in zip(jax.tree.leaves(new_state.ema_params), jax.tree.leaves(teacher_params),
                           jax.tree.leaves(new_state.params)):
    np.testing.assert_allclose(ema, decay * old + (1 - decay) * new, rtol=1e-6, atol=1e-7)


def saved_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return jax.tree.map(np.asarray, restored['state'])


@pytest.mark.slow
def test_mamo_trains_through_the_trainer_and_resumes_exactly_with_its_teacher(
    shapes_dir, tmp_path, monkeypatch):
  from fdt_jax.run import Checkpointer
  config = mamo_config(shapes_dir, total_steps=6, checkpoint_every_steps=6, log_every_steps=1)
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  with monkeypatch.context() as patch:  # stopped (and saved) at step 3, then rerun
    patch.setattr(Checkpointer, 'reached_preemption', lambda self, step: step == 3)
    with pytest.raises(loop.Preempted):
      loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  straight, resumed = saved_state(tmp_path / 'straight'), saved_state(tmp_path / 'resumed')
  for a, b in zip(jax.tree.leaves(straight['params']), jax.tree.leaves(resumed['params']), strict=True):
    np.testing.assert_array_equal(a, b)
  teacher = jax.tree.leaves(resumed['ema_params'])
  assert teacher and not all((a == b).all() for a, b in zip(teacher, jax.tree.leaves(resumed['params'])))
  for a, b in zip(jax.tree.leaves(straight['ema_params']), teacher, strict=True):
    np.testing.assert_array_equal(a, b)
  # python -m fdt_jax.export writes the student (its parity: tests/test_export_mamo.py).
  from fdt_jax.export.__main__ import export_run
  from fdt_jax.formats.exported import MAMO_WEIGHTS
  from safetensors.numpy import load_file
  assert export_run(str(tmp_path / 'resumed'), str(tmp_path / 'exported')) == 6
  np.testing.assert_array_equal(load_file(str(tmp_path / 'exported' / MAMO_WEIGHTS))['word_mask_embedding'],
                                resumed['params']['word_mask_embedding']['value'])


@pytest.mark.slow
def test_the_masked_words_evaluator_matches_a_direct_computation(shapes_dir):
  """On a 12-example split in one padded batch of 16: the evaluator's accuracies equal the
  model's own predictions counted here; the last example (paired with padding) is left out."""
  from fdt_jax import parallel
  from fdt_jax.data.sources import build_data
  from fdt_jax.eval import build_evaluators
  from fdt_jax.eval.fusion import fixed_word_mask
  from fdt_jax.data.pipeline import caption_text, resize_center_crop
  from fdt_jax.data.transforms import normalize_images
  config = mamo_config(shapes_dir)
  config.eval_batch_size = 16
  config.evals = {'fusion': dict(type='masked_words', split='test', max_examples=12)}
  cfg = model_config(config.model)
  data = build_data(config, cfg)
  model = build_model(config.model, 0)
  graphdef, params = nnx.split(model, nnx.Param)
  mesh = parallel.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    evaluator = build_evaluators(config, data, graphdef, mesh, jax.tree.map(lambda x: x.sharding, params))['fusion']
    got = evaluator.run(params)

  source = data.split('test')
  images = normalize_images(jnp.asarray(np.stack([resize_center_crop(source[i]['image'], cfg.image_size)
                                                  for i in range(12)])))
  tokens = jnp.asarray(data.tokenizer.encode([caption_text(source[i]['captions'][0]) for i in range(12)]))
  mask = np.asarray(fixed_word_mask(tokens))
  itm_true, mlm_true = model.match_and_fill(images, tokens, fixed_word_mask(tokens))
  itm_other, mlm_other = model.match_and_fill(jnp.roll(images, -1, 0), tokens, fixed_word_mask(tokens))
  keep = np.arange(12) < 11
  right = lambda logits: (np.argmax(np.asarray(logits), -1) == np.asarray(tokens)) & mask
  masked = mask[keep].sum()
  np.testing.assert_allclose(got['masked_word_accuracy'], 100 * right(mlm_true)[keep].sum() / masked, atol=1e-4)
  np.testing.assert_allclose(got['masked_word_accuracy_other_image'],
                             100 * right(mlm_other)[keep].sum() / masked, atol=1e-4)
  itm = (np.argmax(np.asarray(itm_true), -1) == 1)[keep].sum() + (np.argmax(np.asarray(itm_other), -1) == 0)[keep].sum()
  np.testing.assert_allclose(got['itm_accuracy'], 50 * itm / 11, atol=1e-4)


@pytest.mark.slow
def test_itm_reranked_retrieval_matches_a_direct_computation(shapes_dir):
  from test_eval import check_itm_reranked_retrieval
  check_itm_reranked_retrieval(mamo_config(shapes_dir))
