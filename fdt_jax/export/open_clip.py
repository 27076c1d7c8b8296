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
    mvptr_config.json             'mvptr' models only: fdt_jax.formats.mvptr says what
    mvptr_head.safetensors        is in open_clip's file and what here (torch_mvptr)
    tokenizer.model               the sentencepiece model, if one was given

A 'mamo' model's text tower is bidirectional: its open_clip config says `custom_text` and
`no_causal_mask`, and open_clip must also mask the padding (`model.text.use_pad_mask = True`,
which torch_mamo.load sets; open_clip 3.3's config has no field for it).

The names and layouts come from fdt_jax.formats.open_clip (shared with import).
"""

import dataclasses
import json
from typing import NamedTuple

import jax
import numpy as np
from etils import epath

from fdt_jax.atomic_write import write_atomically, write_json_atomically
from fdt_jax.data.transforms import CLIP_MEAN, CLIP_STD
from fdt_jax.formats import mamo, mvptr
from fdt_jax.formats.exported import (FDT_CONFIG, FDT_WEIGHTS, MAMO_CONFIG, MAMO_WEIGHTS,
                                      MVPTR_CONFIG, MVPTR_WEIGHTS, OPEN_CLIP_CONFIG,
                                      OPEN_CLIP_WEIGHTS, TOKENIZER)
from fdt_jax.formats.open_clip import named_leaves, param_shapes, parameter_table
from fdt_jax.models import CLIPConfig, FDTConfig, TextConfig, VisionConfig
from fdt_jax.models.mamo import MAMOConfig
from fdt_jax.models.mvptr import MVPTRConfig


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


class _Plan(NamedTuple):
  towers_cfg: CLIPConfig  # the open_clip towers' shapes
  towers: list  # Entry rows of open_clip_model.safetensors (and, for FDT, fdt_head)
  extra: list  # Entry rows of the family's own file
  files: tuple = ()  # (config json, weights) of the family's own file
  extra_config: dict | None = None
  bidirectional: bool = False  # the text tower: no causal mask, padding masked


def _plan(model_cfg) -> _Plan:
  if isinstance(model_cfg, MAMOConfig):
    towers_cfg = mamo.towers_config(model_cfg)
    return _Plan(towers_cfg, parameter_table(towers_cfg), mamo.fusion_table(model_cfg),
                 (MAMO_CONFIG, MAMO_WEIGHTS), mamo.fusion_config(model_cfg), True)
  if isinstance(model_cfg, MVPTRConfig):
    if model_cfg.fdt is not None:
      raise ValueError('an MVPTR run with the FDT head (configs/tiny.py:mvptr_fdt) has no '
                       'PyTorch export yet: export runs trained with model.fdt off')
    return _Plan(mvptr.towers_config(model_cfg), mvptr.towers_table(model_cfg),
                 mvptr.head_table(model_cfg), (MVPTR_CONFIG, MVPTR_WEIGHTS),
                 mvptr.head_config(model_cfg), True)
  if isinstance(model_cfg, CLIPConfig):
    return _Plan(model_cfg, parameter_table(model_cfg), [])
  raise ValueError(f'open_clip export fits the clip, mamo and mvptr families, not a '
                   f'{type(model_cfg).__name__}')


FAMILY_FILES = (FDT_CONFIG, FDT_WEIGHTS, MAMO_CONFIG, MAMO_WEIGHTS, MVPTR_CONFIG, MVPTR_WEIGHTS)


def export_open_clip(model_or_params, model_cfg: CLIPConfig | MAMOConfig | MVPTRConfig,
                     out_dir: str, tokenizer_path: str | None = None) -> str:
  """Writes the directory described above; returns `out_dir` (a local path or gs://, through
  etils.epath, as is `tokenizer_path`).

  `model_or_params`: the nnx model, its nnx.State of parameters, or the same tree
  as a plain dict (e.g. restored from a checkpoint).
  """
  plan = _plan(model_cfg)
  towers_cfg = plan.towers_cfg
  leaves = named_leaves(model_or_params)
  shapes = param_shapes(model_cfg)
  fix = 'export with the model config the parameters were trained with'
  if mismatch := sorted(set(leaves) ^ set(shapes)):
    where = 'missing from the parameters' if mismatch[0] in shapes else 'not in the model of model_cfg'
    raise ValueError(f'parameter {mismatch[0]!r} is {where}: {fix}')
  towers, head, extra = {}, {}, {}  # open_clip_model, fdt_head, the family's .safetensors
  in_extra = {entry.jax for entry in plan.extra}
  for entry in plan.towers + plan.extra:
    array = np.asarray(jax.device_get(leaves[entry.jax]), np.float32)
    if array.shape != shapes[entry.jax]:
      raise ValueError(f'parameter {entry.jax!r} has shape {array.shape}, not {shapes[entry.jax]}: {fix}')
    tensor = np.asarray(entry.layout.to_torch(array), order='C')  # ascontiguousarray would make [] [1]
    (extra if entry.jax in in_extra else head if entry.in_fdt_head else towers)[entry.torch] = tensor
  if unexported := sorted(set(shapes) - {e.jax for e in plan.towers + plan.extra}):
    raise ValueError(f'parameter {unexported[0]!r} has no place in the export table: a bug in '
                     'fdt_jax.formats, please report it')

  if tokenizer_path is not None:
    _check_tokenizer(tokenizer_path, model_cfg.text.vocab_size)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  config = open_clip_config(towers_cfg)
  if plan.bidirectional:  # see above
    config['model_cfg'].update(custom_text=True)
    config['model_cfg']['text_cfg'].update(no_causal_mask=True, eos_id=model_cfg.text.vocab_size - 1)
  write_json_atomically(out / OPEN_CLIP_CONFIG, config, indent=2)
  _save(towers, out / OPEN_CLIP_WEIGHTS)
  written = {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS}
  if towers_cfg.fdt is not None:
    write_json_atomically(out / FDT_CONFIG, {
        **dataclasses.asdict(towers_cfg.fdt),
        'image_width': towers_cfg.vision.width, 'text_width': towers_cfg.text.width}, indent=2)
    _save(head, out / FDT_WEIGHTS)
    written |= {FDT_CONFIG, FDT_WEIGHTS}
  if plan.files:
    config_file, weights_file = plan.files
    write_json_atomically(out / config_file, plan.extra_config, indent=2)
    _save(extra, out / weights_file)
    written |= set(plan.files)
  if tokenizer_path is not None:
    write_atomically(out / TOKENIZER, epath.Path(tokenizer_path).read_bytes())
    written.add(TOKENIZER)
  for stale in set(FAMILY_FILES + (TOKENIZER,)) - written:
    if (out / stale).exists():  # from an earlier export there
      (out / stale).unlink()
  return out_dir


def _save(tensors: dict, path: epath.Path):
  from safetensors.numpy import save
  write_atomically(path, save(tensors, metadata={'format': 'pt'}))


def _check_tokenizer(path: str, model_vocab_size: int):
  from fdt_jax.data.tokenizer import Tokenizer
  vocab_size = Tokenizer(path, 8).vocab_size
  if vocab_size > model_vocab_size:  # fewer is fine: end-of-text is still the largest id
    raise ValueError(f'tokenizer {path} has {vocab_size} ids but the model has vocab_size '
                     f'{model_vocab_size}: give the tokenizer the model was trained with')


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
