"""fdt_jax parameters -> an open_clip directory that PyTorch loads offline.

    export_open_clip(model, cfg, 'out')              # JAX -> directory
    open_clip.create_model('local-dir:out')          # PyTorch: the two towers (CLIP heads)
    fdt_jax.export.torch_fdt.load('out')             # PyTorch: the towers and the FDT head
    params = import_open_clip('out', cfg)            # back (fdt_jax.formats.open_clip)

The directory:

    open_clip_config.json         open_clip's model_cfg and preprocess_cfg
    open_clip_model.safetensors   the towers and logit_scale, under open_clip's names
    fdt_config.json               FDT models only: the head's settings
    fdt_head.safetensors          FDT models only: fdt_tokens, query_image, query_text
    mamo_config.json              'mamo' models only: the fusion encoder's settings
    mamo_fusion.safetensors       'mamo' models only: fusion encoder, heads, mask embeddings
                                  (fdt_jax.formats.mamo; PyTorch: fdt_jax.export.torch_mamo)
    tokenizer.model               the sentencepiece model, if one was given

A 'mamo' model's text tower is bidirectional: its open_clip config says `custom_text` and
`no_causal_mask`, and open_clip must also mask the padding (`model.text.use_pad_mask = True`,
which torch_mamo.load sets; open_clip 3.3's config has no field for it).

The names and layouts come from fdt_jax.formats.open_clip (shared with import).
"""

import dataclasses
import json

import jax
import numpy as np
from etils import epath

from fdt_jax.atomic_write import write_atomically, write_json_atomically
from fdt_jax.data.transforms import CLIP_MEAN, CLIP_STD
from fdt_jax.formats import mamo
from fdt_jax.formats.exported import (FDT_CONFIG, FDT_WEIGHTS, MAMO_CONFIG, MAMO_WEIGHTS,
                                      OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, TOKENIZER)
from fdt_jax.formats.open_clip import named_leaves, param_shapes, parameter_table
from fdt_jax.models import CLIPConfig, FDTConfig, TextConfig, VisionConfig
from fdt_jax.models.mamo import MAMOConfig


def open_clip_config(cfg: CLIPConfig) -> dict:
  """open_clip's model_cfg and preprocess_cfg for this model (open_clip_config.json)."""
  vision, text = cfg.vision, cfg.text
  return {
      'model_cfg': {
          'embed_dim': cfg.embed_dim,
          'quick_gelu': cfg.quick_gelu,
          'vision_cfg': {
              'image_size': vision.image_size, 'patch_size': vision.patch_size,
              'width': vision.width, 'layers': vision.layers,
              'head_width': vision.width // vision.heads, 'mlp_ratio': vision.mlp_ratio,
          },
          'text_cfg': {
              'context_length': text.context_length, 'vocab_size': text.vocab_size,
              'width': text.width, 'heads': text.heads, 'layers': text.layers,
              'mlp_ratio': text.mlp_ratio,
              # Our tokenizers put end-of-text at the largest id and pad with 0.
              'pool_type': 'argmax', 'pad_id': 0, 'eos_id': text.vocab_size - 1,
          },
      },
      'preprocess_cfg': {
          # fdt_jax.data.transforms: CLIP's normalisation; shorter side bicubic, centre crop.
          'size': vision.image_size, 'mode': 'RGB', 'mean': list(CLIP_MEAN), 'std': list(CLIP_STD),
          'interpolation': 'bicubic', 'resize_mode': 'shortest',
      },
  }


