"""Sparsemax (Martins & Astudillo, 2016) with a closed-form backward pass.

    sparsemax(z) = argmin_p ||p - z||^2  over the probability simplex
                 = max(z - tau, 0),  tau chosen so that the result sums to 1.

Forward, two ways to find tau, both exact to float32 rounding:
  'bisect' (default): f(t) = sum(max(z - t, 0)) - 1 falls from >= 0 at max(z) - 1 to -1
    at max(z); a few halvings of that interval give a lower bound lo <= tau, so the set
    {z > lo} holds the support. Then Michelot's fixed point tau <- (sum_{z > tau} z - 1) /
    |{z > tau}| runs from lo until the set stops shrinking: each step only drops entries,
    and the fixed point is the exact threshold. Elementwise passes only, no sort.
  'sort': sort, find the support size k by the cumulative sum, tau from the top k.
Backward: on the support S = {p > 0} the Jacobian-vector product is g - mean_S(g), zero
elsewhere, so the backward pass keeps only the output p, not the sort or the search.
"""

import functools

import jax
import jax.numpy as jnp

METHODS = ('bisect', 'sort')
# Halvings before the exact finish: after 10 the interval is 1/1024 wide, so the finish
# starts from a set a little larger than the support and takes a few steps. Anything
# from 6 to 20 measured the same within noise at [256, 16384].
MICHELOT_STEPS = 256  # a bound; the set shrinks by at least one entry per step
BISECT_STEPS = 10


def sparsemax(x: jax.Array, axis: int = -1, where: jax.Array | None = None,
              method: str = 'bisect') -> jax.Array:
  """Euclidean projection of `x` onto the simplex along `axis`.

  Args:
    x: scores, any float dtype; computed in float32, returned in x.dtype.
    axis: the axis that sums to one.
    where: optional boolean mask broadcastable to x. Entries where it is False
      get exactly 0 and no gradient; a row with no valid entry is all zeros.
    method: how the forward finds the threshold, 'bisect' (faster) or 'sort'; same values.
  """
  if method not in METHODS:
    raise ValueError(f'unknown sparsemax method {method!r}: use one of {METHODS}')
  if where is None:
    where = jnp.ones((), bool)
  where = jnp.broadcast_to(where, x.shape)
  x_last = jnp.moveaxis(x, axis, -1)
  where_last = jnp.moveaxis(where, axis, -1)
  out = _sparsemax_last_axis(x_last, where_last, method)
  return jnp.moveaxis(out, -1, axis)


def _shifted(x, where):
  """float32 scores minus the row maximum (masked entries -inf): the projection is
  translation invariant and this keeps huge inputs (1e30) from swallowing the "+1"."""
  z = x.astype(jnp.float32)
  row_max = jnp.max(jnp.where(where, z, -jnp.inf), axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  return jnp.where(where, z - row_max, -jnp.inf)


def _threshold_sort(z):
  """tau [..., 1] and support size [..., 1] of shifted scores z, by a sort."""
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
  return (tau_sum - 1.0) / safe_size.astype(jnp.float32), support_size


def _threshold_bisect(z):
  """tau [..., 1] and support size [..., 1] of shifted scores z (max 0), without a sort."""
  # tau lies in [-1, 0): f(-1) >= 0 (the top entry alone gives 1), f(0) = -1.
  lo = jnp.full(z.shape[:-1] + (1,), -1.0, jnp.float32)
  hi = jnp.zeros_like(lo)

  def halve(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = jnp.sum(jnp.maximum(z - mid, 0.0), axis=-1, keepdims=True) >= 1.0
    return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

  lo, _ = jax.lax.fori_loop(0, BISECT_STEPS, halve, (lo, hi))

  def michelot(t):
    """Entries above t, their count and tau computed from them (<= the true tau if the
    set holds the support)."""
    above = z > t
    count = jnp.sum(above, axis=-1, keepdims=True)
    total = jnp.sum(jnp.where(above, z, 0.0), axis=-1, keepdims=True)
    return (total - 1.0) / jnp.maximum(count, 1).astype(jnp.float32), count

  # In exact arithmetic the set only shrinks until it is the support. In float32 a row can
  # oscillate between two sets one entry apart (seen in training: the loop never ended), so
  # a row stops as soon as its set does not shrink, and every row after MICHELOT_STEPS.
  def not_settled(state):
    _, count, previous, steps = state
    return jnp.any(count < previous) & (steps < MICHELOT_STEPS)

  def step(state):
    tau, count, _, steps = state
    new_tau, new_count = michelot(tau)
    shrinks = new_count < count
    return (jnp.where(shrinks, new_tau, tau), jnp.where(shrinks, new_count, count), count,
            steps + 1)

  # Strictly below lo so the entry at lo itself (e.g. the single top entry) is kept.
  tau, count = michelot(lo - jnp.abs(lo) * 1e-6 - 1e-30)
  tau, count, _, _ = jax.lax.while_loop(not_settled, step, (tau, count, count + 1, 0))
  return tau, count


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sparsemax_last_axis(x, where, method):
  z = _shifted(x, where)
  tau, support_size = (_threshold_bisect if method == 'bisect' else _threshold_sort)(z)
  p = jnp.where(where & (support_size > 0), jnp.maximum(z - tau, 0.0), 0.0)
  return p.astype(x.dtype)


def _fwd(x, where, method):
  p = _sparsemax_last_axis(x, where, method)
  return p, p


def _bwd(method, p, g):
  del method
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
