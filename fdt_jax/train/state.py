"""The train state (step, params, optimizer state, EMA teacher), created directly in its
sharded layout."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from fdt_jax import parallel
from fdt_jax.models import build_model
from fdt_jax.run import abstract_params
from fdt_jax.train.optimizer import path_name


@struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: Any
  # The EMA teacher's parameters (families with teacher=True), else None. Sharded,
  # checkpointed and restored like `params`; never gets gradients.
  ema_params: nnx.State | None = None


def _opt_state_shardings(abstract_opt_state, abstract_params, params_shardings, mesh: Mesh):
  """Optimizer leaves that mirror a parameter (Adam's mu and nu) take its sharding;
  counts and other scalars are replicated."""
  params = {path_name(p): (a.shape, s) for (p, a), s in zip(
      jax.tree_util.tree_flatten_with_path(abstract_params)[0], jax.tree.leaves(params_shardings))}

  def sharding_for(path, leaf):
    name = path_name(path)
    for param_name, (shape, sharding) in params.items():
      if (name == param_name or name.endswith('.' + param_name)) and leaf.shape == shape:
        return sharding
    return parallel.replicated(mesh)

  return jax.tree_util.tree_map_with_path(sharding_for, abstract_opt_state)


def prepare_train_state(model, tx: optax.GradientTransformation, mesh: Mesh, rules, seed: int,
                        *, teacher: bool = False):
  """Returns (graphdef, abstract_state, init).

  `model`: the config.model section (or a family's built config). `abstract_state`
  holds ShapeDtypeStructs with their target shardings (what a checkpoint restores
  into). `init(params=None)` creates the state with every array born on its own
  shard, never whole on one device; `params` (e.g. imported open_clip weights, host
  arrays) replaces the random initialisation. `teacher`: keep an EMA copy of the
  parameters, starting equal to them.
  """
  graphdef, sharded_params = abstract_params(model, mesh, rules, seed)
  params_shardings = parallel.shardings_of(sharded_params)

  def from_params(params):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema_params=params if teacher else None)

  def random_init():
    return from_params(nnx.state(build_model(model, seed), nnx.Param))

  abstract = jax.eval_shape(random_init)
  shardings = TrainState(
      step=parallel.replicated(mesh), params=params_shardings,
      opt_state=_opt_state_shardings(abstract.opt_state, abstract.params, params_shardings, mesh),
      ema_params=params_shardings if teacher else None)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)

  def init(params: nnx.State | None = None) -> TrainState:
    if params is None:
      return jax.jit(random_init, out_shardings=shardings)()
    params = jax.tree.map(lambda p, a: jax.device_put(np.asarray(p, a.dtype), a.sharding),
                          params, abstract.params)
    return jax.jit(from_params, out_shardings=shardings)(params)

  return graphdef, abstract, init