def export_open_clip(model_or_params, model_cfg: CLIPConfig | MAMOConfig, out_dir: str,
                     tokenizer_path: str | None = None) -> str:
  """Writes the directory described above; returns `out_dir` (a local path or gs://, through
  etils.epath, as is `tokenizer_path`).

  `model_or_params`: the nnx model, its nnx.State of parameters, or the same tree
  as a plain dict (e.g. restored from a checkpoint).
  """
  if isinstance(model_cfg, MAMOConfig):
    towers_cfg, extra = mamo.towers_config(model_cfg), mamo.fusion_table(model_cfg)
  elif isinstance(model_cfg, CLIPConfig):
    towers_cfg, extra = model_cfg, []
  else:
    raise ValueError(f'open_clip export fits the clip and mamo families, not a {type(model_cfg).__name__}')
  leaves = named_leaves(model_or_params)
  shapes = param_shapes(model_cfg)
  fix = 'export with the model config the parameters were trained with'
  if mismatch := sorted(set(leaves) ^ set(shapes)):
    where = 'missing from the parameters' if mismatch[0] in shapes else 'not in the model of model_cfg'
    raise ValueError(f'parameter {mismatch[0]!r} is {where}: {fix}')
  towers, head, fusion = {}, {}, {}  # open_clip_model, fdt_head, mamo_fusion .safetensors
  in_fusion = {entry.jax for entry in extra}
  for entry in parameter_table(towers_cfg) + extra:
    array = np.asarray(jax.device_get(leaves[entry.jax]), np.float32)
    if array.shape != shapes[entry.jax]:
      raise ValueError(f'parameter {entry.jax!r} has shape {array.shape}, not {shapes[entry.jax]}: {fix}')
    tensor = np.asarray(entry.layout.to_torch(array), order='C')  # ascontiguousarray would make [] [1]
    (fusion if entry.jax in in_fusion else head if entry.in_fdt_head else towers)[entry.torch] = tensor

  if tokenizer_path is not None:
    _check_tokenizer(tokenizer_path, towers_cfg)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  config = open_clip_config(towers_cfg)
  if extra:  # a bidirectional text tower (see above)
    config['model_cfg'].update(custom_text=True)
    config['model_cfg']['text_cfg'].update(no_causal_mask=True)
  write_json_atomically(out / OPEN_CLIP_CONFIG, config, indent=2)
  _save(towers, out / OPEN_CLIP_WEIGHTS)
  written = {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS}
  if towers_cfg.fdt is not None:
    write_json_atomically(out / FDT_CONFIG, {
        **dataclasses.asdict(towers_cfg.fdt),
        'image_width': towers_cfg.vision.width, 'text_width': towers_cfg.text.width}, indent=2)
    _save(head, out / FDT_WEIGHTS)
    written |= {FDT_CONFIG, FDT_WEIGHTS}
  if extra:
    write_json_atomically(out / MAMO_CONFIG, mamo.fusion_config(model_cfg), indent=2)
    _save(fusion, out / MAMO_WEIGHTS)
    written |= {MAMO_CONFIG, MAMO_WEIGHTS}
  if tokenizer_path is not None:
    write_atomically(out / TOKENIZER, epath.Path(tokenizer_path).read_bytes())
    written.add(TOKENIZER)
  for stale in {FDT_CONFIG, FDT_WEIGHTS, MAMO_CONFIG, MAMO_WEIGHTS, TOKENIZER} - written:
    if (out / stale).exists():  # from an earlier export there
      (out / stale).unlink()
  return out_dir


def _save(tensors: dict, path: epath.Path):
  from safetensors.numpy import save
  write_atomically(path, save(tensors, metadata={'format': 'pt'}))


def _check_tokenizer(path: str, cfg: CLIPConfig):
  from fdt_jax.data.tokenizer import Tokenizer
  vocab_size = Tokenizer(path, cfg.text.context_length).vocab_size
  if vocab_size > cfg.text.vocab_size:  # fewer is fine: end-of-text is still the largest id
    raise ValueError(f'tokenizer {path} has {vocab_size} ids but the model has vocab_size '
                     f'{cfg.text.vocab_size}: give the tokenizer the model was trained with')


def read_config(directory: str) -> CLIPConfig:
  """The CLIPConfig of a directory written by export_open_clip."""
  model_cfg = json.loads(epath.Path(directory, OPEN_CLIP_CONFIG).read_text())['model_cfg']
  vision, text = model_cfg['vision_cfg'], model_cfg['text_cfg']
  fdt = None
  if epath.Path(directory, FDT_CONFIG).exists():
    fdt = json.loads(epath.Path(directory, FDT_CONFIG).read_text())
    fdt = FDTConfig(**{k: v for k, v in fdt.items() if k not in ('image_width', 'text_width')})
  return CLIPConfig(
      embed_dim=model_cfg['embed_dim'],
      vision=VisionConfig(vision['image_size'], vision['patch_size'], vision['width'],
                          vision['layers'], vision['width'] // vision['head_width'],
                          vision['mlp_ratio']),
      text=TextConfig(text['context_length'], text['vocab_size'], text['width'], text['layers'],
                      text['heads'], text['mlp_ratio']),
      fdt=fdt, quick_gelu=model_cfg['quick_gelu'])
