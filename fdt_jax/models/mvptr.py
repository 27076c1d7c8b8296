"""The 'mvptr' family: multi-level alignment with concepts (MVPTR, Li et al., ACM MM 2022,
arXiv 2201.12596; the authors' code is Junction4Nako/mvp_pytorch).

    text:   [words, end-of-text, padding, phrase ids] -> bidirectional text encoder
    image:  ViT patch outputs (standing in for the authors' detector regions)
            [CLS, tag ids, Linear(patches)] -> visual encoder
    fusion: merged self-attention over [text outputs, the visual encoder's patch outputs]
            (the tags stay behind, as the authors' code leaves them out of fusion)

One embedding table serves words, phrases and tags (rows: the text vocabulary, then the
concept ids; a masked word, phrase or tag reads the concept vocabulary's mask row). One
masked pass gives every loss, as the authors train: MCR from the visual encoder's tag
outputs, VSC (the registered 'infonce') from the text encoder's end-of-text and the visual
encoder's CLS through bias-free maps, ITM on the fused end-of-text with the hardest in-batch
negative, MLM from the fused words and WPG from the fused phrases and patches.

The authors' choices: three stacks (text, visual, fusion), fusion by self-attention over
the concatenation, phrases positioned after the words, 15 % masking of words and tags (a
phrase holding a masked word masked whole, other phrases 15 %), the VSC scale from
log(1 / 0.07), the ITM negatives half per text and half per image. Ours: the end-of-text
position stands for [CLS] (the tokenizer has no [CLS]); ViT patches stand in for regions;
a masked position always gets the mask row (no BERT 80/10/10); learned type vectors mark
tags and patches in the visual encoder; `concept_dropout` withholds an example's tags (and,
drawn apart, its phrases) so the encoders also learn to work without them: the retrieval
evaluators embed images and captions alone. The ViT keeps its ln_post and proj (the tower
stays open_clip-shaped) though nothing reads them here.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.clip import DTYPES, VARIANTS, Encoded, TowerSizes, _set, batch_metrics
from fdt_jax.models.fdt import FDT, FDTConfig, fdt_section, l2_normalize
from fdt_jax.models.registry import Family, register_family
from fdt_jax.models.text import TextConfig, end_of_text_position, valid_positions
from fdt_jax.models.transformer import (Transformer, exact_gelu, layer_norm, normal,
                                        quick_gelu, sharded, zeros)
from fdt_jax.models.vit import VisionConfig, VisionTransformer
from fdt_jax.ops import hardest_negatives

# The concept ids' convention (fdt_jax/data/concepts.py; models do not import data).
CONCEPT_PAD, CONCEPT_MASK = 0, 1
WPG_TOP = 3  # as objectives/mvptr.py: a phrase's score is one of its 3 best patch cosines


@dataclasses.dataclass(frozen=True)
class MVPTRConfig(TowerSizes):
  embed_dim: int = 256
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  num_concepts: int = 212  # concept ids, padding and mask included (data/concepts.VOCAB_SIZE)
  max_phrases: int = 5  # the authors' 5 phrases
  visual_layers: int = 6  # the authors' 6-layer visual encoder
  fusion_layers: int = 6  # the authors' 6-layer fusion encoder
  word_mask_ratio: float = 0.15
  tag_mask_ratio: float = 0.15
  phrase_mask_ratio: float = 0.15
  concept_dropout: float = 0.0  # ours: the chance an example's tags (or phrases) are withheld
  fdt: FDTConfig | None = None  # VSC through the FDT head instead of the bias-free maps
  quick_gelu: bool = False
  dtype: str = 'float32'
  remat: bool = False


def mvptr_config(section: dict) -> MVPTRConfig:
  """The `config.model` section: `variant` (the ViT and text sizes of a clip variant),
  `vision` and `text` overrides, and MVPTRConfig's other fields."""
  cfg = dict(section)
  fdt = fdt_section(cfg.pop('fdt', None))
  variant = cfg.pop('variant', None)
  if variant not in VARIANTS:
    raise ValueError(f'config.model.variant = {variant!r}: use one of {sorted(VARIANTS)}')
  base = VARIANTS[variant]
  built = MVPTRConfig(embed_dim=base.embed_dim,
                      vision=dataclasses.replace(base.vision, **_set(cfg.pop('vision', None))),
                      text=dataclasses.replace(base.text, **_set(cfg.pop('text', None))),
                      fdt=fdt, **cfg)
  for name in ('word_mask_ratio', 'tag_mask_ratio', 'phrase_mask_ratio', 'concept_dropout'):
    if not 0 <= getattr(built, name) < 1:
      raise ValueError(f'config.model.{name} = {getattr(built, name)!r}: it must be in [0, 1)')
  return built


