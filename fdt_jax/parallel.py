"""One code path from a laptop CPU to a TPU pod: mesh, sharding rules, constraints,
multi-host start-up.

The model names the axes of its parameters and activations ("embed", "mlp",
"heads", "fdt_tokens", "act_batch", ...); `config.sharding_rules` maps those
logical names to the mesh axes (data, fsdp, tensor). Nothing else in the code
mentions devices.
"""

import logging
import math
import os

import jax
import numpy as np
from flax import nnx
from flax.linen import with_logical_constraint
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # the batch is split over both; fsdp also splits the weights

# Logical axis -> mesh axes. Parameters: embed, mlp, heads, kv, vocab, proj, norm,
# fdt_tokens, fdt_embed, fdt_query. Activations: act_*. Every name the model uses
# must be listed (None = replicated), and one array must not use a mesh axis twice.
DEFAULT_RULES = (
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('vocab', 'tensor'),
    ('fdt_tokens', 'tensor'),
    ('fdt_embed', 'fsdp'),
    ('fdt_query', 'tensor'),
    ('kv', None),
    ('proj', None),
    ('norm', None),
    ('act_batch', BATCH_AXES),
    ('act_length', None),
    ('act_embed', None),
    ('act_mlp', 'tensor'),
    ('act_heads', 'tensor'),
    ('act_fdt_tokens', 'tensor'),
)


def sharded(init, *axes):
  """An initializer whose parameter carries logical axis names."""
  return nnx.with_partitioning(init, axes)


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
  """Names the axes of an activation; a no-op unless axis rules are in scope."""
  return with_logical_constraint(x, axes)


def initialize_distributed(mode: str = 'auto') -> None:
  """Starts jax.distributed on multi-host set-ups, before anything touches a device.

  - JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID: explicit (GPU clusters,
    several local CPU processes).
  - SLURM with more than one task, or `mode='yes'` (Cloud TPU VM pods): JAX's own
    auto-detection.
  """
  if mode not in ('auto', 'yes', 'no'):
    raise ValueError(f"--multihost={mode!r}: use 'auto', 'yes' or 'no'")
  if mode == 'no':
    return
  if os.environ.get('JAX_PLATFORMS', '') == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    missing = [v for v in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if v not in os.environ]
    if missing:
      raise ValueError(f'JAX_COORDINATOR_ADDRESS is set but {", ".join(missing)} is not: set all three')
    jax.distributed.initialize(
        os.environ['JAX_COORDINATOR_ADDRESS'],
        num_processes=int(os.environ['JAX_NUM_PROCESSES']),
        process_id=int(os.environ['JAX_PROCESS_ID']))
  elif mode == 'yes' or int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize()
  else:
    return
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(mesh_config) -> Mesh:
  """A mesh over all devices with axes (data, fsdp, tensor); one size may be -1 (fill)."""
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  n = jax.device_count()
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))} does not fit {n} devices')
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n:
    raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, '
                     f'there are {n}: change --config.mesh.* (-1 fills an axis)')
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  return mesh.shape['data'] * mesh.shape['fsdp']


def check_batch_size(batch_size: int, mesh: Mesh, accumulation_steps: int = 1) -> None:
  """Each microbatch must split evenly over the batch shards and the hosts."""
  shards = batch_shards(mesh)
  multiple = int(np.lcm(shards, jax.process_count())) * accumulation_steps
  if batch_size % multiple:
    micro = f' in {accumulation_steps} microbatches' if accumulation_steps > 1 else ''
    raise ValueError(
        f'batch_size {batch_size} does not divide{micro} over the {shards} batch shards '
        f'(data={mesh.shape["data"]} x fsdp={mesh.shape["fsdp"]}) and {jax.process_count()} '
        f'processes: use a multiple of {multiple}')


def param_shardings(abstract_state, mesh: Mesh, rules):
  """NamedShardings for an nnx.State whose Variables carry logical axis names."""
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Per-host arrays [local_batch, ...] -> global jax.Arrays split along the batch shards."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def to_host(tree):
  """Fully replicated or multi-host global arrays -> NumPy on every host."""
  from jax.experimental import multihost_utils
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def shardings_of(abstract_tree):
  """The shardings carried by a tree of ShapeDtypeStructs (e.g. an abstract train state)."""
  return jax.tree.map(lambda a: a.sharding, abstract_tree)
