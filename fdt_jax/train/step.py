"""The jitted train step: model -> objective -> optax update, with optional
gradient accumulation that keeps every example of the global batch as a negative."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fdt_jax.data.transforms import normalize_images
from fdt_jax.models.transformer import constrain
from fdt_jax.train.state import TrainState


def forward(graphdef, params, batch):
  model = nnx.merge(graphdef, params)
  return model(normalize_images(batch['images']), batch['tokens'])


def _split_micro(tree, k):
  """[batch, ...] -> [k, batch / k, ...] with microbatch j = examples j, j + k, ...:
  strided, so each device holds an equal share of every microbatch."""
  def split(x):
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, None, 'act_batch', *([None] * (x.ndim - 2)))
  return jax.tree.map(split, tree)


def _merge_micro(tree):
  """Inverse of _split_micro for per-example leaves; scalars (e.g. the logit scale,
  the same in every microbatch) are taken from the first microbatch."""
  def merge(x):
    if x.ndim == 1:
      return x[0]
    return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])
  return jax.tree.map(merge, tree)


def _grads_accumulated(graphdef, params, batch, objective, k):
  """GradCache (Gao et al., 2021): embed every microbatch without keeping activations,
  take the objective's gradient w.r.t. the embeddings of the whole batch, then
  backpropagate it through each microbatch in turn. Equals the plain gradient."""
  micro = _split_micro(batch, k)
  stacked = jax.lax.map(lambda mb: forward(graphdef, params, mb), micro)
  model_metrics = jax.tree.map(lambda x: x.mean(0), stacked.pop('metrics', {}))
  outputs = _merge_micro(stacked)
  (loss, metrics), output_grads = jax.value_and_grad(
      lambda out: objective(out, batch), has_aux=True)(outputs)

  def split_cotangent(g):  # per-example rows to their microbatch; scalars shared out
    return jnp.broadcast_to(g / k, (k,)) if g.ndim == 0 else _split_micro(g, k)

  micro_grads = jax.tree.map(split_cotangent, output_grads)

  def backward(acc, xs):
    mb, g = xs

    def embed(p):  # the model's own metrics (FDT mode) get no cotangent
      outputs = forward(graphdef, p, mb)
      outputs.pop('metrics', None)
      return outputs

    _, vjp = jax.vjp(embed, params)
    return jax.tree.map(jnp.add, acc, vjp(g)[0]), None

  grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (micro, micro_grads))
  return loss, metrics, {**outputs, 'metrics': model_metrics}, grads


def train_step(state: TrainState, batch, *, graphdef, tx, objective, schedule,
               accumulation_steps: int = 1):
  if accumulation_steps > 1:
    loss, metrics, outputs, grads = _grads_accumulated(
        graphdef, state.params, batch, objective, accumulation_steps)
  else:
    def loss_fn(params):
      outputs = forward(graphdef, params, batch)
      loss, metrics = objective(outputs, batch)
      return loss, (metrics, outputs)
    (loss, (metrics, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**metrics, **outputs.get('metrics', {}), 'loss': loss,
             'learning_rate': schedule(state.step), 'grad_norm': optax.tree.norm(grads),
             'param_norm': optax.tree.norm(params)}  # finite iff the new params are
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics
