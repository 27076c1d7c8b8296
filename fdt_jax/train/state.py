"""The train state (step, params, optimizer state), created directly in its sharded layout."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from fdt_jax import parallel
from fdt_jax.models import MODELS, CLIPConfig
from fdt_jax.train.optimizer import path_name


@struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: Any


def build_model(model_cfg: CLIPConfig, seed: int) -> nnx.Module:
  with nnx.use_eager_sharding(False):
    return MODELS['clip'][0](model_cfg, rngs=nnx.Rngs(seed))


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


def abstract_params(model_cfg: CLIPConfig, mesh: Mesh, rules, seed: int = 0):
  """(graphdef, params as ShapeDtypeStructs carrying their shardings on `mesh`)."""
  with nnx.logical_axis_rules(rules):  # eval_shape resolves names when a mesh is set
    graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, seed)), nnx.Param)
  shardings = parallel.param_shardings(params, mesh, rules)
  return graphdef, jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)


def prepare_train_state(model_cfg: CLIPConfig, tx: optax.GradientTransformation, mesh: Mesh,
                        rules, seed: int):
  """Returns (graphdef, abstract_state, init).

  `abstract_state` holds ShapeDtypeStructs with their target shardings (what a
  checkpoint restores into). `init(params=None)` creates the state with every
  array born on its own shard, never whole on one device; `params` (e.g. imported
  open_clip weights, host arrays) replaces the random initialisation.
  """
  graphdef, sharded_params = abstract_params(model_cfg, mesh, rules, seed)
  params_shardings = state_shardings(sharded_params)

  def from_params(params):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def random_init():
    return from_params(nnx.state(build_model(model_cfg, seed), nnx.Param))

  abstract = jax.eval_shape(random_init)
  shardings = TrainState(
      step=parallel.replicated(mesh), params=params_shardings,
      opt_state=_opt_state_shardings(abstract.opt_state, abstract.params, params_shardings, mesh))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)

  def init(params: nnx.State | None = None) -> TrainState:
    if params is None:
      return jax.jit(random_init, out_shardings=shardings)()
    params = jax.tree.map(lambda p, a: jax.device_put(np.asarray(p, a.dtype), a.sharding),
                          params, abstract.params)
    return jax.jit(from_params, out_shardings=shardings)(params)

  return graphdef, abstract, init


def state_shardings(abstract_state):
  return jax.tree.map(lambda a: a.sharding, abstract_state)
