"""The 'mamo' family: jointly masked multimodal modelling (MAMO, Zhao et al., SIGIR 2023,
arXiv 2210.04183; no official code), with an EMA teacher of the whole model.

    image -> ViT (patches, some replaced by a learned mask embedding)
    text  -> bidirectional text transformer (words, some replaced by a mask embedding)
    fusion: blocks over the text positions, each self-attention, cross-attention to the
            image patches, MLP (ALBEF-style: the usual split in this family), and the
            same blocks over the patches with cross-attention to the words

One student pass sees the unmasked pair (ITC, ITM) and one the jointly masked pair (MLM,
the explicit patch target, the implicit target); the teacher (EMA weights, no gradient)
sees the unmasked pair and gives the targets. What the paper leaves open is our choice
and a config value (configs/tiny.py:mamo says which).

Our choices, beside the paper's: masked positions get a learned mask embedding (no token
id is taken from the tokenizer, so the data and its tokenizer stay the CLIP family's); the
fusion encoder has two streams, ALBEF's over the words (cross-attention to the patches;
ITM and MLM read it) and its mirror over the patches (cross-attention to the words;
`image_fusion`), so the implicit target has the teacher's fusion outputs at the masked
words and at the masked patches; ITM negatives are sampled from the in-batch
similarities (ALBEF's recipe; ops.sample_hard_negatives) with uniforms drawn in prepare_batch.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.clip import DTYPES, VARIANTS, Encoded, TowerSizes, _set
from fdt_jax.models.fdt import l2_normalize
from fdt_jax.models.registry import Family, register_family
from fdt_jax.models.text import TextConfig, TextTransformer, end_of_text_position, valid_positions
from fdt_jax.models.transformer import (MLP, Attention, exact_gelu, layer_norm, normal,
                                        quick_gelu, sharded, zeros)
from fdt_jax.models.vit import VisionConfig, VisionTransformer
from fdt_jax.ops import sample_hard_negatives


@dataclasses.dataclass(frozen=True)
class MAMOConfig(TowerSizes):
  embed_dim: int = 256
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  fusion_layers: int = 6  # BERT-base's last 6 layers in ALBEF; the paper's split is unknown
  # Also fusion blocks over the patches (cross-attention to the words), so the implicit target
  # has fusion outputs at masked patches too, as the paper's (both modalities); False: words only.
  image_fusion: bool = True
  image_mask_ratio: float = 0.75  # the paper's (review)
  text_mask_ratio: float = 0.25  # the paper's (review)
  quick_gelu: bool = False
  dtype: str = 'float32'
  remat: bool = False


def mamo_config(section: dict) -> MAMOConfig:
  """The `config.model` section: `variant` (the towers of a clip variant), `vision` and
  `text` overrides, and MAMOConfig's other fields."""
  cfg = dict(section)
  variant = cfg.pop('variant', None)
  if variant not in VARIANTS:
    raise ValueError(f'config.model.variant = {variant!r}: use one of {sorted(VARIANTS)}')
  base = VARIANTS[variant]
  return MAMOConfig(embed_dim=base.embed_dim,
                    vision=dataclasses.replace(base.vision, **_set(cfg.pop('vision', None))),
                    text=dataclasses.replace(base.text, **_set(cfg.pop('text', None))), **cfg)


class CrossAttention(nnx.Module):
  """Queries from one sequence, keys and values from another (of another width)."""

  def __init__(self, width: int, context_width: int, heads: int, *, dtype, rngs: nnx.Rngs):
    head_dim = width // heads
    key = rngs.params
    self.dtype = dtype
    self.q = nnx.Param(sharded(normal(width ** -0.5), 'embed', 'heads', 'kv')(key(), (width, heads, head_dim)))
    self.kv = nnx.Param(sharded(normal(context_width ** -0.5), 'embed', None, 'heads', 'kv')(
        key(), (context_width, 2, heads, head_dim)))
    self.out = nnx.Param(sharded(normal(width ** -0.5), 'heads', 'kv', 'embed')(key(), (heads, head_dim, width)))
    self.out_bias = nnx.Param(sharded(zeros, 'norm')(key(), (width,)))

  def __call__(self, x, context, context_valid=None):
    q = jnp.einsum('bld,dhk->blhk', x, self.q.astype(self.dtype))
    kv = jnp.einsum('bsd,dthk->tbshk', context, self.kv.astype(self.dtype))
    mask = None if context_valid is None else context_valid[:, None, None, :]
    out = jax.nn.dot_product_attention(q, kv[0], kv[1], mask=mask)
    return jnp.einsum('blhk,hkd->bld', out, self.out.astype(self.dtype)) + self.out_bias.astype(self.dtype)


