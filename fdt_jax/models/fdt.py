"""Finite Discrete Tokens (Chen et al., CVPR 2023): the shared grounding head.

For one input with positions i (image patches, or text tokens up to end-of-text):

    q_i  = query(x_i)                               # [positions, fdt_dim]
    s_ic = <q_i, F_c> / sqrt(fdt_dim) / temperature # [positions, fdt_tokens]
    r_c  = max over valid i of s_ic                 # [fdt_tokens]  (mean, sum: options)
    w    = sparsemax(r)                             # [fdt_tokens], sums to 1 (softmax, sigmoid: options)
    e    = normalize(w @ F)                         # [fdt_dim], the embedding the loss sees

F (`fdt_tokens`) is one table shared by both modalities; each modality has its own
query network.

With max pooling (the default), s and r are computed together by
`fdt_jax.ops.max_pooled_scores` (`max_pool='lean'`): the same values, with the scale
1 / (sqrt(fdt_dim) temperature) applied to q, but the scores [positions, fdt_tokens] are
never held whole and the backward pass gathers at the argmax positions.
`max_pool='plain'` is the einsum-then-max form above, line by line.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.transformer import constrain, exact_gelu, layer_norm, sharded
from fdt_jax.ops import max_pooled_scores, normalize_scores

POOLINGS = ('max', 'mean', 'sum')
NORMALIZERS = ('sparsemax', 'softmax', 'sigmoid')
MAX_POOLS = ('lean', 'plain')


@dataclasses.dataclass(frozen=True)
class FDTConfig:
  num_tokens: int = 16384
  dim: int = 512
  temperature: float = 1000.0  # the authors' value, held constant
  init_scale: float = 1.0  # the table starts N(0, init_scale^2); the authors' is 1
  pooling: str = 'max'
  normalizer: str = 'sparsemax'
  max_pool: str = 'lean'  # how max pooling is computed; same values (module docstring)

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f'unknown FDT pooling {self.pooling!r}: use one of {POOLINGS}')
    if self.normalizer not in NORMALIZERS:
      raise ValueError(f'unknown FDT normalizer {self.normalizer!r}: use one of {NORMALIZERS}')
    if self.max_pool not in MAX_POOLS:
      raise ValueError(f'unknown FDT max_pool {self.max_pool!r}: use one of {MAX_POOLS}')


def fdt_section(section) -> FDTConfig | None:
  """A config's `model.fdt` section -> FDTConfig, or None when it is absent or has
  enabled=False (a section without `enabled` is on when it sets anything)."""
  fdt = dict(section or {})
  return FDTConfig(**fdt) if fdt.pop('enabled', bool(fdt)) else None


class QueryNetwork(nnx.Module):
  """LayerNorm -> Dense -> GELU -> LayerNorm -> Dense, from a tower's width to fdt_dim."""

  def __init__(self, width: int, dim: int, *, dtype, rngs: nnx.Rngs, remat: bool = False):
    self.remat = remat
    self.ln_1 = layer_norm(width, dtype, rngs)
    self.fc_1 = nnx.Linear(width, dim, dtype=dtype, rngs=rngs,
                           kernel_init=sharded(nnx.initializers.lecun_normal(), 'embed', 'fdt_query'),
                           bias_init=sharded(nnx.initializers.zeros, 'fdt_query'))
    self.ln_2 = layer_norm(dim, dtype, rngs)
    self.fc_2 = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs,
                           kernel_init=sharded(nnx.initializers.lecun_normal(), 'fdt_query', 'fdt_embed'),
                           bias_init=sharded(nnx.initializers.zeros, 'fdt_embed'))

  def __call__(self, x):
    if not self.remat:
      return _query_layers(self, x)
    # With remat on, the backward keeps the two matmuls' outputs and recomputes the layer
    # norms and the GELU: plain autodiff keeps 7 elementwise intermediates of [batch,
    # positions, width] (172 of the head's 275 MiB of residuals at ViT-B/16, batch 32,
    # float32). Measured step temp memory at batch 128, bf16: 4.11 -> 3.99 GiB with XLA's
    # memory-aware scheduler, no change with XLA:CPU's default one (README "Performance").
    return nnx.remat(_query_layers, policy=jax.checkpoint_policies.dots_saveable)(self, x)


def _query_layers(query: QueryNetwork, x):
  return query.fc_2(query.ln_2(exact_gelu(query.fc_1(query.ln_1(x)))))


def pool_scores(scores: jax.Array, valid: jax.Array | None, pooling: str) -> jax.Array:
  """[batch, positions, tokens] -> [batch, tokens], over valid positions only."""
  if valid is None:
    valid = jnp.ones(scores.shape[:2], bool)
  valid = valid[:, :, None]
  if pooling == 'max':
    return jnp.max(jnp.where(valid, scores, -jnp.inf), axis=1)
  total = jnp.sum(jnp.where(valid, scores, 0), axis=1)
  if pooling == 'sum':
    return total
  return total / jnp.maximum(jnp.sum(valid, axis=1), 1).astype(scores.dtype)


class FDT(nnx.Module):
  """The shared token table and one query network per modality."""

  def __init__(self, cfg: FDTConfig, image_width: int, text_width: int, *, dtype, rngs: nnx.Rngs,
               remat: bool = False):
    self.cfg = cfg
    self.dtype = dtype
    self.fdt_tokens = nnx.Param(sharded(nnx.initializers.normal(cfg.init_scale), 'fdt_tokens', 'fdt_embed')(
        rngs.params(), (cfg.num_tokens, cfg.dim)))
    self.query_image = QueryNetwork(image_width, cfg.dim, dtype=dtype, rngs=rngs, remat=remat)
    self.query_text = QueryNetwork(text_width, cfg.dim, dtype=dtype, rngs=rngs, remat=remat)

  def ground(self, query: QueryNetwork, features: jax.Array, valid: jax.Array | None):
    """features [batch, positions, width] -> (embedding [batch, fdt_dim], weights [batch, fdt_tokens])."""
    tokens = self.fdt_tokens.astype(self.dtype)  # [fdt_tokens, fdt_dim]
    q = query(features)  # [batch, positions, fdt_dim]
    scale = 1.0 / (math.sqrt(self.cfg.dim) * self.cfg.temperature)
    if self.cfg.pooling == 'max' and self.cfg.max_pool == 'lean':
      pooled = max_pooled_scores((q * scale).astype(self.dtype), tokens, valid)
    else:
      scores = jnp.einsum('bnd,cd->bnc', q, tokens) / (math.sqrt(self.cfg.dim) * self.cfg.temperature)
      scores = constrain(scores, 'act_batch', 'act_length', 'act_fdt_tokens')
      pooled = pool_scores(scores, valid, self.cfg.pooling)
    pooled = constrain(pooled, 'act_batch', 'act_fdt_tokens')  # [batch, fdt_tokens]
    weights = normalize_scores(self.cfg.normalizer, pooled.astype(jnp.float32))
    embedding = weights.astype(self.dtype) @ tokens  # [batch, fdt_dim]
    if self.cfg.normalizer == 'sigmoid':  # sigmoid weights do not sum to one
      embedding = embedding / jnp.sum(weights, axis=-1, keepdims=True).astype(self.dtype)
    return l2_normalize(embedding), weights

  def encode_image(self, patch_features: jax.Array):
    return self.ground(self.query_image, patch_features, None)

  def encode_text(self, token_features: jax.Array, valid: jax.Array):
    return self.ground(self.query_text, token_features, valid)


def l2_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)
