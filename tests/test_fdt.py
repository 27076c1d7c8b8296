"""The FDT head: the paper's equations, checked against a NumPy reading of them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from fdt_jax.models import build_model, clip_config
from fdt_jax.models.fdt import FDT, FDTConfig

WIDTH_IMAGE, WIDTH_TEXT = 24, 16


def make_head(**fdt):
  cfg = FDTConfig(**{'num_tokens': 96, 'dim': 8, 'temperature': 0.05, **fdt})
  with nnx.use_eager_sharding(False):
    return FDT(cfg, WIDTH_IMAGE, WIDTH_TEXT, dtype=jnp.float32, rngs=nnx.Rngs(0))


def features(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def numpy_fdt(head, x, valid, normalizer_fn, pooling):
  """The equations in fdt_jax/models/fdt.py's docstring (Chen et al., 2023, section 3),
  position by position, in NumPy."""
  q = np.asarray(head.query_text(x) if x.shape[-1] == WIDTH_TEXT else head.query_image(x))
  table = np.asarray(head.fdt_tokens[...])
  scores = q @ table.T / np.sqrt(head.cfg.dim) / head.cfg.temperature  # [batch, positions, tokens]
  out_e, out_w = [], []
  for b in range(x.shape[0]):
    s = scores[b][np.asarray(valid[b])]
    r = {'max': s.max(0), 'mean': s.mean(0), 'sum': s.sum(0)}[pooling]
    w = np.asarray(normalizer_fn(jnp.asarray(r)))
    e = w @ table
    if head.cfg.normalizer == 'sigmoid':
      e = e / w.sum()
    out_e.append(e / np.linalg.norm(e))
    out_w.append(w)
  return np.stack(out_e), np.stack(out_w)


NORMALIZERS = {
    'sparsemax': optax.projections.projection_simplex,
    'softmax': jax.nn.softmax,
    'sigmoid': jax.nn.sigmoid,
}


@pytest.mark.parametrize('pooling', ['max', 'mean', 'sum'])
@pytest.mark.parametrize('normalizer', ['sparsemax', 'softmax', 'sigmoid'])
def test_head_follows_the_equations(pooling, normalizer):
  head = make_head(pooling=pooling, normalizer=normalizer)
  x = features((3, 6, WIDTH_TEXT), seed=1)
  valid = jnp.arange(6)[None, :] < jnp.array([[6], [3], [1]])
  embedding, weights = head.encode_text(x, valid)
  expected_e, expected_w = numpy_fdt(head, x, valid, NORMALIZERS[normalizer], pooling)
  np.testing.assert_allclose(weights, expected_w, atol=2e-5)
  np.testing.assert_allclose(embedding, expected_e, atol=2e-5)


def test_sparsemax_weights_are_a_sparse_distribution():
  head = make_head()
  _, weights = head.encode_image(features((4, 9, WIDTH_IMAGE), seed=2))
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert (weights >= 0).all()
  assert ((weights > 0).sum(-1) < head.cfg.num_tokens).all()


def test_padding_content_does_not_change_the_text_embedding():
  head = make_head()
  x = features((2, 7, WIDTH_TEXT), seed=3)
  valid = jnp.arange(7)[None, :] < jnp.array([[4], [2]])
  noise = features((2, 7, WIDTH_TEXT), seed=4) * 100
  e1, w1 = head.encode_text(x, valid)
  e2, w2 = head.encode_text(jnp.where(valid[..., None], x, noise), valid)
  np.testing.assert_array_equal(e1, e2)
  np.testing.assert_array_equal(w1, w2)


def test_padded_text_positions_do_not_change_the_model_embedding():
  """Through the whole text tower: tokens after end-of-text are never seen."""
  model = build_model(clip_config('micro', fdt=dict(num_tokens=64, dim=16)))
  vocab = model.cfg.text.vocab_size
  eot = vocab - 1
  tokens = jnp.array([[5, 9, eot, 0, 0, 0, 0, 0], [7, eot, 0, 0, 0, 0, 0, 0]])
  garbage = jnp.asarray(np.random.default_rng(5).integers(1, eot, size=tokens.shape))
  valid = jnp.arange(8) <= jnp.argmax(tokens, -1)[:, None]
  for fdt in (True, False):
    m = model if fdt else build_model(clip_config('micro'))
    a = m.encode_text(tokens).embedding
    b = m.encode_text(jnp.where(valid, tokens, garbage)).embedding
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_max_pooling_ignores_the_order_of_patches():
  head = make_head()
  x = features((2, 16, WIDTH_IMAGE), seed=6)
  permuted = x[:, np.random.default_rng(7).permutation(16)]
  e1, _ = head.encode_image(x)
  e2, _ = head.encode_image(permuted)
  np.testing.assert_allclose(e1, e2, atol=1e-6)


def test_embedding_is_unit_norm_and_differentiable():
  head = make_head()
  x = features((2, 5, WIDTH_IMAGE), seed=8)
  embedding, _ = head.encode_image(x)
  np.testing.assert_allclose(jnp.linalg.norm(embedding, axis=-1), 1.0, atol=1e-5)
  grads = nnx.grad(lambda h: jnp.sum(h.encode_image(x)[0][:, 0]))(head)
  table_grad = grads['fdt_tokens'][...]
  assert jnp.isfinite(table_grad).all() and jnp.abs(table_grad).sum() > 0


def test_unknown_options_are_refused():
  with pytest.raises(ValueError, match='pooling'):
    FDTConfig(pooling='median')
  with pytest.raises(ValueError, match='normalizer'):
    dataclasses.replace(FDTConfig(), normalizer='entmax')


def test_health_metrics_count_tokens_and_agreement_on_known_weights():
  from fdt_jax.models.clip import fdt_health
  image = np.zeros((2, 6), np.float32)
  text = np.zeros((2, 6), np.float32)
  image[0, [0, 1]] = 0.5           # pair 0: the same two tokens in both modalities
  text[0, [0, 1]] = 0.5
  image[1, 2] = 1.0                # pair 1: disjoint tokens
  text[1, [3, 4]] = [0.25, 0.75]
  m = jax.tree.map(float, fdt_health(jnp.asarray(image), jnp.asarray(text)))
  assert m['fdt/active_tokens_image'] == 1.5 and m['fdt/active_tokens_text'] == 2.0
  assert m['fdt/effective_tokens_image'] == pytest.approx((2 + 1) / 2)
  assert m['fdt/effective_tokens_text'] == pytest.approx((2 + 1 / (0.25**2 + 0.75**2)) / 2)
  assert m['fdt/tokens_in_use'] == 5 and m['fdt/unused_tokens'] == 1
  assert m['fdt/agreement'] == pytest.approx((1.0 + 0.0) / 2)


def test_init_scale_sets_the_token_tables_spread():
  table = np.asarray(make_head(num_tokens=4096, init_scale=0.1).fdt_tokens[...])
  assert np.std(table) == pytest.approx(0.1, rel=0.02)


@pytest.mark.slow  # seconds of compilation: the full suite runs it, the quick tier does not
def test_remat_keeps_only_the_query_networks_matmul_outputs(capsys):
  """With remat, the head's backward keeps the query network's matmul outputs and recomputes
  the layer norms and the GELU (README "Performance"); the same gradients."""
  x = features((2, 7, WIDTH_IMAGE), seed=3)

  def saved_per_position(remat):
    cfg = FDTConfig(num_tokens=96, dim=8, temperature=0.05)
    with nnx.use_eager_sharding(False):
      head = FDT(cfg, WIDTH_IMAGE, WIDTH_TEXT, dtype=jnp.float32, rngs=nnx.Rngs(0), remat=remat)
    graphdef, params = nnx.split(head, nnx.Param)
    loss = lambda p, x: jnp.sum(nnx.merge(graphdef, p).encode_image(x)[0] * jnp.arange(8.0))
    print_saved_residuals(loss, params, x)
    # Residuals of [batch, positions, width or dim] (the features x itself is an argument).
    saved = [l for l in capsys.readouterr().out.splitlines()
             if ('f32[2,7,' in l or 'float32[2,7,' in l) and 'from the argument' not in l]
    return len(saved), jax.grad(loss)(params, x)

  plain_count, plain_grads = saved_per_position(False)
  remat_count, remat_grads = saved_per_position(True)
  # Remat: fc_1's output (the rest of the network is recomputed from it) and the scaled
  # queries the max-pool keeps; plain autodiff: every layer norm and GELU intermediate too.
  assert plain_count >= 9 and remat_count == 2, (plain_count, remat_count)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
