"""sparsemax: the projection onto the simplex, its custom gradient and its edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdt_jax.ops import sparsemax

# The oracle: optax's simplex projection, row by row; differentiated by plain autodiff.
reference = jax.vmap(optax.projections.projection_simplex)


def random_scores(shape, scale, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


@pytest.mark.parametrize('shape', [(1, 2), (3, 7), (5, 100), (8, 16384)])
@pytest.mark.parametrize('scale', [0.01, 1.0, 30.0])
def test_forward_equals_simplex_projection(shape, scale):
  x = random_scores(shape, scale)
  # The oracle works on unshifted float32 scores, so its own rounding grows with their size.
  np.testing.assert_allclose(sparsemax(x), reference(x), atol=2e-6 * max(1.0, scale / 10))


@pytest.mark.parametrize('shape', [(3, 7), (8, 16384)])
def test_custom_gradient_equals_autodiff_of_reference(shape):
  x = random_scores(shape, 3.0, seed=1)
  cotangent = random_scores(shape, 1.0, seed=2)
  _, vjp = jax.vjp(sparsemax, x)
  _, vjp_ref = jax.vjp(reference, x)
  np.testing.assert_allclose(vjp(cotangent)[0], vjp_ref(cotangent)[0], atol=1e-5)


def test_output_is_sparse_and_on_the_simplex():
  p = sparsemax(random_scores((8, 16384), 3.0))
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  assert (p >= 0).all()
  assert ((p > 0).sum(-1) < 100).all()  # a handful of tokens, not thousands


@pytest.mark.parametrize('x, expected', [
    ([1e30, 1e30, 0.0], [0.5, 0.5, 0.0]),  # huge and tied
    ([1e30, -1e30, 0.0], [1.0, 0.0, 0.0]),  # huge spread
    ([1e-30, 0.0, -1e-30], [1 / 3, 1 / 3, 1 / 3]),  # tiny
    ([2.0, 2.0, 2.0, 2.0], [0.25, 0.25, 0.25, 0.25]),  # all equal
    ([0.3, 0.3, -5.0], [0.5, 0.5, 0.0]),  # tie on the support
    ([1.0, 0.5, 0.0], [0.75, 0.25, 0.0]),  # a textbook case: tau = 0.25
])
def test_edge_cases(x, expected):
  x = jnp.asarray(x, jnp.float32)
  p = sparsemax(x)
  assert jnp.isfinite(p).all()
  np.testing.assert_allclose(p, expected, atol=1e-6)
  g = jax.grad(lambda v: jnp.sum(sparsemax(v) * jnp.arange(v.size)))(x)
  assert jnp.isfinite(g).all()


def test_bfloat16_is_computed_in_float32():
  x = random_scores((4, 64), 2.0)
  p = sparsemax(x.astype(jnp.bfloat16))
  assert p.dtype == jnp.bfloat16
  # Only the final rounding differs from the float32 result of the same (rounded) inputs.
  np.testing.assert_allclose(p.astype(jnp.float32), sparsemax(x.astype(jnp.bfloat16).astype(jnp.float32)),
                             atol=4e-3)
  g = jax.grad(lambda v: sparsemax(v)[:, 0].astype(jnp.float32).sum())(x.astype(jnp.bfloat16))
  assert g.dtype == jnp.bfloat16 and jnp.isfinite(g.astype(jnp.float32)).all()


def test_mask_gives_zero_weight_and_zero_gradient():
  x = random_scores((4, 10), 2.0, seed=3)
  where = jnp.asarray(np.random.default_rng(4).random((4, 10)) > 0.4).at[:, 0].set(True)
  p = sparsemax(x, where=where)
  assert (p[~where] == 0).all()
  for row in range(4):  # the masked projection is the projection of the valid entries alone
    valid = np.flatnonzero(where[row])
    np.testing.assert_allclose(p[row, valid], optax.projections.projection_simplex(x[row, valid]), atol=1e-6)
  g = jax.grad(lambda v: jnp.sum(sparsemax(v, where=where) * jnp.arange(10.0)))(x)
  assert (g[~where] == 0).all()


def test_fully_masked_row_is_zeros_not_nan():
  x = random_scores((2, 5), 1.0)
  where = jnp.array([[False] * 5, [True] * 5])
  p = sparsemax(x, where=where)
  np.testing.assert_array_equal(p[0], 0.0)
  np.testing.assert_allclose(p[1].sum(), 1.0, atol=1e-6)
  g = jax.grad(lambda v: jnp.sum(sparsemax(v, where=where) ** 2))(x)
  assert jnp.isfinite(g).all() and (g[0] == 0).all()


@pytest.mark.slow  # seconds of compilation: the full suite runs it, the quick tier does not
def test_jit_vmap_and_axis_agree():
  x = random_scores((6, 4, 33), 2.0, seed=5)
  expected = reference(x.reshape(-1, 33)).reshape(x.shape)
  np.testing.assert_allclose(jax.jit(sparsemax)(x), expected, atol=2e-6)
  np.testing.assert_allclose(jax.vmap(sparsemax)(x), expected, atol=2e-6)
  moved = sparsemax(jnp.moveaxis(x, -1, 0), axis=0)
  np.testing.assert_allclose(jnp.moveaxis(moved, 0, -1), expected, atol=2e-6)
  grad_jit = jax.jit(jax.grad(lambda v: jnp.sum(sparsemax(v) ** 3)))(x)
  grad_ref = jax.grad(lambda v: jnp.sum(reference(v.reshape(-1, 33)) ** 3))(x)
  np.testing.assert_allclose(grad_jit, grad_ref, atol=1e-5)
