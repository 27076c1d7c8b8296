"""Pre-LN transformer blocks shared by the image and text towers.

Names follow OpenAI CLIP / open_clip (`transformer.resblocks.3.attn.in_proj`,
`mlp.c_fc`, `ln_1`, ...), so every parameter has exactly one counterpart in an
open_clip state_dict. Layouts are Flax's (kernels are [in, out]); attention
kernels keep their heads axis so that tensor parallelism splits whole heads:

  attn.in_proj.kernel   [width, 3, heads, head_dim]  <-> in_proj_weight [3*width, width]
  attn.out_proj.kernel  [heads, head_dim, width]     <-> out_proj.weight [width, width]

Parameters and activations carry logical axis names ("embed", "mlp", "heads",
...); the rules that map them onto a device mesh live in the config.
"""


import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.parallel import constrain, sharded  # noqa: F401 (fdt.py, vit.py, text.py import them here)

normal = nnx.initializers.normal
zeros = nnx.initializers.zeros
ones = nnx.initializers.ones


def layer_norm(width: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # CLIP's LayerNorm: eps 1e-5, statistics in float32 whatever the compute dtype.
  return nnx.LayerNorm(
      width, epsilon=1e-5, dtype=dtype,
      scale_init=sharded(ones, 'norm'), bias_init=sharded(zeros, 'norm'), rngs=rngs)


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x):
  return jax.nn.gelu(x, approximate=False)


class Attention(nnx.Module):
  """Multi-head self-attention with a fused qkv projection."""

  def __init__(self, width: int, heads: int, *, causal: bool, proj_std: float, dtype, rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f'width {width} is not divisible by heads {heads}')
    head_dim = width // heads
    self.causal = causal
    self.dtype = dtype
    key = rngs.params
    self.in_proj = nnx.Dict(
        kernel=nnx.Param(sharded(normal(width ** -0.5), 'embed', None, 'heads', 'kv')(
            key(), (width, 3, heads, head_dim))),
        bias=nnx.Param(sharded(zeros, None, 'heads', 'kv')(key(), (3, heads, head_dim))))
    self.out_proj = nnx.Dict(
        kernel=nnx.Param(sharded(normal(proj_std), 'heads', 'kv', 'embed')(
            key(), (heads, head_dim, width))),
        bias=nnx.Param(sharded(zeros, 'norm')(key(), (width,))))

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """x: [batch, length, width]; key_mask: bool [batch, length], False for positions no
    query may attend to (padding)."""
    kernel = self.in_proj['kernel'].astype(self.dtype)
    bias = self.in_proj['bias'].astype(self.dtype)[:, None, None]
    qkv = jnp.einsum('bld,dthk->tblhk', x, kernel) + bias
    qkv = constrain(qkv, None, 'act_batch', 'act_length', 'act_heads', None)  # [3, batch, length, heads, head_dim]
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = jax.nn.dot_product_attention(qkv[0], qkv[1], qkv[2], mask=mask, is_causal=self.causal)
    out = jnp.einsum('blhk,hkd->bld', out, self.out_proj['kernel'].astype(self.dtype))
    return out + self.out_proj['bias'].astype(self.dtype)


class MLP(nnx.Module):

  def __init__(self, width: int, hidden: int, *, proj_std: float, activation, dtype, rngs: nnx.Rngs):
    self.activation = activation
    self.c_fc = nnx.Linear(
        width, hidden, dtype=dtype, rngs=rngs,
        kernel_init=sharded(normal((2 * width) ** -0.5), 'embed', 'mlp'),
        bias_init=sharded(zeros, 'mlp'))
    self.c_proj = nnx.Linear(
        hidden, width, dtype=dtype, rngs=rngs,
        kernel_init=sharded(normal(proj_std), 'mlp', 'embed'),
        bias_init=sharded(zeros, 'norm'))

  def __call__(self, x):
    h = constrain(self.activation(self.c_fc(x)), 'act_batch', 'act_length', 'act_mlp')
    return self.c_proj(h)


class ResidualAttentionBlock(nnx.Module):

  def __init__(self, width, heads, mlp_ratio, *, causal, proj_std, activation, dtype, rngs):
    self.ln_1 = layer_norm(width, dtype, rngs)
    self.attn = Attention(width, heads, causal=causal, proj_std=proj_std, dtype=dtype, rngs=rngs)
    self.ln_2 = layer_norm(width, dtype, rngs)
    self.mlp = MLP(width, int(width * mlp_ratio), proj_std=proj_std, activation=activation,
                   dtype=dtype, rngs=rngs)

  def __call__(self, x, key_mask=None):
    x = x + self.attn(self.ln_1(x), key_mask)
    x = x + self.mlp(self.ln_2(x))
    return constrain(x, 'act_batch', 'act_length', 'act_embed')


# What a rematerialised block keeps from its forward pass for the backward (jax.checkpoint_policies):
# nothing (recompute the whole block), every matmul's output, or those of the matmuls without
# batch dimensions (the projections and MLP, not attention's scores). README "Performance".
REMAT_POLICIES = ('nothing_saveable', 'dots_with_no_batch_dims_saveable', 'dots_saveable')


def check_remat_policy(policy: str) -> None:
  if policy not in REMAT_POLICIES:
    raise ValueError(f'unknown remat_policy {policy!r}: use one of {REMAT_POLICIES} '
                     '(--config.model.remat_policy=...)')


class Transformer(nnx.Module):
  """A stack of residual blocks; `remat` recomputes each block in the backward pass,
  keeping what `remat_policy` says."""

  def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, *, causal: bool,
               activation, remat: bool, dtype, rngs: nnx.Rngs,
               remat_policy: str = 'nothing_saveable'):
    check_remat_policy(remat_policy)
    proj_std = width ** -0.5 * (2 * layers) ** -0.5  # open_clip's initialisation
    self.remat = remat
    self.remat_policy = remat_policy
    self.resblocks = nnx.List([
        ResidualAttentionBlock(width, heads, mlp_ratio, causal=causal, proj_std=proj_std,
                               activation=activation, dtype=dtype, rngs=rngs)
        for _ in range(layers)])

  def __call__(self, x, key_mask=None):
    policy = getattr(jax.checkpoint_policies, self.remat_policy)
    apply = nnx.remat(_apply_block, policy=policy) if self.remat else _apply_block
    for block in self.resblocks:
      x = apply(block, x, key_mask)
    return x


def _apply_block(block, x, key_mask):
  return block(x, key_mask)

