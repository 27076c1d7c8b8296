"""Model families and objectives by name: a toy family with an EMA teacher and a masking
hook, and a toy objective, both registered here (not in the package), go through the
trainer, checkpoints, evaluation and resume unchanged; bad names fail in one line."""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import micro_config
from fdt_jax import evaluate as evaluate_cli
from fdt_jax.data.masking import mask_tokens
from fdt_jax.models import FAMILIES, Encoded, Family, build_model, register_family
from fdt_jax.objectives import OBJECTIVES, Objective, combine, register_objective
from fdt_jax.run import read_jsonl
from fdt_jax.train import loop
from test_train import Crash, error_line, run_main

GRID = 4  # the toy image encoder reads a GRID x GRID average of the pixels
MASK_ID = 1


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  image_size: int = 32
  context_length: int = 40
  vocab_size: int = 128
  dim: int = 16
  mask_rate: float = 0.3


def l2_normalize(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class ToyModel(nnx.Module):
  """Pixel averages -> Dense; mean of word embeddings. The student reads the masked
  caption, the teacher (EMA weights) the whole one."""

  def __init__(self, cfg: ToyConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.image_proj = nnx.Linear(GRID * GRID * 3, cfg.dim, rngs=rngs)
    self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.dim, rngs=rngs)
    self.logit_scale = nnx.Param(jnp.asarray(math.log(10.0)))

  def encode_image(self, images):
    b, size = images.shape[0], self.cfg.image_size
    pooled = images.reshape(b, GRID, size // GRID, GRID, size // GRID, 3).mean((2, 4))
    return Encoded(l2_normalize(self.image_proj(pooled.reshape(b, -1))), None)

  def encode_text(self, tokens):
    valid = (tokens > 0)[..., None]
    summed = jnp.sum(self.token_embedding(tokens) * valid, axis=1)
    return Encoded(l2_normalize(summed / jnp.maximum(valid.sum(1), 1)), None)

  def __call__(self, batch, *, teacher=False):
    tokens = batch['tokens'] if teacher else batch['masked_tokens']
    return {'image_embedding': self.encode_image(batch['images']).embedding,
            'text_embedding': self.encode_text(tokens).embedding,
            'logit_scale': self.logit_scale[...]}


def toy_prepare_batch(batch, key, cfg: ToyConfig):
  masked, mask = mask_tokens(key, batch['tokens'], cfg.mask_rate, MASK_ID)
  return {**batch, 'masked_tokens': masked, 'token_mask': mask}


def toy_distill(outputs, batch):
  """The student's text embedding of the masked caption towards the teacher's of the whole."""
  del batch
  distance = jnp.sum((outputs['text_embedding'] - outputs['teacher']['text_embedding']) ** 2, -1)
  return jnp.mean(distance), {'distance': jnp.mean(distance)}


TOY = Family(name='toy', make_config=lambda section: ToyConfig(**section),
             make_model=ToyModel, batch_fields=('images', 'tokens'),
             outputs=('image_embedding', 'text_embedding', 'logit_scale'), teacher=True,
             prepare_batch=toy_prepare_batch,
             batch_metrics=lambda outputs, batch: {
                 'toy_masked_words': jnp.mean(jnp.sum(batch['token_mask'], axis=1))})


@pytest.fixture
def toy():
  register_family(TOY)
  register_objective(Objective('toy_distill', toy_distill, needs=('text_embedding', 'teacher')))
  yield
  FAMILIES.pop('toy')
  OBJECTIVES.pop('toy_distill')


def toy_config(shapes_dir, **overrides):
  config = micro_config(shapes_dir, **overrides)
  config.model = ml_collections.ConfigDict(dict(
      name='toy', init_from='', ema_decay=0.9, image_size=32, context_length=40, vocab_size=128,
      dim=16, mask_rate=0.3))
  config.objectives = ml_collections.ConfigDict({'infonce': 1.0, 'toy_distill': 0.5})
  config.evals = ml_collections.ConfigDict(
      {'test': dict(type='retrieval', split='test', max_examples=32, every_steps=8)})
  return config


def restored_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  return step, jax.tree.map(np.asarray, state)


@pytest.mark.slow
def test_toy_family_trains_checkpoints_evaluates_and_resumes_exactly(toy, shapes_dir, tmp_path,
                                                                      monkeypatch):
  config = toy_config(shapes_dir, total_steps=12, checkpoint_every_steps=4, log_every_steps=1)
  results = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  records = read_jsonl(tmp_path / 'straight' / 'metrics.jsonl')
  train = [r for r in records if 'train/loss' in r]
  # The combined loss is the weighted sum of the objectives' own losses, each logged by name.
  for r in train:
    assert r['train/loss'] == pytest.approx(
        r['train/infonce/loss'] + 0.5 * r['train/toy_distill/loss'], rel=1e-5)
    assert r['train/toy_distill/distance'] == r['train/toy_distill/loss'] > 0  # teacher != student
  # The masking hook ran in the step: about 30% of the words (captions have ~8-20).
  masked = np.mean([r['train/toy_masked_words'] for r in train])
  assert 1 < masked < 8, masked
  # Evaluated at step 8 (its every_steps) and at the end, not at every log step.
  assert [r['step'] for r in records if 'test/rsum' in r] == [8, 12]
  assert 0 <= results['test/rsum'] <= 600

  # The teacher is an EMA of the parameters, checkpointed with them.
  step, state = restored_state(tmp_path / 'straight')
  assert step == 12 and state['ema_params'] is not None
  for p, e in zip(jax.tree.leaves(state['params']), jax.tree.leaves(state['ema_params']), strict=True):
    assert p.shape == e.shape and not np.array_equal(p, e)

  # fdt_jax.evaluate restores the same parameters and finds the same numbers.
  _, again = evaluate_cli.evaluate(config, str(tmp_path / 'straight'))
  assert again == {k: v for k, v in results.items() if k.startswith('test/')}

  # A crash after step 6 loses steps 5-6; the same command resumes at step 4 and ends
  # bit for bit where the uninterrupted run did, teacher and masks included.
  real_global_batch = loop.parallel.global_batch
  calls = {'n': 0}

  def crashing(batch, mesh):
    calls['n'] += 1
    if calls['n'] == 7:
      raise Crash()
    return real_global_batch(batch, mesh)

  monkeypatch.setattr(loop.parallel, 'global_batch', crashing)
  with pytest.raises(Crash):
    loop.train_and_evaluate(config, str(tmp_path / 'crashed'))
  monkeypatch.setattr(loop.parallel, 'global_batch', real_global_batch)
  assert restored_state(tmp_path / 'crashed')[0] == 4
  loop.train_and_evaluate(config, str(tmp_path / 'crashed'))
  _, resumed = restored_state(tmp_path / 'crashed')
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ema_teacher_starts_at_the_parameters_and_follows_them(toy, shapes_dir, tmp_path):
  config = toy_config(shapes_dir, total_steps=1, checkpoint_every_steps=1)
  config.evals = {}
  loop.train_and_evaluate(config, str(tmp_path))
  _, state = restored_state(tmp_path)
  initial = nnx.state(build_model(config.model, config.seed), nnx.Param)
  d = config.model.ema_decay
  for p0, p1, e1 in zip(jax.tree.leaves(initial), jax.tree.leaves(state['params']),
                        jax.tree.leaves(state['ema_params']), strict=True):
    np.testing.assert_allclose(e1, d * np.asarray(p0) + (1 - d) * p1, rtol=1e-6, atol=1e-7)


def test_combine_weights_the_losses_and_prefixes_the_metrics(toy):
  outputs = {'text_embedding': jnp.asarray([[1.0, 0.0], [0.0, 1.0]]),
             'teacher': {'text_embedding': jnp.asarray([[0.0, 0.0], [0.0, 0.0]])}}
  loss, metrics = combine({'toy_distill': 3.0})(outputs, {})
  assert float(loss) == 3.0  # mean squared distance 1, weighted 3
  assert set(metrics) == {'toy_distill/distance', 'toy_distill/loss', 'loss'}
  assert float(metrics['toy_distill/loss']) == 1.0 and float(metrics['loss']) == 3.0


def test_objectives_are_checked_against_the_family_before_anything_runs(toy, shapes_dir, tmp_path):
  config = micro_config(shapes_dir)
  config.objectives = {'infonce': 1.0, 'toy_distill': 1.0}  # clip keeps no teacher
  with pytest.raises(ValueError, match="objective 'toy_distill' needs teacher but model family 'clip'"):
    loop.train_and_evaluate(config, str(tmp_path))
  config.objectives = {'infonse': 1.0}
  with pytest.raises(ValueError, match=r"unknown objective 'infonse' .*use one of .*infonce.*toy_distill"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before the workdir was touched


def test_unknown_model_family_is_one_line_listing_the_families(tmp_path):
  result = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.model.name=nope')
  assert error_line(result) == ("error: unknown model family 'nope' (config.model.name): "
                                'use one of clip, mamo, mvptr')
