"""An 'mvptr' model in PyTorch, from a directory written by fdt_jax.export: open_clip's ViT
and text tower (the text encoder over the shared word-and-concept table, bidirectional,
padding masked) and MVPTRHead: the visual encoder over [CLS, tags, patches], the merged
fusion encoder, the VSC image map and the MCR / MLM / ITM heads.

    model = torch_mvptr.load('out')
    model.encode_image(images), model.encode_text(tokens)   # VSC embeddings (Encoded)
    model.match_logits(model.text_features(tokens), tokens, model.image_features(images))
    model.recover_concepts(images, tags, tag_mask)          # MCR logits
    model.ground(images, tokens, phrases)                   # phrase-patch cosines

Repeats fdt_jax/models/mvptr.py line for line (names: fdt_jax.formats.mvptr); needs torch,
open_clip and sentencepiece and imports no JAX. open_clip's own encode_image of the
directory is not MVPTR's image embedding (formats/mvptr.py).
"""

import json
import os

from fdt_jax.export.torch_fdt import Encoded, l2_normalize  # first: it guards torch's import
from fdt_jax.export.torch_mamo import QuickGELU, key_mask, valid_positions

import open_clip
import torch
from open_clip.transformer import Transformer
from safetensors.torch import load_file
from torch import nn

from fdt_jax.formats.exported import MVPTR_CONFIG, MVPTR_WEIGHTS

CONCEPT_PAD, CONCEPT_MASK = 0, 1  # fdt_jax/data/concepts.py's convention


class MVPTRHead(nn.Module):
  """Everything of the model beside open_clip's towers (mvptr_config.json's fields)."""

  def __init__(self, width: int, image_width: int, heads: int, mlp_ratio: float,
               visual_layers: int, fusion_layers: int, embed_dim: int, vocab_size: int,
               num_concepts: int, context_length: int, quick_gelu: bool, training: dict | None = None):
    super().__init__()
    del training  # the settings the model was trained with, kept in the file for the record
    self.heads, self.vocab_size, self.context_length = heads, vocab_size, context_length
    act = QuickGELU if quick_gelu else nn.GELU
    stack = lambda layers: Transformer(width, layers, heads, mlp_ratio, act_layer=act)
    self.patch_projection = nn.Linear(image_width, width)
    self.visual_class, self.tag_type, self.patch_type = (nn.Parameter(torch.zeros(width))
                                                         for _ in range(3))
    self.visual_encoder, self.ln_visual = stack(visual_layers), nn.LayerNorm(width, eps=1e-5)
    self.fusion, self.ln_fusion = stack(fusion_layers), nn.LayerNorm(width, eps=1e-5)
    self.visual_projection = nn.Linear(width, embed_dim, bias=False)
    self.mcr_head = nn.Linear(width, num_concepts)
    self.mlm_head = nn.Linear(width, vocab_size)
    self.itm_head = nn.Linear(width, 2)


class MVPTR(nn.Module):

  def __init__(self, clip: open_clip.CustomTextCLIP, head: MVPTRHead):
    super().__init__()
    self.clip, self.head = clip, head
    clip.text.use_pad_mask = True  # bidirectional with padding masked, as trained

  def encode_words(self, ids, valid):
    """ids [batch, n] in the shared table (words, then concepts after the vocabulary)."""
    text = self.clip.text
    x = text.token_embedding(ids) + text.positional_embedding[:ids.shape[1]]
    return text.ln_final(text.transformer(x, attn_mask=key_mask(valid, text.heads, x.dtype)))

  def encode_visual(self, images, tag_ids=None, tag_valid=None):
    """(CLS, tag outputs, patch outputs) of the visual encoder; tag_ids in the shared table."""
    head = self.head
    patches = self.clip.visual.forward_intermediates(
        images, indices=1, intermediates_only=True, output_fmt='NLC')['image_intermediates'][0]
    size = patches.shape[0]
    if tag_ids is None:
      tag_ids = torch.zeros((size, 0), dtype=torch.long)
      tag_valid = torch.zeros((size, 0), dtype=torch.bool)
    x = torch.cat([head.visual_class.expand(size, 1, -1),
                   self.clip.text.token_embedding(tag_ids) + head.tag_type,
                   head.patch_projection(patches) + head.patch_type], dim=1)
    valid = torch.cat([torch.ones((size, 1), dtype=torch.bool), tag_valid,
                       torch.ones(patches.shape[:2], dtype=torch.bool)], dim=1)
    x = head.ln_visual(head.visual_encoder(x, attn_mask=key_mask(valid, head.heads, x.dtype)))
    tags = tag_ids.shape[1]
    return x[:, 0], x[:, 1:1 + tags], x[:, 1 + tags:]

  def fuse(self, text_features, text_valid, patches):
    head = self.head
    x = torch.cat([text_features, patches], dim=1)
    valid = torch.cat([text_valid, torch.ones(patches.shape[:2], dtype=torch.bool)], dim=1)
    x = head.ln_fusion(head.fusion(x, attn_mask=key_mask(valid, head.heads, x.dtype)))
    return x[:, :text_features.shape[1]], x[:, text_features.shape[1]:]

  def encode_image(self, images) -> Encoded:
    return Encoded(l2_normalize(self.head.visual_projection(self.encode_visual(images)[0])), None)

  def encode_text(self, tokens) -> Encoded:
    return Encoded(l2_normalize(self.clip.encode_text(tokens)), None)

  def image_features(self, images):
    return self.encode_visual(images)[2]

  def text_features(self, tokens):
    return self.encode_words(tokens, valid_positions(tokens))

  def match_logits(self, text_features, tokens, patches):
    fused, _ = self.fuse(text_features, valid_positions(tokens), patches)
    return self.head.itm_head(fused[torch.arange(tokens.shape[0]), tokens.argmax(-1)])

  def recover_concepts(self, images, tags, tag_mask):
    ids = torch.where(tag_mask, CONCEPT_MASK, tags) + self.head.vocab_size
    return self.head.mcr_head(self.encode_visual(images, ids, tags != CONCEPT_PAD)[1])

  def ground(self, images, tokens, phrases):
    """Cosines [batch, phrases, patches] of the fused phrases with the fused patches."""
    patches = self.image_features(images)
    ids = torch.cat([tokens, phrases + self.head.vocab_size], dim=1)
    valid = torch.cat([valid_positions(tokens), phrases != CONCEPT_PAD], dim=1)
    fused_text, fused_patches = self.fuse(self.encode_words(ids, valid), valid, patches)
    return torch.einsum('bpd,brd->bpr', l2_normalize(fused_text[:, tokens.shape[1]:]),
                        l2_normalize(fused_patches))


def load(directory: str, device: str | torch.device = 'cpu') -> MVPTR:
  """The 'mvptr' model in a directory written by fdt_jax.export.export_open_clip, in eval mode."""
  path = os.path.join(directory, MVPTR_CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {MVPTR_CONFIG} in {directory}: not the export of an mvptr model')
  clip = open_clip.create_model(f'local-dir:{directory}', device=device)
  with open(path) as f:
    head = MVPTRHead(**json.load(f))
  head.load_state_dict(load_file(os.path.join(directory, MVPTR_WEIGHTS)))  # strict: every tensor
  return MVPTR(clip, head).to(device).eval()
