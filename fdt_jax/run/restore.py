"""A run's parameters back from its checkpoints: on a mesh (evaluate, the trainer) or on
one host without a mesh (export, notebooks)."""

from typing import Any, NamedTuple

import jax
from flax import nnx
from jax.sharding import Mesh

from fdt_jax import parallel
from fdt_jax.models import build_model, model_config
from fdt_jax.run.checkpoints import Checkpointer
from fdt_jax.run.workdir import load_config, tokenizer_path


def abstract_params(model, mesh: Mesh, rules, seed: int = 0):
  """(graphdef, params as ShapeDtypeStructs carrying their shardings on `mesh`);
  `model`: the config.model section or a family's built config."""
  with nnx.logical_axis_rules(rules):  # eval_shape resolves names when a mesh is set
    graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(model, seed)), nnx.Param)
  shardings = parallel.param_shardings(params, mesh, rules)
  return graphdef, jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)


def restore_params(workdir: str, abstract, step: int | None = None):
  """(step, params) of checkpoint `step` (default: the latest), laid out as `abstract` says."""
  return Checkpointer(workdir, read_only=True).restore_params(step, abstract)


def restore_params_on_host(workdir: str, model, step: int | None = None):
  """(step, params) on this host's first device, without a mesh."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          nnx.state(nnx.eval_shape(lambda: build_model(model, 0)), nnx.Param))
  return restore_params(workdir, abstract, step)


class Run(NamedTuple):
  model: Any  # with the checkpoint's parameters
  tokenizer: Any  # fdt_jax.data.tokenizer.Tokenizer
  config: Any  # the run's config
  step: int


def load_run(workdir: str, step: int | None = None) -> Run:
  """(model with the checkpoint's parameters, its tokenizer, the run's config, the step), on
  one host."""
  from fdt_jax.data.clip_bpe import make_tokenizer
  config = load_config(workdir)
  cfg = model_config(config.model)
  model = build_model(config.model, 0)
  step, params = restore_params_on_host(workdir, config.model, step)
  nnx.update(model, params)
  path = tokenizer_path(workdir) or config.data.tokenizer
  return Run(model, make_tokenizer(path, cfg.context_length), config, int(step))
