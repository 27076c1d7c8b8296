"""The lean score + max-pool (fdt_jax.ops.max_pooled_scores) against the plain einsum-then-max:
values and gradients with padding, ties and empty rows, and no [batch, positions, rows]
buffer in its compiled backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fdt_jax.models.fdt import FDT, FDTConfig
from fdt_jax.ops import max_pooled_scores


def plain(queries, table, valid):
  scores = jnp.einsum('bnd,cd->bnc', queries, table)
  return jnp.max(jnp.where(valid[:, :, None], scores, -jnp.inf), axis=1)


def normal(shape, seed, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def lengths_mask(lengths, positions):
  return jnp.arange(positions)[None, :] < jnp.asarray(lengths)[:, None]


def value_and_grads(fn, queries, table, valid, cotangent):
  out, vjp = jax.vjp(lambda q, t: fn(q, t, valid), queries, table)
  grad_queries, grad_table = vjp(cotangent)
  return out, grad_queries, grad_table


def assert_matches_plain(queries, table, valid, token_chunk, atol=1e-5):
  cotangent = normal((queries.shape[0], table.shape[0]), seed=42)
  lean = value_and_grads(lambda q, t, v: max_pooled_scores(q, t, v, token_chunk), queries, table, valid,
                         cotangent)
  expected = value_and_grads(plain, queries, table, valid, cotangent)
  for got, want in zip(lean, expected):
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
  return lean


@pytest.mark.parametrize('token_chunk', [1024, 32, 7])  # one chunk, three, and 7 not dividing 96
def test_values_and_gradients_equal_the_plain_form_with_padding(token_chunk):
  queries = normal((4, 9, 8), seed=1)
  table = normal((96, 8), seed=2)
  valid = lengths_mask([9, 4, 1, 6], 9)
  # Padded positions hold large values that would win the max if they were not masked.
  queries = jnp.where(valid[:, :, None], queries, 50.0)
  _, grad_queries, _ = assert_matches_plain(queries, table, valid, token_chunk)
  assert (grad_queries[~valid] == 0).all()


def test_ties_split_the_gradient_as_autodiff_of_max_does():
  queries = normal((3, 6, 8), seed=3)
  queries = queries.at[0, 4].set(queries[0, 1])  # positions 1 and 4 score the same on every row
  queries = queries.at[2, :].set(queries[2, 0])  # all positions of input 2 tied
  table = normal((64, 8), seed=4)
  valid = lengths_mask([6, 6, 5], 6)
  _, grad_queries, _ = assert_matches_plain(queries, table, valid, token_chunk=16)
  np.testing.assert_allclose(grad_queries[0, 1], grad_queries[0, 4], atol=1e-6)
  np.testing.assert_allclose(grad_queries[2, :5], jnp.broadcast_to(grad_queries[2, :1], (5, 8)), atol=1e-6)


def test_a_row_without_valid_positions_is_minus_infinity_with_no_gradient():
  queries = normal((2, 5, 8), seed=5)
  table = normal((32, 8), seed=6)
  valid = lengths_mask([0, 3], 5)
  cotangent = normal((2, 32), seed=7)
  out, grad_queries, grad_table = value_and_grads(max_pooled_scores, queries, table, valid, cotangent)
  assert jnp.isneginf(out[0]).all() and (grad_queries[0] == 0).all()
  expected = value_and_grads(plain, queries, table, valid, cotangent)
  np.testing.assert_allclose(out[1], expected[0][1], atol=1e-6)
  np.testing.assert_allclose(grad_table, expected[2], atol=1e-5)


def test_bfloat16_matches_the_plain_form_in_bfloat16():
  queries = normal((2, 7, 16), seed=8).astype(jnp.bfloat16)
  table = normal((64, 16), seed=9).astype(jnp.bfloat16)
  valid = lengths_mask([7, 3], 7)
  out = max_pooled_scores(queries, table, valid, 16)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), plain(queries, table, valid).astype(jnp.float32),
                             atol=0.06)
  grads = jax.grad(lambda q, t: max_pooled_scores(q, t, valid, 16).astype(jnp.float32).sum(), (0, 1))(
      queries, table)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_backward_never_holds_the_score_tensor():
  batch, positions, dim, rows = 8, 50, 16, 4096
  queries, table = normal((batch, positions, dim), 10), normal((rows, dim), 11)
  valid = jnp.ones((batch, positions), bool)

  def temp_bytes(fn):
    step = jax.jit(jax.grad(lambda q, t: jnp.sum(fn(q, t, valid) ** 2), (0, 1)))
    return step.lower(queries, table).compile().memory_analysis().temp_size_in_bytes

  score_bytes = batch * positions * rows * 4
  assert temp_bytes(lambda q, t, v: max_pooled_scores(q, t, v, 512)) < score_bytes / 2
  assert temp_bytes(plain) >= score_bytes  # the plain form does, so the check can fail


@pytest.mark.slow  # seconds of compilation: the full suite runs it, the quick tier does not
def test_fdt_head_lean_and_plain_agree_on_values_and_parameter_gradients():
  def head(max_pool):
    cfg = FDTConfig(num_tokens=128, dim=8, temperature=0.05, max_pool=max_pool)
    with nnx.use_eager_sharding(False):
      return FDT(cfg, 12, 12, dtype=jnp.float32, rngs=nnx.Rngs(0))

  x = normal((3, 6, 12), seed=12)
  valid = lengths_mask([6, 2, 4], 6)

  def loss(h):
    e_text, w_text = h.encode_text(x, valid)
    e_image, _ = h.encode_image(x)
    return jnp.sum(e_text * jnp.arange(8.0)) + jnp.sum(e_image ** 3) + jnp.sum(w_text[:, :5])

  (value_lean, grads_lean), (value_plain, grads_plain) = (nnx.value_and_grad(loss)(head(m))
                                                          for m in ('lean', 'plain'))
  np.testing.assert_allclose(value_lean, value_plain, rtol=1e-5)
  flat_plain = dict(nnx.to_flat_state(grads_plain))
  # float32 sums in another order: gradients of size ~3 differ by up to ~1e-4 on some CPUs
  # (seen on this machine, 2026-12-04); a wrong routing of the max would differ by O(1).
  for path, leaf in nnx.to_flat_state(grads_lean):
    np.testing.assert_allclose(leaf[...], flat_plain[path][...], rtol=1e-4, atol=2e-5,
                               err_msg=str(path))
  assert jnp.abs(grads_lean['fdt_tokens'][...]).sum() > 0


@pytest.mark.slow  # seconds of compilation: the full suite runs it, the quick tier does not
@pytest.mark.parametrize('mesh_sizes', [dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=1, tensor=8)])
def test_sharded_table_gives_the_plain_values_and_gradients(mesh_sizes):
  """The table sharded as the model shards fdt_tokens (rows over 'tensor', dim over 'fsdp'),
  the queries over the batch axes, on the suite's 8 simulated devices (tests/conftest.py)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from fdt_jax import parallel
  mesh = parallel.make_mesh(mesh_sizes)
  batch_axes = parallel.BATCH_AXES
  queries = jax.device_put(normal((8, 9, 16), seed=13), NamedSharding(mesh, P(batch_axes)))
  table = jax.device_put(normal((128, 16), seed=14), NamedSharding(mesh, P('tensor', 'fsdp')))
  valid = jax.device_put(lengths_mask([9, 4, 1, 6, 9, 2, 7, 3], 9), NamedSharding(mesh, P(batch_axes)))
  cotangent = jax.device_put(normal((8, 128), seed=15), NamedSharding(mesh, P(batch_axes)))
  # 4 chunks of 32 rows, each chunk split over the tensor axis.
  lean = jax.jit(lambda q, t, v, g: value_and_grads(lambda a, b, c: max_pooled_scores(a, b, c, 32), q, t, v, g))
  plain_form = jax.jit(lambda q, t, v, g: value_and_grads(plain, q, t, v, g))
  with jax.set_mesh(mesh):
    got = lean(queries, table, valid, cotangent)
    expected = plain_form(queries, table, valid, cotangent)
  # The chunks keep the table's row sharding: the table gradient is not gathered whole.
  assert got[2].sharding.spec[0] == 'tensor'
  for a, b, name in zip(got, expected, ('values', 'query gradients', 'table gradients')):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)
