"""A 'mamo' model in PyTorch, from a directory written by fdt_jax.export: open_clip's towers
(the text tower bidirectional, padding masked) and the fusion encoder with its heads.

    model = torch_mamo.load('out')
    model.encode_image(images), model.encode_text(tokens)   # Encoded, as in torch_fdt
    patches, words = model.image_features(images), model.text_features(tokens)
    model.match_logits(words, tokens, patches)              # ITM [batch, 2]: no match, match
    model.fill(images, tokens, word_mask)                   # MLM logits [batch, length, vocab]
    model.fusion.fuse_image(patches, words, valid)          # the image stream (if trained with one)

Repeats fdt_jax/models/mamo.py's fusion encoder line for line (names: fdt_jax.formats.mamo);
needs torch, open_clip and sentencepiece and imports no JAX.
"""

import json
import os

from fdt_jax.export.torch_fdt import Encoded, l2_normalize  # first: it guards torch's import

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from fdt_jax.formats.exported import MAMO_CONFIG, MAMO_WEIGHTS


class QuickGELU(nn.Module):
  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


def _activation(quick_gelu: bool) -> nn.Module:
  return QuickGELU() if quick_gelu else nn.GELU()


class CrossAttention(nn.Module):
  """Queries from one modality's positions, keys and values from the other's (no q/k/v biases)."""

  def __init__(self, width: int, context_width: int, heads: int):
    super().__init__()
    self.heads = heads
    self.q_weight = nn.Parameter(torch.zeros(width, width))
    self.kv_weight = nn.Parameter(torch.zeros(2 * width, context_width))
    self.out_weight = nn.Parameter(torch.zeros(width, width))
    self.out_bias = nn.Parameter(torch.zeros(width))

  def forward(self, x, context, context_valid=None):
    split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [batch, heads, n, head_dim]
    k, v = F.linear(context, self.kv_weight).chunk(2, dim=-1)
    mask = None if context_valid is None else context_valid[:, None, None, :]
    out = F.scaled_dot_product_attention(split(F.linear(x, self.q_weight)), split(k), split(v),
                                         attn_mask=mask)
    return F.linear(out.transpose(1, 2).flatten(2), self.out_weight, self.out_bias)


class MLP(nn.Module):
  def __init__(self, width: int, quick_gelu: bool):
    super().__init__()
    self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
    self.activation = _activation(quick_gelu)

  def forward(self, x):
    return self.c_proj(self.activation(self.c_fc(x)))


class FusionBlock(nn.Module):
  def __init__(self, width: int, context_width: int, heads: int, quick_gelu: bool):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width, eps=1e-5)
    self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
    self.ln_cross = nn.LayerNorm(width, eps=1e-5)
    self.ln_context = nn.LayerNorm(context_width, eps=1e-5)
    self.cross = CrossAttention(width, context_width, heads)
    self.ln_2 = nn.LayerNorm(width, eps=1e-5)
    self.mlp = MLP(width, quick_gelu)

  def forward(self, x, valid, context, context_valid=None):
    h = self.ln_1(x)
    padding = None if valid is None else ~valid
    x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
    x = x + self.cross(self.ln_cross(x), self.ln_context(context), context_valid)
    return x + self.mlp(self.ln_2(x))


class MAMOFusion(nn.Module):
  """The fusion encoder, the ITM / MLM / implicit heads, the patch decoder and the mask
  embeddings (mamo_config.json's fields)."""

  def __init__(self, width: int, image_width: int, heads: int, layers: int, vocab_size: int,
               quick_gelu: bool, image_heads: int, image_fusion: bool, training: dict | None = None):
    super().__init__()
    del training  # the settings the model was trained with, kept in the file for the record
    self.fusion = nn.ModuleList([FusionBlock(width, image_width, heads, quick_gelu)
                                 for _ in range(layers)])
    self.ln_fusion = nn.LayerNorm(width, eps=1e-5)
    self.itm_head, self.mlm_head = nn.Linear(width, 2), nn.Linear(width, vocab_size)
    self.implicit_head = nn.Linear(width, width)
    self.patch_decoder = nn.Sequential(nn.Linear(image_width, image_width),
                                       _activation(quick_gelu), nn.Linear(image_width, image_width))
    self.patch_mask_embedding = nn.Parameter(torch.zeros(image_width))
    self.word_mask_embedding = nn.Parameter(torch.zeros(width))
    self.image_fusion = None
    if image_fusion:  # the image stream: what the implicit target reads at masked patches
      self.image_fusion = nn.ModuleList([FusionBlock(image_width, width, image_heads, quick_gelu)
                                         for _ in range(layers)])
      self.ln_image_fusion = nn.LayerNorm(image_width, eps=1e-5)
      self.implicit_image_head = nn.Linear(image_width, image_width)

  def forward(self, text_features, valid, patches):
    x = text_features
    for block in self.fusion:
      x = block(x, valid, patches)
    return self.ln_fusion(x)

  def fuse_image(self, patches, text_features, valid):
    x = patches
    for block in self.image_fusion:
      x = block(x, None, text_features, valid)
    return self.ln_image_fusion(x)


