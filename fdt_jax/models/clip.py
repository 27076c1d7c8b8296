"""The 'clip' family: two towers with CLIP heads, or FDT embeddings when the FDT head is on.

With `fdt=None` this is plain CLIP (class token -> ln_post -> proj, end-of-text ->
text_projection), the paper's baseline. With an FDTConfig, both towers' features
go through the shared FDT head instead; the CLIP projections stay in the model
(so the towers remain open_clip-shaped and exportable) but receive no gradient.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.fdt import FDT, FDTConfig, fdt_section, l2_normalize
from fdt_jax.models.registry import Family, register_family
from fdt_jax.models.text import TextConfig, TextTransformer
from fdt_jax.models.transformer import check_remat_policy, exact_gelu, quick_gelu
from fdt_jax.models.vit import VisionConfig, VisionTransformer
from fdt_jax.parallel import sharded

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


class TowerSizes:
  """What the data pipeline must produce for a model with `vision` and `text` towers."""

  @property
  def image_size(self) -> int:
    return self.vision.image_size

  @property
  def context_length(self) -> int:
    return self.text.context_length

  @property
  def vocab_size(self) -> int:
    return self.text.vocab_size


@dataclasses.dataclass(frozen=True)
class CLIPConfig(TowerSizes):
  embed_dim: int = 512
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  fdt: FDTConfig | None = None
  quick_gelu: bool = False  # OpenAI's original checkpoints use QuickGELU
  dtype: str = 'float32'  # compute dtype; parameters are always float32
  remat: bool = False  # recompute transformer blocks in the backward pass
  remat_policy: str = 'nothing_saveable'  # what a recomputed block keeps (transformer.REMAT_POLICIES)

  def __post_init__(self):
    check_remat_policy(self.remat_policy)


# Shapes as in open_clip's model configs (ViT-B-32.json, ViT-B-16.json, ViT-L-14.json).
VARIANTS = {
    'ViT-B-32': CLIPConfig(512, VisionConfig(224, 32, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    'ViT-B-16': CLIPConfig(512, VisionConfig(224, 16, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    'ViT-L-14': CLIPConfig(768, VisionConfig(224, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12)),
    # Small models for CPUs and tests.
    'ViT-S-16': CLIPConfig(256, VisionConfig(224, 16, 384, 12, 6), TextConfig(77, 49408, 384, 6, 6)),
    'ViT-T-8-64': CLIPConfig(128, VisionConfig(64, 8, 128, 4, 2), TextConfig(40, 256, 128, 3, 2)),
    'micro': CLIPConfig(32, VisionConfig(16, 8, 32, 1, 2), TextConfig(8, 64, 32, 1, 2)),
}


def clip_config(variant: str, *, fdt: dict | None = None, vision: dict | None = None,
                text: dict | None = None, **overrides) -> CLIPConfig:
  """A named variant with some fields replaced, e.g. clip_config('ViT-B-32', fdt={})."""
  if variant not in VARIANTS:
    raise ValueError(f'unknown model variant {variant!r}: use one of {sorted(VARIANTS)}')
  base = VARIANTS[variant]
  return dataclasses.replace(
      base,
      vision=dataclasses.replace(base.vision, **(vision or {})),
      text=dataclasses.replace(base.text, **(text or {})),
      fdt=None if fdt is None else FDTConfig(**fdt),
      **overrides)


def config_from_section(section: dict) -> CLIPConfig:
  """The `config.model` section (variant, fdt, vision, text, quick_gelu, ...) -> CLIPConfig."""
  cfg = dict(section)
  fdt = fdt_section(cfg.pop('fdt', None))
  if 'variant' not in cfg:
    raise ValueError(f'config.model.variant is not set: use one of {sorted(VARIANTS)}')
  return dataclasses.replace(
      clip_config(cfg.pop('variant'), vision=_set(cfg.pop('vision', None)),
                  text=_set(cfg.pop('text', None)), **cfg), fdt=fdt)


def _set(overrides) -> dict:
  """The overrides that are set (None keeps the variant's value)."""
  return {k: v for k, v in dict(overrides or {}).items() if v is not None}


class Encoded(NamedTuple):
  embedding: jax.Array  # [batch, dim], L2-normalised
  fdt_weights: jax.Array | None  # [batch, fdt_tokens] in FDT mode, else None


class CLIP(nnx.Module):

  def __init__(self, cfg: CLIPConfig, *, rngs: nnx.Rngs):
    if cfg.dtype not in DTYPES:
      raise ValueError(f'unknown dtype {cfg.dtype!r}: use one of {sorted(DTYPES)}')
    self.cfg = cfg
    dtype = DTYPES[cfg.dtype]
    activation = quick_gelu if cfg.quick_gelu else exact_gelu
    self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, activation=activation,
                                    remat=cfg.remat, dtype=dtype, rngs=rngs,
                                    remat_policy=cfg.remat_policy)
    self.text = TextTransformer(cfg.text, cfg.embed_dim, activation=activation,
                                remat=cfg.remat, dtype=dtype, rngs=rngs,
                                remat_policy=cfg.remat_policy)
    self.logit_scale = nnx.Param(sharded(nnx.initializers.constant(math.log(1 / 0.07)))(
        rngs.params(), ()))
    self.fdt = None if cfg.fdt is None else FDT(
        cfg.fdt, cfg.vision.width, cfg.text.width, dtype=dtype, rngs=rngs, remat=cfg.remat)

  def encode_image(self, images: jax.Array) -> Encoded:
    pooled, patch_features = self.visual(images)
    if self.fdt is None:
      return Encoded(l2_normalize(pooled), None)
    return Encoded(*self.fdt.encode_image(patch_features))

  def encode_text(self, tokens: jax.Array) -> Encoded:
    pooled, token_features, valid = self.text(tokens)
    if self.fdt is None:
      return Encoded(l2_normalize(pooled), None)
    return Encoded(*self.fdt.encode_text(token_features, valid))

  def fdt_image_features(self, images):
    """What the FDT head's image query reads (fdt_jax.inspect): the ViT's patch outputs."""
    return self.visual(images)[1]

  def fdt_text_features(self, tokens):
    """What the FDT head's text query reads, and where: (features, valid)."""
    return self.text(tokens)[1:]

  def __call__(self, batch: dict[str, jax.Array], *, teacher: bool = False) -> dict:
    """batch: 'images' [batch, H, W, 3] normalised, 'tokens' int32 [batch, length]."""
    del teacher  # no EMA teacher in this family
    image, text = self.encode_image(batch['images']), self.encode_text(batch['tokens'])
    out = {
        'image_embedding': image.embedding,
        'text_embedding': text.embedding,
        'logit_scale': self.logit_scale[...],
    }
    if self.fdt is not None:
      out['image_fdt_weights'] = image.fdt_weights
      out['text_fdt_weights'] = text.fdt_weights
    return out


