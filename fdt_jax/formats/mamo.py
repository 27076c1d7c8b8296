"""The 'mamo' family in PyTorch names: its towers are open_clip's (the 'clip' family's table,
fdt_jax.formats.open_clip), and everything else (the fusion encoder, the mask embeddings and
the heads) goes through `fusion_table(cfg)` to fdt_jax.export.torch_mamo.MAMOFusion's
state_dict.

  (image_)fusion.{i}.attn.*  nn.MultiheadAttention's in_proj_weight / out_proj (open_clip's layout)
  fusion.{i}.cross.*    q_weight [width, width], kv_weight [2 * width, image width] (keys
                        first), out_weight, out_bias: CrossAttention in torch_mamo
  patch_decoder.{0,2}   nn.Sequential(Linear, activation, Linear)
"""

import dataclasses

from fdt_jax.formats.open_clip import OUT_PROJ, SAME, Entry, Layout, _block, _dense, _layer_norm
from fdt_jax.models import CLIPConfig
from fdt_jax.models.mamo import MAMOConfig

# cross.q [width, heads, head_dim] <-> q_weight [width, width]; cross.kv [image width, 2, heads,
# head_dim] <-> kv_weight [2 * width, image width]: both flatten the output axes, then transpose.
OUTPUTS_LAST = Layout(lambda x: x.reshape(x.shape[0], -1).T, lambda t, shape: t.T.reshape(shape))


def towers_config(cfg: MAMOConfig) -> CLIPConfig:
  """The image and text towers of a MAMO model as the CLIPConfig of the same shapes."""
  return CLIPConfig(embed_dim=cfg.embed_dim, vision=cfg.vision, text=cfg.text, fdt=None,
                    quick_gelu=cfg.quick_gelu)


def _fusion_blocks(name: str, layers: int) -> list[Entry]:
  """A residual block (self-attention, MLP) plus its cross-attention, per layer."""
  rows = []
  for i in range(layers):
    b = f'{name}.{i}'
    rows += [
        *_block(b, b),
        *_layer_norm(f'{b}.ln_cross', f'{b}.ln_cross'),
        *_layer_norm(f'{b}.ln_context', f'{b}.ln_context'),
        Entry(f'{b}.cross.q', f'{b}.cross.q_weight', OUTPUTS_LAST),
        Entry(f'{b}.cross.kv', f'{b}.cross.kv_weight', OUTPUTS_LAST),
        Entry(f'{b}.cross.out', f'{b}.cross.out_weight', OUT_PROJ),
        Entry(f'{b}.cross.out_bias', f'{b}.cross.out_bias', SAME),
    ]
  return rows


def fusion_table(cfg: MAMOConfig) -> list[Entry]:
  """Every parameter of a MAMO model outside its towers: JAX path, PyTorch name, layout."""
  rows = _fusion_blocks('fusion', cfg.fusion_layers)
  rows += [*_layer_norm('ln_fusion', 'ln_fusion'), *_dense('itm_head', 'itm_head'),
           *_dense('mlm_head', 'mlm_head'), *_dense('implicit_head', 'implicit_head'),
           *_dense('patch_decoder.layers.0', 'patch_decoder.0'),
           *_dense('patch_decoder.layers.2', 'patch_decoder.2'),
           Entry('patch_mask_embedding', 'patch_mask_embedding', SAME),
           Entry('word_mask_embedding', 'word_mask_embedding', SAME)]
  if cfg.image_fusion:
    rows += [*_fusion_blocks('image_fusion', cfg.fusion_layers),
             *_layer_norm('ln_image_fusion', 'ln_image_fusion'),
             *_dense('implicit_image_head', 'implicit_image_head')]
  return rows


def fusion_config(cfg: MAMOConfig) -> dict:
  """mamo_config.json: what torch_mamo.MAMOFusion is built from."""
  return {'width': cfg.text.width, 'image_width': cfg.vision.width, 'heads': cfg.text.heads,
          'image_heads': cfg.vision.heads, 'image_fusion': cfg.image_fusion,
          'layers': cfg.fusion_layers, 'vocab_size': cfg.text.vocab_size,
          'quick_gelu': cfg.quick_gelu, 'training': dataclasses.asdict(cfg)}
