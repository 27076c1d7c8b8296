"""The sort-free sparsemax (bisection, then Michelot's exact finish) against the simplex
projection and the sort-based form: values and gradients, on the cases that break searches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdt_jax.ops import sparsemax

reference = jax.vmap(optax.projections.projection_simplex)


def bisect(x, **kw):
  return sparsemax(x, method='bisect', **kw)


def by_sort(x, **kw):
  return sparsemax(x, method='sort', **kw)


def scores(shape, scale, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def support_sizes(p):
  return np.asarray((p > 0).sum(-1))


def assert_same_values_and_gradients(x, atol_value, atol_grad, where=None, oracle=True):
  cotangent = scores(x.shape, 1.0, seed=99)
  p, vjp = jax.vjp(lambda v: bisect(v, where=where), x)
  p_sort, vjp_sort = jax.vjp(lambda v: by_sort(v, where=where), x)
  np.testing.assert_allclose(p, p_sort, atol=atol_value)
  np.testing.assert_array_equal(support_sizes(p), support_sizes(p_sort))
  np.testing.assert_allclose(vjp(cotangent)[0], vjp_sort(cotangent)[0], atol=atol_grad)
  if oracle:
    p_ref, vjp_ref = jax.vjp(reference, x)
    np.testing.assert_allclose(p, p_ref, atol=atol_value)
    np.testing.assert_allclose(vjp(cotangent)[0], vjp_ref(cotangent)[0], atol=atol_grad)
  return p


@pytest.mark.parametrize('scale', [30.0, 3.0, 0.05])
def test_large_rows_match_sort_and_oracle(scale):
  x = scores((16, 16384), scale, seed=1)
  p = assert_same_values_and_gradients(x, atol_value=2e-6 * max(1.0, scale / 10), atol_grad=1e-5)
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_supports_of_thousands_as_at_fdt_temperature_1000():
  # Scores as small as the FDT head's at T = 1000: thousands of tokens share the weight.
  x = scores((8, 16384), 3e-4, seed=2)
  p = assert_same_values_and_gradients(x, atol_value=1e-7, atol_grad=1e-5)
  assert (support_sizes(p) > 1500).all()


def test_one_active_element_per_row():
  x = scores((6, 4096), 0.1, seed=3).at[:, 7].add(5.0)
  p = assert_same_values_and_gradients(x, atol_value=1e-6, atol_grad=1e-6)
  np.testing.assert_array_equal(support_sizes(p), 1)
  np.testing.assert_array_equal(p[:, 7], 1.0)


def test_ties_at_the_top_and_at_the_threshold():
  rng = np.random.default_rng(4)
  x = np.round(rng.normal(size=(5, 2000)) * 4) / 4  # many exact ties on a grid of 1/4
  x[0, :] = 2.0  # all tied: uniform
  x[1, :3] = 10.0  # three tied at the top, the rest far below
  x[2, :] = [1.0, 0.0] * 1000  # ties exactly at tau = 1 - 1/1000: p = 0.001 on the 1.0s
  x = jnp.asarray(x, jnp.float32)
  p = assert_same_values_and_gradients(x, atol_value=1e-6, atol_grad=1e-5)
  np.testing.assert_allclose(p[0], 1 / 2000, rtol=1e-5)
  np.testing.assert_allclose(p[1, :3], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(p[2, ::2], 1 / 1000, rtol=1e-4)


def test_masks_and_fully_masked_rows():
  x = scores((4, 3000), 1.0, seed=5)
  where = jnp.asarray(np.random.default_rng(6).random((4, 3000)) > 0.5).at[3].set(False)
  p = assert_same_values_and_gradients(x, atol_value=1e-6, atol_grad=1e-5, where=where, oracle=False)
  assert (p[~where] == 0).all() and (p[3] == 0).all()
  np.testing.assert_allclose(p[:3].sum(-1), 1.0, atol=1e-5)


def test_huge_and_tiny_inputs():
  x = jnp.asarray([[1e30, 1e30, 0.0, -1e30], [1e-30, 0.0, -1e-30, 0.0], [3e4, 3e4 - 0.5, -3e4, 1.0]],
                  jnp.float32)
  p = bisect(x)
  np.testing.assert_allclose(p, by_sort(x), atol=1e-6)
  np.testing.assert_allclose(p, [[0.5, 0.5, 0, 0], [0.25] * 4, [0.75, 0.25, 0, 0]], atol=1e-6)


def test_unknown_method_is_refused():
  with pytest.raises(ValueError, match="'bisect'"):
    sparsemax(jnp.zeros(3), method='heap')
