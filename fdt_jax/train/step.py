"""The jitted train step: batch -> [family's prepare_batch] -> model (and its EMA teacher)
-> objectives -> optax update -> EMA update, with optional gradient accumulation that
keeps every example of the global batch as a negative."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fdt_jax.data.transforms import normalize_images
from fdt_jax.parallel import constrain
from fdt_jax.train.state import TrainState

PREPARE_BATCH_STREAM = 0x6261  # folded into the seed: prepare_batch's keys differ from init's


def forward(graphdef, params, batch, teacher: bool = False):
  return nnx.merge(graphdef, params)(batch, teacher=teacher)


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


def _teacher_outputs(graphdef, ema_params, batch, k):
  """What the EMA teacher produces for the batch (microbatch by microbatch if k > 1)."""
  def run(b):
    return forward(graphdef, ema_params, b, teacher=True)
  outputs = run(batch) if k == 1 else _merge_micro(jax.lax.map(run, _split_micro(batch, k)))
  return jax.lax.stop_gradient(outputs)


def _grads_accumulated(graphdef, params, batch, objective, k):
  """GradCache (Gao et al., 2021): embed every microbatch without keeping activations,
  take the objective's gradient w.r.t. the embeddings of the whole batch, then
  backpropagate it through each microbatch in turn. Equals the plain gradient."""
  micro = _split_micro(batch, k)
  outputs = _merge_micro(jax.lax.map(lambda mb: forward(graphdef, params, mb), micro))
  (loss, metrics), output_grads = jax.value_and_grad(
      lambda out: objective(out, batch), has_aux=True)(outputs)

  def split_cotangent(g):  # per-example rows to their microbatch; scalars shared out
    return jnp.broadcast_to(g / k, (k,)) if g.ndim == 0 else _split_micro(g, k)

  micro_grads = jax.tree.map(split_cotangent, output_grads)

  def backward(acc, xs):
    mb, g = xs

    _, vjp = jax.vjp(lambda p: forward(graphdef, p, mb), params)
    return jax.tree.map(jnp.add, acc, vjp(g)[0]), None

  grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (micro, micro_grads))
  return loss, metrics, outputs, grads


def train_step(state: TrainState, batch, *, graphdef, tx, objective, schedule, seed: int = 0,
               prepare_batch=None, batch_metrics=None, model_cfg=None,
               ema_decay: float = 0.0, accumulation_steps: int = 1):
  """One optimizer step. `objective`: (outputs, batch) -> (loss, metrics) (objectives.combine);
  `prepare_batch`, `batch_metrics`: the family's hooks (models.registry.Family)."""
  batch = {**batch, 'images': normalize_images(batch['images'])}
  if prepare_batch is not None:
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), PREPARE_BATCH_STREAM),
                             state.step)
    batch = prepare_batch(batch, key, model_cfg)
  loss_fn = objective
  if state.ema_params is not None:
    teacher = _teacher_outputs(graphdef, state.ema_params, batch, accumulation_steps)
    loss_fn = lambda outputs, b: objective({**outputs, 'teacher': teacher}, b)

  if accumulation_steps > 1:
    loss, metrics, outputs, grads = _grads_accumulated(
        graphdef, state.params, batch, loss_fn, accumulation_steps)
  else:
    def params_loss(params):
      outputs = forward(graphdef, params, batch)
      loss, metrics = loss_fn(outputs, batch)
      return loss, (metrics, outputs)
    (loss, (metrics, outputs)), grads = jax.value_and_grad(params_loss, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = None
  if state.ema_params is not None:
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                              state.ema_params, params)
  if batch_metrics is not None:  # of the whole batch: the microbatches' outputs are merged
    metrics = {**metrics, **jax.lax.stop_gradient(batch_metrics(outputs, batch))}
  metrics = {**metrics, 'loss': loss,
             'learning_rate': schedule(state.step), 'grad_norm': optax.tree.norm(grads),
             'param_norm': optax.tree.norm(params)}  # finite iff the new params are
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                    ema_params=ema_params), metrics