def text_ids(tokens, phrases, vocab_size: int):
  """The text encoder's input in the shared table: word ids as they are, phrase (concept)
  ids after the vocabulary. [batch, length + phrases]."""
  return jnp.concatenate([tokens, phrases + vocab_size], axis=1)


class MVPTR(nnx.Module):

  def __init__(self, cfg: MVPTRConfig, *, rngs: nnx.Rngs):
    if cfg.dtype not in DTYPES:
      raise ValueError(f'unknown dtype {cfg.dtype!r}: use one of {sorted(DTYPES)}')
    self.cfg = cfg
    dtype = self.dtype = DTYPES[cfg.dtype]
    activation = quick_gelu if cfg.quick_gelu else exact_gelu
    width, text = cfg.text.width, cfg.text
    stack = lambda layers: Transformer(width, layers, text.heads, text.mlp_ratio, causal=False,
                                       activation=activation, remat=cfg.remat, dtype=dtype, rngs=rngs)
    vector = lambda: nnx.Param(sharded(normal(0.02), 'embed')(rngs.params(), (width,)))
    dense = lambda i, o, bias=True: nnx.Linear(
        i, o, use_bias=bias, dtype=dtype, rngs=rngs,
        kernel_init=sharded(normal(i ** -0.5), 'embed', None), bias_init=sharded(zeros, None))
    # One table: words, then concepts (phrases and tags).
    self.embedding = nnx.Embed(text.vocab_size + cfg.num_concepts, width, dtype=dtype, rngs=rngs,
                               embedding_init=sharded(normal(0.02), 'vocab', 'embed'))
    self.text_positions = nnx.Param(sharded(normal(0.01), None, 'embed')(
        rngs.params(), (text.context_length + cfg.max_phrases, width)))
    self.text_encoder = stack(text.layers)
    self.ln_text = layer_norm(width, dtype, rngs)
    self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, activation=activation,
                                    remat=cfg.remat, dtype=dtype, rngs=rngs)
    self.patch_projection = dense(cfg.vision.width, width)  # the authors' region Linear
    self.visual_class = vector()
    self.tag_type, self.patch_type = vector(), vector()
    self.visual_encoder = stack(cfg.visual_layers)
    self.ln_visual = layer_norm(width, dtype, rngs)
    self.fusion = stack(cfg.fusion_layers)
    self.ln_fusion = layer_norm(width, dtype, rngs)
    if cfg.fdt is None:  # VSC on the CLSs through bias-free maps, as the authors
      self.text_projection = dense(width, cfg.embed_dim, bias=False)
      self.visual_projection = dense(width, cfg.embed_dim, bias=False)
      self.fdt = None
    else:  # ours: VSC on the FDT head over the visual encoder's patches and the words
      self.fdt = FDT(cfg.fdt, width, width, dtype=dtype, rngs=rngs, remat=cfg.remat)
    self.logit_scale = nnx.Param(sharded(nnx.initializers.constant(math.log(1 / 0.07)))(
        rngs.params(), ()))
    self.mcr_head = dense(width, cfg.num_concepts)
    self.mlm_head = dense(width, text.vocab_size)
    self.itm_head = dense(width, 2)

  # --- the three encoders ----------------------------------------------------------

  def encode_words(self, ids, valid):
    """ids [batch, n] in the shared table (text_ids); valid bool [batch, n]. -> [batch, n, width]."""
    x = self.embedding(ids) + self.text_positions[:ids.shape[1]].astype(self.dtype)
    return self.ln_text(self.text_encoder(x, valid))

  def encode_visual(self, images, tag_ids, tag_valid):
    """images [batch, H, W, 3]; tag_ids [batch, tags] in the shared table (tags may be 0 wide).
    -> (CLS [batch, width], tag outputs [batch, tags, width], patch outputs [batch, patches, width])."""
    _, patches = self.visual(images)  # [batch, patches, vision width], before ln_post
    size, tags = patches.shape[0], tag_ids.shape[1]
    x = jnp.concatenate([
        jnp.broadcast_to(self.visual_class.astype(self.dtype), (size, 1, self.cfg.text.width)),
        self.embedding(tag_ids) + self.tag_type.astype(self.dtype),
        self.patch_projection(patches) + self.patch_type.astype(self.dtype)], axis=1)
    valid = jnp.concatenate([jnp.ones((size, 1), bool), tag_valid,
                             jnp.ones(patches.shape[:2], bool)], axis=1)
    x = self.ln_visual(self.visual_encoder(x, valid))
    return x[:, 0], x[:, 1:1 + tags], x[:, 1 + tags:]

  def fuse(self, text_features, text_valid, patch_features):
    """Merged self-attention over [text; patches] -> (fused text, fused patches)."""
    x = jnp.concatenate([text_features, patch_features], axis=1)
    valid = jnp.concatenate([text_valid, jnp.ones(patch_features.shape[:2], bool)], axis=1)
    x = self.ln_fusion(self.fusion(x, valid))
    return x[:, :text_features.shape[1]], x[:, text_features.shape[1]:]

  def _text(self, tokens, phrases, phrase_valid, ids=None):
    valid = jnp.concatenate([valid_positions(tokens), phrase_valid], axis=1)
    ids = text_ids(tokens, phrases, self.cfg.vocab_size) if ids is None else ids
    return self.encode_words(ids, valid), valid

  def _vsc_image(self, cls, patches) -> Encoded:
    """The VSC embedding from the visual encoder's CLS, or its patch outputs by FDT."""
    if self.fdt is None:
      return Encoded(l2_normalize(self.visual_projection(cls)), None)
    return Encoded(*self.fdt.encode_image(patches))

  def _vsc_text(self, tokens, words) -> Encoded:
    """The VSC embedding from the text encoder's end-of-text, or its words by FDT
    (words: the text encoder's outputs at the token positions, phrases left out)."""
    if self.fdt is None:
      eot = words[jnp.arange(tokens.shape[0]), end_of_text_position(tokens)]
      return Encoded(l2_normalize(self.text_projection(eot)), None)
    return Encoded(*self.fdt.encode_text(words, valid_positions(tokens)))

  # --- what the evaluators call ----------------------------------------------------

  def encode_image(self, images) -> Encoded:
    """The VSC embedding of an image alone (no tags)."""
    size = images.shape[0]
    cls, _, patches = self.encode_visual(images, jnp.zeros((size, 0), jnp.int32),
                                         jnp.zeros((size, 0), bool))
    return self._vsc_image(cls, patches)

  def encode_text(self, tokens) -> Encoded:
    """The VSC embedding of a caption alone (no phrases)."""
    return self._vsc_text(tokens, self.text_features(tokens))

  def fdt_image_features(self, images):
    """What the FDT head's image query reads (fdt_jax.inspect): the patch outputs."""
    return self.image_features(images)

  def fdt_text_features(self, tokens):
    """What the FDT head's text query reads, and where: (features, valid)."""
    return self.text_features(tokens), valid_positions(tokens)

  def image_features(self, images):
    """The visual encoder's patch outputs of an image alone (no tags): what fusion reads."""
    size = images.shape[0]
    return self.encode_visual(images, jnp.zeros((size, 0), jnp.int32), jnp.zeros((size, 0), bool))[2]

  def text_features(self, tokens):
    """The text encoder's outputs of a caption alone (no phrases)."""
    return self.encode_words(tokens, valid_positions(tokens))

  def match_logits(self, text_features, tokens, patches):
    """ITM logits [batch, 2] (no match, match) from the features above (ITM re-ranking)."""
    fused, _ = self.fuse(text_features, valid_positions(tokens), patches)
    return self.itm_head(fused[jnp.arange(tokens.shape[0]), end_of_text_position(tokens)])

  def recover_concepts(self, images, tags, tag_mask):
    """MCR logits [batch, tags, num_concepts] with the `tag_mask` tags masked (tags: concept ids)."""
    ids = jnp.where(tag_mask, CONCEPT_MASK, tags) + self.cfg.vocab_size
    _, tag_features, _ = self.encode_visual(images, ids, tags != CONCEPT_PAD)
    return self.mcr_head(tag_features)

  def ground(self, images, tokens, phrases):
    """Cosines [batch, phrases, patches] of the fused phrases with the fused patches (no tags)."""
    size = images.shape[0]
    _, _, patches = self.encode_visual(images, jnp.zeros((size, 0), jnp.int32), jnp.zeros((size, 0), bool))
    text, valid = self._text(tokens, phrases, phrases != CONCEPT_PAD)
    fused_text, fused_patches = self.fuse(text, valid, patches)
    phrase_features = fused_text[:, tokens.shape[1]:]
    return jnp.einsum('bpd,brd->bpr', l2_normalize(phrase_features.astype(jnp.float32)),
                      l2_normalize(fused_patches.astype(jnp.float32)))

  # --- training: one masked pass, every loss's inputs ------------------------------

  def __call__(self, batch: dict, *, teacher: bool = False) -> dict:
    del teacher  # no EMA model in this family
    tokens, vocab = batch['tokens'], self.cfg.vocab_size
    rows = jnp.arange(tokens.shape[0])
    tags_in = jnp.where(batch['tag_mask'], CONCEPT_MASK, batch['tags'])
    cls, tag_features, patches = self.encode_visual(
        batch['images'], tags_in + vocab, batch['tag_valid'])
    words_in = jnp.where(batch['word_mask'], CONCEPT_MASK + vocab, tokens)
    phrases_in = jnp.where(batch['phrase_mask'], CONCEPT_MASK, batch['phrases'])
    text, text_valid = self._text(tokens, batch['phrases'], batch['phrase_valid'],
                                  ids=text_ids(words_in, phrases_in, vocab))
    eot = end_of_text_position(tokens)
    length = tokens.shape[1]
    image, caption = self._vsc_image(cls, patches), self._vsc_text(tokens, text[:, :length])
    image_embedding, text_embedding = image.embedding, caption.embedding
    fused_text, fused_patches = self.fuse(text, text_valid, patches)
    # ITM: the first half of the batch pairs its text with the hardest other image, the
    # second half its image with the hardest other text (the VSC similarities).
    image_for_text, text_for_image = hardest_negatives(text_embedding @ image_embedding.T)
    first_half = rows < tokens.shape[0] // 2
    negative_text = jnp.where(first_half, rows, text_for_image)
    negative_image = jnp.where(first_half, image_for_text, rows)
    fused_negative, _ = self.fuse(text[negative_text], text_valid[negative_text],
                                  patches[negative_image])
    match_logits = jnp.stack([self.itm_head(fused_text[rows, eot]),
                              self.itm_head(fused_negative[rows, eot[negative_text]])], axis=1)
    fdt = {} if self.fdt is None else {'image_fdt_weights': image.fdt_weights,
                                       'text_fdt_weights': caption.fdt_weights}
    return {**fdt, 'image_embedding': image_embedding, 'text_embedding': text_embedding,
            'logit_scale': self.logit_scale[...],
            'match_logits': match_logits,  # [batch, (pair, negative), 2]
            'mlm_logits': self.mlm_head(fused_text[:, :length]),
            'mcr_logits': self.mcr_head(tag_features),
            'phrase_features': fused_text[:, length:], 'patch_features': fused_patches}


