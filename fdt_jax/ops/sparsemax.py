"""Sparsemax (Martins & Astudillo, 2016) with a closed-form backward pass.

    sparsemax(z) = argmin_p ||p - z||^2  over the probability simplex
                 = max(z - tau, 0),  tau chosen so that the result sums to 1.

Forward: sort, find the support size k and the threshold tau. Backward: on the
support S = {p > 0} the Jacobian-vector product is g - mean_S(g), zero elsewhere,
so the backward pass keeps only the output p, not the sort.
"""


import jax
import jax.numpy as jnp


def sparsemax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
  """Euclidean projection of `x` onto the simplex along `axis`.

  Args:
    x: scores, any float dtype; computed in float32, returned in x.dtype.
    axis: the axis that sums to one.
    where: optional boolean mask broadcastable to x. Entries where it is False
      get exactly 0 and no gradient; a row with no valid entry is all zeros.
  """
  if where is None:
    where = jnp.ones((), bool)
  where = jnp.broadcast_to(where, x.shape)
  x_last = jnp.moveaxis(x, axis, -1)
  where_last = jnp.moveaxis(where, axis, -1)
  out = _sparsemax_last_axis(x_last, where_last)
  return jnp.moveaxis(out, -1, axis)


@jax.custom_vjp
def _sparsemax_last_axis(x, where):
  z = x.astype(jnp.float32)
  # Shift by the row maximum: the projection is translation invariant and this
  # keeps huge inputs (1e30) from swallowing the "+1" below.
  row_max = jnp.max(jnp.where(where, z, -jnp.inf), axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  z = jnp.where(where, z - row_max, -jnp.inf)

  z_sorted = -jnp.sort(-z, axis=-1)  # descending; masked entries (-inf) last
  valid_sorted = jnp.isfinite(z_sorted)
  cumsum = jnp.cumsum(jnp.where(valid_sorted, z_sorted, 0.0), axis=-1)
  k = jnp.arange(1, z.shape[-1] + 1, dtype=jnp.float32)
  # k is in the support iff 1 + k * z_(k) > sum_{j<=k} z_(j). The top entry
  # is 0 after the shift, so k = 1 always qualifies on a row with any valid entry.
  in_support = valid_sorted & (1.0 + k * z_sorted > cumsum)
  support_size = jnp.sum(in_support, axis=-1, keepdims=True)
  safe_size = jnp.maximum(support_size, 1)
  tau_sum = jnp.take_along_axis(cumsum, safe_size - 1, axis=-1)
  tau = (tau_sum - 1.0) / safe_size.astype(jnp.float32)
  p = jnp.where(where & (support_size > 0), jnp.maximum(z - tau, 0.0), 0.0)
  return p.astype(x.dtype)


def _fwd(x, where):
  p = _sparsemax_last_axis(x, where)
  return p, p


def _bwd(p, g):
  on_support = p > 0
  g32 = jnp.where(on_support, g.astype(jnp.float32), 0.0)
  count = jnp.maximum(jnp.sum(on_support, axis=-1, keepdims=True), 1)
  mean_on_support = jnp.sum(g32, axis=-1, keepdims=True) / count
  grad = jnp.where(on_support, g32 - mean_on_support, 0.0)
  return grad.astype(p.dtype), None


_sparsemax_last_axis.defvjp(_fwd, _bwd)


def normalize_scores(kind: str, scores: jax.Array, axis: int = -1) -> jax.Array:
  """The token-weight normaliser chosen by name: sparsemax, softmax or sigmoid."""
  if kind == 'sparsemax':
    return sparsemax(scores, axis=axis)
  if kind == 'softmax':
    return jax.nn.softmax(scores.astype(jnp.float32), axis=axis).astype(scores.dtype)
  if kind == 'sigmoid':
    return jax.nn.sigmoid(scores)
  raise ValueError(f"unknown normaliser {kind!r}: use 'sparsemax', 'softmax' or 'sigmoid'")