def key_mask(valid, heads: int, dtype):
  """bool [batch, n] (False: no query attends there) -> open_clip's additive attention mask
  [batch * heads, n, n]."""
  mask = torch.zeros(valid.shape, dtype=dtype).masked_fill(~valid, float('-inf'))
  return mask[:, None, :].expand(-1, valid.shape[-1], -1).repeat_interleave(heads, 0)


def valid_positions(tokens):
  """Up to and including end-of-text (the largest id), as fdt_jax.models.text."""
  return torch.arange(tokens.shape[-1], device=tokens.device) <= tokens.argmax(-1)[:, None]


class MAMO(nn.Module):

  def __init__(self, clip: open_clip.CustomTextCLIP, fusion: MAMOFusion):
    super().__init__()
    self.clip, self.fusion = clip, fusion
    # Bidirectional text with padding masked, as trained (open_clip's config has no field).
    clip.text.use_pad_mask = True

  def encode_image(self, images) -> Encoded:
    return Encoded(l2_normalize(self.clip.encode_image(images)), None)

  def encode_text(self, tokens) -> Encoded:
    return Encoded(l2_normalize(self.clip.encode_text(tokens)), None)

  def image_features(self, images):
    """The last block's outputs without the class token, before ln_post [batch, patches, width]."""
    return self.clip.visual.forward_intermediates(
        images, indices=1, intermediates_only=True, output_fmt='NLC')['image_intermediates'][0]

  def text_features(self, tokens, word_mask=None):
    """ln_final of the last block [batch, length, width]; `word_mask` positions read the
    learned mask embedding instead of their word."""
    text = self.clip.text
    x = text.token_embedding(tokens)
    if word_mask is not None:
      x = torch.where(word_mask[..., None], self.fusion.word_mask_embedding.to(x.dtype), x)
    x = x + text.positional_embedding[:tokens.shape[-1]].to(x.dtype)
    return text.ln_final(text.transformer(x, attn_mask=key_mask(valid_positions(tokens), text.heads, x.dtype)))

  def match_logits(self, text_features, tokens, patches):
    fused = self.fusion(text_features, valid_positions(tokens), patches)
    return self.fusion.itm_head(fused[torch.arange(tokens.shape[0]), tokens.argmax(-1)])

  def fill(self, images, tokens, word_mask):
    """MLM logits of the caption with the `word_mask` words masked, the image whole."""
    patches = self.image_features(images)
    fused = self.fusion(self.text_features(tokens, word_mask), valid_positions(tokens), patches)
    return self.fusion.mlm_head(fused)


def load(directory: str, device: str | torch.device = 'cpu') -> MAMO:
  """The 'mamo' model in a directory written by fdt_jax.export.export_open_clip, in eval mode."""
  path = os.path.join(directory, MAMO_CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {MAMO_CONFIG} in {directory}: not the export of a mamo model '
                            '(fdt_jax.export.torch_fdt.load reads clip and FDT exports)')
  clip = open_clip.create_model(f'local-dir:{directory}', device=device)
  with open(path) as f:
    fusion = MAMOFusion(**json.load(f))
  fusion.load_state_dict(load_file(os.path.join(directory, MAMO_WEIGHTS)))  # strict: every tensor
  return MAMO(clip, fusion).to(device).eval()