def prepare_batch(batch: dict, key: jax.Array, cfg: MVPTRConfig) -> dict:
  """The step's masks, withheld concepts and WPG draws, from the step's key (a resume
  repeats them). With 'phrase_spans' in the batch (each phrase's token positions [start,
  end), data/concepts.py), a phrase holding a masked word is masked whole; without, phrases
  are masked at phrase_mask_ratio alone. Adds bool 'word_mask' [batch, length], 'tag_valid',
  'tag_mask' [batch, tags], 'phrase_valid', 'phrase_mask', 'grounded_phrases' [batch,
  phrases] (present, not masked: the phrases WPG scores), int 'wpg_negative' [batch] and
  'wpg_choice' [batch, 2, phrases] (for the own image, for the other)."""
  keys = jax.random.split(key, 8)
  tokens, tags, phrases = batch['tokens'], batch['tags'], batch['phrases']
  size = tokens.shape[0]
  if phrases.shape[1] > cfg.max_phrases:
    raise ValueError(f'{phrases.shape[1]} phrases per caption exceed config.model.max_phrases = '
                     f'{cfg.max_phrases}')
  words = jnp.arange(tokens.shape[1]) < end_of_text_position(tokens)[:, None]
  word_mask = jax.random.bernoulli(keys[0], cfg.word_mask_ratio, tokens.shape) & words
  tag_valid = (tags != CONCEPT_PAD) & ~jax.random.bernoulli(keys[1], cfg.concept_dropout, (size, 1))
  phrase_valid = (phrases != CONCEPT_PAD) & ~jax.random.bernoulli(keys[2], cfg.concept_dropout, (size, 1))
  tag_mask = jax.random.bernoulli(keys[3], cfg.tag_mask_ratio, tags.shape) & tag_valid
  phrase_mask = jax.random.bernoulli(keys[4], cfg.phrase_mask_ratio, phrases.shape)
  if 'phrase_spans' in batch:  # [batch, phrases, 2]: a phrase holding a masked word goes whole
    start, end = batch['phrase_spans'][..., 0:1], batch['phrase_spans'][..., 1:2]
    position = jnp.arange(tokens.shape[1])
    inside = (position >= start) & (position < end)  # [batch, phrases, length]
    phrase_mask |= jnp.any(inside & word_mask[:, None, :], axis=-1)
  phrase_mask &= phrase_valid
  offset = jax.random.randint(keys[5], (size,), 1, max(size, 2))
  return {**batch, 'word_mask': word_mask, 'tag_valid': tag_valid, 'tag_mask': tag_mask,
          'phrase_valid': phrase_valid, 'phrase_mask': phrase_mask,
          'grounded_phrases': phrase_valid & ~phrase_mask,
          'wpg_negative': (jnp.arange(size) + offset) % size,  # never the example itself
          'wpg_choice': jax.random.randint(keys[6], (size, 2, phrases.shape[1]), 0, WPG_TOP)}


register_family(Family(
    name='mvptr', make_config=mvptr_config, make_model=lambda cfg, rngs: MVPTR(cfg, rngs=rngs),
    batch_fields=('images', 'tokens', 'phrases', 'tags'),
    outputs=('image_embedding', 'text_embedding', 'logit_scale', 'match_logits', 'mlm_logits',
             'mcr_logits', 'phrase_features', 'patch_features', 'image_fdt_weights',
             'text_fdt_weights'),
    prepare_batch=prepare_batch, config_type=MVPTRConfig, batch_metrics=batch_metrics))