def batch_metrics(outputs: dict, batch: dict) -> dict[str, jax.Array]:
  """The family's per-step statistics: FDT's health over the whole batch (none for CLIP)."""
  del batch
  if 'image_fdt_weights' not in outputs:
    return {}
  return fdt_health(outputs['image_fdt_weights'], outputs['text_fdt_weights'])


def fdt_health(image_weights: jax.Array, text_weights: jax.Array) -> dict[str, jax.Array]:
  """How the grounding behaves in one batch, logged every step so a collapse shows early.

  image/text_weights: [batch, fdt_tokens], rows summing to 1. Active = non-zero weight.
  A collapse shows as few tokens in use across the batch (every input picks the same
  handful), an effective count per input near 1, or agreement near 0 (the two modalities
  of a pair use different tokens).
  """
  image_weights = image_weights.astype(jnp.float32)
  text_weights = text_weights.astype(jnp.float32)
  used = jnp.any(image_weights > 0, axis=0) | jnp.any(text_weights > 0, axis=0)  # [fdt_tokens]
  return {
      'fdt/active_tokens_image': jnp.mean(jnp.sum(image_weights > 0, axis=-1)),
      'fdt/active_tokens_text': jnp.mean(jnp.sum(text_weights > 0, axis=-1)),
      # 1 / sum w^2: the number of equally weighted tokens with the same spread.
      'fdt/effective_tokens_image': jnp.mean(1 / jnp.sum(image_weights ** 2, axis=-1)),
      'fdt/effective_tokens_text': jnp.mean(1 / jnp.sum(text_weights ** 2, axis=-1)),
      'fdt/tokens_in_use': jnp.sum(used),  # over the batch, either modality
      'fdt/unused_tokens': jnp.sum(~used),
      # sum_c min(w_image, w_text) per pair: 1 when image and caption use the same weighted tokens.
      'fdt/agreement': jnp.mean(jnp.sum(jnp.minimum(image_weights, text_weights), axis=-1)),
  }


register_family(Family(
    name='clip',
    make_config=config_from_section,
    make_model=lambda cfg, rngs: CLIP(cfg, rngs=rngs),
    batch_fields=('images', 'tokens'),
    outputs=('image_embedding', 'text_embedding', 'logit_scale', 'image_fdt_weights',
             'text_fdt_weights'),
    config_type=CLIPConfig,
    batch_metrics=batch_metrics,
))