class FusionBlock(nnx.Module):
  """Self-attention over one modality's positions, cross-attention to the other's, MLP."""

  def __init__(self, width: int, context_width: int, heads: int, *, activation, dtype, rngs):
    proj_std = width ** -0.5
    self.ln_1 = layer_norm(width, dtype, rngs)
    self.attn = Attention(width, heads, causal=False, proj_std=proj_std, dtype=dtype, rngs=rngs)
    self.ln_cross = layer_norm(width, dtype, rngs)
    self.ln_context = layer_norm(context_width, dtype, rngs)
    self.cross = CrossAttention(width, context_width, heads, dtype=dtype, rngs=rngs)
    self.ln_2 = layer_norm(width, dtype, rngs)
    self.mlp = MLP(width, 4 * width, proj_std=proj_std, activation=activation, dtype=dtype, rngs=rngs)

  def __call__(self, x, valid, context, context_valid=None):
    x = x + self.attn(self.ln_1(x), valid)
    x = x + self.cross(self.ln_cross(x), self.ln_context(context), context_valid)
    return x + self.mlp(self.ln_2(x))


class MAMO(nnx.Module):

  def __init__(self, cfg: MAMOConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = DTYPES[cfg.dtype]
    activation = quick_gelu if cfg.quick_gelu else exact_gelu
    vision_width, width = cfg.vision.width, cfg.text.width
    self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, activation=activation,
                                    remat=cfg.remat, dtype=dtype, rngs=rngs)
    self.text = TextTransformer(cfg.text, cfg.embed_dim, activation=activation, remat=cfg.remat,
                                dtype=dtype, rngs=rngs, causal=False)
    self.patch_mask_embedding = nnx.Param(sharded(normal(0.02), 'embed')(rngs.params(), (vision_width,)))
    self.word_mask_embedding = nnx.Param(sharded(normal(0.02), 'embed')(rngs.params(), (width,)))
    self.logit_scale = nnx.Param(sharded(nnx.initializers.constant(math.log(1 / 0.07)))(
        rngs.params(), ()))
    self.fusion = nnx.List([FusionBlock(width, vision_width, cfg.text.heads, activation=activation,
                                        dtype=dtype, rngs=rngs) for _ in range(cfg.fusion_layers)])
    self.ln_fusion = layer_norm(width, dtype, rngs)
    dense = lambda i, o: nnx.Linear(i, o, dtype=dtype, rngs=rngs,
                                    kernel_init=sharded(normal(i ** -0.5), 'embed', None),
                                    bias_init=sharded(zeros, None))
    self.itm_head = dense(width, 2)
    self.mlm_head = dense(width, cfg.text.vocab_size)
    self.implicit_head = dense(width, width)  # fused outputs of the masked pair -> the teacher's
    self.patch_decoder = nnx.Sequential(dense(vision_width, vision_width), activation,
                                        dense(vision_width, vision_width))
    if cfg.image_fusion:
      self.image_fusion = nnx.List([
          FusionBlock(vision_width, width, cfg.vision.heads, activation=activation, dtype=dtype,
                      rngs=rngs) for _ in range(cfg.fusion_layers)])
      self.ln_image_fusion = layer_norm(vision_width, dtype, rngs)
      self.implicit_image_head = dense(vision_width, vision_width)

  def fuse(self, text_features, tokens, patches):
    valid = valid_positions(tokens)
    x = text_features
    for block in self.fusion:
      x = block(x, valid, patches)
    return self.ln_fusion(x)

  def fuse_image(self, patches, text_features, tokens):
    """The image stream: blocks over the patches with cross-attention to the words."""
    x = patches
    for block in self.image_fusion:
      x = block(x, None, text_features, valid_positions(tokens))
    return self.ln_image_fusion(x)

  def encode_image(self, images) -> Encoded:
    """The contrastive (ITC) embedding, for retrieval and zero-shot evaluators."""
    return Encoded(l2_normalize(self.visual(images)[0]), None)

  def encode_text(self, tokens) -> Encoded:
    return Encoded(l2_normalize(self.text(tokens)[0]), None)

  def encode(self, images, tokens, patch_mask=None, word_mask=None):
    """(image embedding, text embedding (L2-normalised), patch features, text features)."""
    pooled_image, patches = self.visual(images, patch_mask, self.patch_mask_embedding[...])
    pooled_text, text_features, _ = self.text(tokens, word_mask, self.word_mask_embedding[...])
    return l2_normalize(pooled_image), l2_normalize(pooled_text), patches, text_features

  def image_features(self, images):
    """Patch features of whole images, what the fusion encoder reads (cached for ITM
    re-ranking)."""
    return self.visual(images)[1]

  def text_features(self, tokens):
    return self.text(tokens)[1]

  def match_logits(self, text_features, tokens, patches):
    """ITM logits [batch, 2] (no match, match) of captions with images, from their features."""
    fused = self.fuse(text_features, tokens, patches)
    return self.itm_head(fused[jnp.arange(tokens.shape[0]), end_of_text_position(tokens)])

  def match_and_fill(self, images, tokens, word_mask):
    """For evaluation: (ITM logits [batch, 2] of each image with its caption, MLM logits
    [batch, length, vocab] of the caption with the `word_mask` words masked), images whole."""
    patches = self.image_features(images)
    _, masked_text, _ = self.text(tokens, word_mask, self.word_mask_embedding[...])
    return (self.match_logits(self.text_features(tokens), tokens, patches),
            self.mlm_head(self.fuse(masked_text, tokens, patches)))

  def __call__(self, batch: dict, *, teacher: bool = False) -> dict:
    images, tokens = batch['images'], batch['tokens']
    image_embedding, text_embedding, patches, text_features = self.encode(images, tokens)
    fused = self.fuse(text_features, tokens, patches)
    if teacher:  # the targets: the unmasked pair
      targets = {'patch_features': patches, 'fused': fused}
      if self.cfg.image_fusion:
        targets['fused_patches'] = self.fuse_image(patches, text_features, tokens)
      return targets
    # ITM: the pair, its text with a sampled hard-negative image, its image with a negative text.
    similarity = jax.lax.stop_gradient(text_embedding @ image_embedding.T)
    image_for_text = sample_hard_negatives(similarity, batch['itm_uniform'][:, 0])
    text_for_image = sample_hard_negatives(similarity.T, batch['itm_uniform'][:, 1])
    negative_text = self.fuse(text_features, tokens, patches[image_for_text])
    negative_image = self.fuse(text_features[text_for_image], tokens[text_for_image], patches)
    eot = end_of_text_position(tokens)
    rows = jnp.arange(tokens.shape[0])
    pair = lambda f, e=eot: f[rows, e]
    itm_logits = self.itm_head(jnp.concatenate(
        [pair(fused), pair(negative_text), pair(negative_image, eot[text_for_image])]))
    # The jointly masked pair.
    _, _, masked_patches, masked_text = self.encode(images, tokens, batch['patch_mask'],
                                                    batch['word_mask'])
    masked_fused = self.fuse(masked_text, tokens, masked_patches)
    extra = {}
    if self.cfg.image_fusion:
      extra['implicit_image_prediction'] = self.implicit_image_head(
          self.fuse_image(masked_patches, masked_text, tokens))
    return {**extra, 'image_embedding': image_embedding, 'text_embedding': text_embedding,
            'logit_scale': self.logit_scale[...], 'itm_logits': itm_logits,
            'mlm_logits': self.mlm_head(masked_fused),
            'implicit_prediction': self.implicit_head(masked_fused),
            'patch_prediction': self.patch_decoder(masked_patches)}


def prepare_batch(batch: dict, key: jax.Array, cfg: MAMOConfig) -> dict:
  """The step's joint masks and ITM draws, from the step's key (so a resume repeats them)."""
  k_patches, k_words, k_itm = jax.random.split(key, 3)
  size = batch['images'].shape[0]
  num_patches = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
  tokens = batch['tokens']
  words = jnp.arange(tokens.shape[1]) < end_of_text_position(tokens)[:, None]  # not EOT, not padding
  return {**batch,
          'patch_mask': jax.random.bernoulli(k_patches, cfg.image_mask_ratio, (size, num_patches)),
          'word_mask': jax.random.bernoulli(k_words, cfg.text_mask_ratio, tokens.shape) & words,
          'itm_uniform': jax.random.uniform(k_itm, (size, 2))}


register_family(Family(
    name='mamo', make_config=mamo_config, make_model=lambda cfg, rngs: MAMO(cfg, rngs=rngs),
    batch_fields=('images', 'tokens'),
    outputs=('image_embedding', 'text_embedding', 'logit_scale', 'itm_logits', 'mlm_logits',
             'implicit_prediction', 'patch_prediction'),  # and implicit_image_prediction
    teacher=True, prepare_batch=prepare_batch, config_type=MAMOConfig))
