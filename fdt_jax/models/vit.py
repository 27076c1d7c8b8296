"""The image tower: a ViT laid out like OpenAI CLIP's VisionTransformer."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.transformer import Transformer, constrain, layer_norm, normal, sharded


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  image_size: int = 224
  patch_size: int = 32
  width: int = 768
  layers: int = 12
  heads: int = 12
  mlp_ratio: float = 4.0


class VisionTransformer(nnx.Module):
  """conv1 -> [class; patches] + positions -> ln_pre -> transformer -> ln_post(class) @ proj."""

  def __init__(self, cfg: VisionConfig, embed_dim: int, *, activation, remat: bool, dtype,
               rngs: nnx.Rngs, remat_policy: str = 'nothing_saveable'):
    if cfg.image_size % cfg.patch_size:
      raise ValueError(f'image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}')
    self.cfg = cfg
    self.dtype = dtype
    width, grid = cfg.width, cfg.image_size // cfg.patch_size
    scale = width ** -0.5
    self.conv1 = nnx.Conv(
        3, width, kernel_size=(cfg.patch_size, cfg.patch_size), strides=cfg.patch_size,
        padding='VALID', use_bias=False, dtype=dtype, rngs=rngs,
        kernel_init=sharded(nnx.initializers.lecun_normal(), None, None, None, 'embed'))
    self.class_embedding = nnx.Param(sharded(normal(scale), 'embed')(rngs.params(), (width,)))
    self.positional_embedding = nnx.Param(
        sharded(normal(scale), None, 'embed')(rngs.params(), (grid * grid + 1, width)))
    self.ln_pre = layer_norm(width, dtype, rngs)
    self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, causal=False,
                                   activation=activation, remat=remat, dtype=dtype, rngs=rngs,
                                   remat_policy=remat_policy)
    self.ln_post = layer_norm(width, dtype, rngs)
    self.proj = nnx.Param(sharded(normal(scale), 'embed', 'proj')(rngs.params(), (width, embed_dim)))

  def __call__(self, images: jax.Array, replace: jax.Array | None = None,
               replacement: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """images: [batch, height, width, 3], normalised; `replace` (bool [batch, patches])
    swaps those patches' embeddings for `replacement` [width] (a learned mask embedding).

    Returns the CLIP head output [batch, embed_dim] (not normalised) and the patch
    features [batch, patches, width]: the last block's outputs without the class
    token and before ln_post, which is what the FDT head reads.
    """
    x = self.conv1(images.astype(self.dtype))  # [batch, grid, grid, width]
    x = x.reshape(x.shape[0], -1, x.shape[-1])  # [batch, patches, width]
    if replace is not None:
      x = jnp.where(replace[..., None], replacement.astype(self.dtype), x)
    cls = jnp.broadcast_to(self.class_embedding.astype(self.dtype), (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding.astype(self.dtype)
    x = constrain(x, 'act_batch', 'act_length', 'act_embed')
    x = self.transformer(self.ln_pre(x))
    pooled = self.ln_post(x[:, 0]) @ self.proj.astype(self.dtype)
    return pooled, x[:, 1:]
