"""The 'mvptr' family in PyTorch names. Its ViT and its text encoder are open_clip-shaped:
the text encoder is an open_clip text tower over the shared table (vocabulary + concepts)
with context_length + max_phrases positions, ln_text as ln_final and the bias-free VSC map
as text_projection, so open_clip's encode_text gives MVPTR's VSC text embedding. Everything
else (the visual encoder over [CLS, tags, patches], fusion, the VSC image map, the heads)
goes through `head_table(cfg)` to fdt_jax.export.torch_mvptr.MVPTRHead's state_dict.

open_clip's encode_image of such a directory is NOT MVPTR's image embedding: that is the
visual encoder's CLS (torch_mvptr); the ViT's ln_post and proj are kept but never trained.
"""

import dataclasses

from fdt_jax.formats.open_clip import (DENSE, SAME, Entry, _blocks, _dense, _layer_norm,
                                       parameter_table)
from fdt_jax.models import CLIPConfig
from fdt_jax.models.mvptr import MVPTRConfig


def towers_config(cfg: MVPTRConfig) -> CLIPConfig:
  """The open_clip towers' shapes: the ViT, and a text tower reading the shared table."""
  text = dataclasses.replace(cfg.text, vocab_size=cfg.text.vocab_size + cfg.num_concepts,
                             context_length=cfg.text.context_length + cfg.max_phrases)
  return CLIPConfig(embed_dim=cfg.embed_dim, vision=cfg.vision, text=text, fdt=None,
                    quick_gelu=cfg.quick_gelu)


def towers_table(cfg: MVPTRConfig) -> list[Entry]:
  visual = [e for e in parameter_table(towers_config(cfg)) if e.jax.startswith('visual.')]
  return visual + [
      Entry('embedding.embedding', 'token_embedding.weight', SAME),
      Entry('text_positions', 'positional_embedding', SAME),
      *_blocks('text_encoder', 'transformer', cfg.text.layers),
      *_layer_norm('ln_text', 'ln_final'),
      Entry('text_projection.kernel', 'text_projection', SAME),  # x @ kernel, as open_clip's
      Entry('logit_scale', 'logit_scale', SAME)]


def head_table(cfg: MVPTRConfig) -> list[Entry]:
  return [*_dense('patch_projection', 'patch_projection'),
          Entry('visual_class', 'visual_class', SAME), Entry('tag_type', 'tag_type', SAME),
          Entry('patch_type', 'patch_type', SAME),
          *_blocks('visual_encoder', 'visual_encoder', cfg.visual_layers),
          *_layer_norm('ln_visual', 'ln_visual'),
          *_blocks('fusion', 'fusion', cfg.fusion_layers), *_layer_norm('ln_fusion', 'ln_fusion'),
          Entry('visual_projection.kernel', 'visual_projection.weight', DENSE),
          *_dense('mcr_head', 'mcr_head'), *_dense('mlm_head', 'mlm_head'),
          *_dense('itm_head', 'itm_head')]


def head_config(cfg: MVPTRConfig) -> dict:
  """mvptr_config.json: what torch_mvptr.MVPTRHead is built from."""
  return {'width': cfg.text.width, 'image_width': cfg.vision.width, 'heads': cfg.text.heads,
          'mlp_ratio': cfg.text.mlp_ratio, 'visual_layers': cfg.visual_layers,
          'fusion_layers': cfg.fusion_layers, 'embed_dim': cfg.embed_dim,
          'vocab_size': cfg.text.vocab_size, 'num_concepts': cfg.num_concepts,
          'context_length': cfg.text.context_length, 'quick_gelu': cfg.quick_gelu,
          'training': dataclasses.asdict(cfg)}
