"""fdt_jax parameters <-> an open_clip directory that PyTorch loads offline.

    export_open_clip(model, cfg, 'out')              # JAX -> directory
    open_clip.create_model('local-dir:out')          # PyTorch: the two towers (CLIP heads)
    fdt_jax.export.torch_fdt.load('out')             # PyTorch: the towers and the FDT head
    params = import_open_clip('out', cfg)            # directory or open_clip checkpoint -> JAX

The directory:

    open_clip_config.json         open_clip's model_cfg and preprocess_cfg
    open_clip_model.safetensors   the towers and logit_scale, under open_clip's names
    fdt_config.json               FDT models only: the head's settings
    fdt_head.safetensors          FDT models only: fdt_tokens, query_image, query_text
    tokenizer.model               the sentencepiece model, if one was given

Every tensor goes through ONE table, `parameter_table(cfg)`: a JAX path, the
PyTorch name and the layout that converts between the two, in both directions.
Reading needs only `safetensors` (and `torch` for .pt/.bin/.pth checkpoints).
"""

import dataclasses
import json
import os
import shutil
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fdt_jax.data.transforms import CLIP_MEAN, CLIP_STD
from fdt_jax.models import CLIPConfig, FDTConfig, TextConfig, VisionConfig, create_model

OPEN_CLIP_CONFIG = 'open_clip_config.json'
OPEN_CLIP_WEIGHTS = 'open_clip_model.safetensors'
FDT_CONFIG = 'fdt_config.json'
FDT_WEIGHTS = 'fdt_head.safetensors'
TOKENIZER = 'tokenizer.model'
# What open_clip looks for in a directory, in its order of preference.
CHECKPOINT_NAMES = (OPEN_CLIP_WEIGHTS, 'open_clip_pytorch_model.safetensors',
                    'open_clip_pytorch_model.bin', 'open_clip_pytorch_model.pth',
                    'model.safetensors', 'pytorch_model.bin', 'model.pth')
# Tensors that only exist on the PyTorch side: open_clip's causal mask (a buffer in
# older versions) and the metadata OpenAI's archives keep next to the weights.
TORCH_ONLY = {'attn_mask', 'input_resolution', 'context_length', 'vocab_size'}


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a Flax array is laid out in PyTorch. `to_jax` gets the Flax shape to restore."""
  to_torch: Callable
  to_jax: Callable


SAME = Layout(lambda x: x, lambda t, shape: t.reshape(shape))
# attn.in_proj.bias [3, heads, head_dim] <-> in_proj_bias [3*width]
FLAT = Layout(lambda x: x.reshape(-1), lambda t, shape: t.reshape(shape))
DENSE = Layout(lambda x: x.T, lambda t, shape: t.T)  # kernel [in, out] <-> weight [out, in]
# attn.in_proj.kernel [width, 3, heads, head_dim] <-> in_proj_weight [3*width, width]
IN_PROJ = Layout(lambda x: x.reshape(x.shape[0], -1).T, lambda t, shape: t.T.reshape(shape))
# attn.out_proj.kernel [heads, head_dim, width] <-> out_proj.weight [width, width]
OUT_PROJ = Layout(lambda x: x.reshape(-1, x.shape[-1]).T, lambda t, shape: t.T.reshape(shape))
# conv1.kernel [patch, patch, 3, width] (HWIO) <-> conv1.weight [width, 3, patch, patch] (OIHW)
CONV = Layout(lambda x: x.transpose(3, 2, 0, 1), lambda t, shape: t.transpose(2, 3, 1, 0))


class Entry(NamedTuple):
  jax: str  # 'visual.transformer.resblocks.0.attn.in_proj.kernel'
  torch: str  # 'visual.transformer.resblocks.0.attn.in_proj_weight'
  layout: Layout

  @property
  def in_fdt_head(self) -> bool:  # fdt_head.safetensors, named as torch_fdt.FDTHead's state_dict
    return self.jax.startswith('fdt.')


def _layer_norm(jax_name, torch_name):
  return [Entry(f'{jax_name}.scale', f'{torch_name}.weight', SAME),
          Entry(f'{jax_name}.bias', f'{torch_name}.bias', SAME)]


def _dense(jax_name, torch_name):
  return [Entry(f'{jax_name}.kernel', f'{torch_name}.weight', DENSE),
          Entry(f'{jax_name}.bias', f'{torch_name}.bias', SAME)]


def _blocks(jax_name, torch_name, layers):
  rows = []
  for i in range(layers):
    j, t = f'{jax_name}.resblocks.{i}', f'{torch_name}.resblocks.{i}'
    rows += [
        *_layer_norm(f'{j}.ln_1', f'{t}.ln_1'),
        Entry(f'{j}.attn.in_proj.kernel', f'{t}.attn.in_proj_weight', IN_PROJ),
        Entry(f'{j}.attn.in_proj.bias', f'{t}.attn.in_proj_bias', FLAT),
        Entry(f'{j}.attn.out_proj.kernel', f'{t}.attn.out_proj.weight', OUT_PROJ),
        Entry(f'{j}.attn.out_proj.bias', f'{t}.attn.out_proj.bias', SAME),
        *_layer_norm(f'{j}.ln_2', f'{t}.ln_2'),
        *_dense(f'{j}.mlp.c_fc', f'{t}.mlp.c_fc'),
        *_dense(f'{j}.mlp.c_proj', f'{t}.mlp.c_proj'),
    ]
  return rows


def parameter_table(cfg: CLIPConfig) -> list[Entry]:
  """Every parameter of the model: JAX path, PyTorch name, layout."""
  rows = [
      Entry('visual.conv1.kernel', 'visual.conv1.weight', CONV),
      Entry('visual.class_embedding', 'visual.class_embedding', SAME),
      Entry('visual.positional_embedding', 'visual.positional_embedding', SAME),
      *_layer_norm('visual.ln_pre', 'visual.ln_pre'),
      *_blocks('visual.transformer', 'visual.transformer', cfg.vision.layers),
      *_layer_norm('visual.ln_post', 'visual.ln_post'),
      Entry('visual.proj', 'visual.proj', SAME),
      # open_clip's CLIP keeps the text tower's parameters at the top level.
      Entry('text.token_embedding.embedding', 'token_embedding.weight', SAME),
      Entry('text.positional_embedding', 'positional_embedding', SAME),
      *_blocks('text.transformer', 'transformer', cfg.text.layers),
      *_layer_norm('text.ln_final', 'ln_final'),
      Entry('text.text_projection', 'text_projection', SAME),
      Entry('logit_scale', 'logit_scale', SAME),
  ]
  if cfg.fdt is not None:
    rows.append(Entry('fdt.fdt_tokens', 'fdt_tokens', SAME))
    for q in ('query_image', 'query_text'):
      rows += [*_layer_norm(f'fdt.{q}.ln_1', f'{q}.ln_1'), *_dense(f'fdt.{q}.fc_1', f'{q}.fc_1'),
               *_layer_norm(f'fdt.{q}.ln_2', f'{q}.ln_2'), *_dense(f'fdt.{q}.fc_2', f'{q}.fc_2')]
  return rows


def torch_shape(entry: Entry, jax_shape: tuple) -> tuple:
  return jax.eval_shape(entry.layout.to_torch, jax.ShapeDtypeStruct(jax_shape, jnp.float32)).shape


def named_leaves(tree) -> dict:
  """{'visual.conv1.kernel': leaf, ...} of a module's parameters, an nnx.State or a plain dict."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  leaves = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = jax.tree_util.keystr(path, simple=True, separator='.')
    leaves[name.removesuffix('.value')] = leaf  # nnx.Variable's value, also in restored dicts
  return leaves


def param_shapes(cfg: CLIPConfig) -> dict[str, tuple]:
  abstract = nnx.state(nnx.eval_shape(lambda: create_model(cfg)), nnx.Param)
  return {name: leaf.shape for name, leaf in named_leaves(abstract).items()}


# ----------------------------------------------------------------------------- export


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


def export_open_clip(model_or_params, model_cfg: CLIPConfig, out_dir: str,
                     tokenizer_path: str | None = None) -> str:
  """Writes the directory described above; returns `out_dir`.

  `model_or_params`: the nnx model, its nnx.State of parameters, or the same tree
  as a plain dict (e.g. restored from a checkpoint).
  """
  leaves = named_leaves(model_or_params)
  shapes = param_shapes(model_cfg)
  fix = 'export with the model config the parameters were trained with'
  if mismatch := sorted(set(leaves) ^ set(shapes)):
    where = 'missing from the parameters' if mismatch[0] in shapes else 'not in the model of model_cfg'
    raise ValueError(f'parameter {mismatch[0]!r} is {where}: {fix}')
  towers, head = {}, {}  # open_clip_model.safetensors, fdt_head.safetensors
  for entry in parameter_table(model_cfg):
    array = np.asarray(jax.device_get(leaves[entry.jax]), np.float32)
    if array.shape != shapes[entry.jax]:
      raise ValueError(f'parameter {entry.jax!r} has shape {array.shape}, not {shapes[entry.jax]}: {fix}')
    tensor = np.asarray(entry.layout.to_torch(array), order='C')  # ascontiguousarray would make [] [1]
    (head if entry.in_fdt_head else towers)[entry.torch] = tensor

  if tokenizer_path is not None:
    _check_tokenizer(tokenizer_path, model_cfg)
  os.makedirs(out_dir, exist_ok=True)
  _write_json(os.path.join(out_dir, OPEN_CLIP_CONFIG), open_clip_config(model_cfg))
  _save(towers, os.path.join(out_dir, OPEN_CLIP_WEIGHTS))
  written = {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS}
  if model_cfg.fdt is not None:
    _write_json(os.path.join(out_dir, FDT_CONFIG), {
        **dataclasses.asdict(model_cfg.fdt),
        'image_width': model_cfg.vision.width, 'text_width': model_cfg.text.width})
    _save(head, os.path.join(out_dir, FDT_WEIGHTS))
    written |= {FDT_CONFIG, FDT_WEIGHTS}
  if tokenizer_path is not None:
    shutil.copyfile(tokenizer_path, os.path.join(out_dir, TOKENIZER))
    written.add(TOKENIZER)
  for stale in {FDT_CONFIG, FDT_WEIGHTS, TOKENIZER} - written:  # from an earlier export there
    if os.path.exists(os.path.join(out_dir, stale)):
      os.remove(os.path.join(out_dir, stale))
  return out_dir


def _save(tensors: dict, path: str):
  from safetensors.numpy import save_file
  save_file(tensors, path, metadata={'format': 'pt'})
  os.chmod(path, 0o644)  # safetensors creates it 0600


def _check_tokenizer(path: str, cfg: CLIPConfig):
  from fdt_jax.data.tokenizer import Tokenizer
  vocab_size = Tokenizer(path, cfg.text.context_length).vocab_size
  if vocab_size > cfg.text.vocab_size:  # fewer is fine: end-of-text is still the largest id
    raise ValueError(f'tokenizer {path} has {vocab_size} ids but the model has vocab_size '
                     f'{cfg.text.vocab_size}: give the tokenizer the model was trained with')


def _write_json(path: str, content: dict):
  with open(path, 'w') as f:
    json.dump(content, f, indent=2)
    f.write('\n')


# ----------------------------------------------------------------------------- import


def import_open_clip(checkpoint: str, model_cfg: CLIPConfig, seed: int = 0) -> nnx.State:
  """An open_clip checkpoint -> all the model's parameters, as nnx.state(model, nnx.Param).

  `checkpoint`: a .safetensors file, a .pt/.bin/.pth state_dict (read with
  torch.load(weights_only=True); a {'state_dict': ...} wrapper and 'module.'
  prefixes are fine), or a directory holding one (e.g. written by export_open_clip).
  Refuses, naming the tensor, a checkpoint with a missing, mis-shaped or unexpected
  tensor. For an FDT model the head comes from fdt_head.safetensors next to the
  checkpoint if there is one, else it keeps the fresh initialisation of `seed`.
  """
  path = _find_checkpoint(checkpoint)
  table = parameter_table(model_cfg)
  shapes = param_shapes(model_cfg)
  towers = [entry for entry in table if not entry.in_fdt_head]
  arrays = _from_torch(read_state_dict(path), towers, shapes, path)
  head = os.path.join(os.path.dirname(path), FDT_WEIGHTS)
  if model_cfg.fdt is not None and os.path.exists(head):
    arrays |= _from_torch(read_state_dict(head), [e for e in table if e.in_fdt_head], shapes, head)

  if set(arrays) == set(shapes):
    params = nnx.state(nnx.eval_shape(lambda: create_model(model_cfg)), nnx.Param)
  else:  # the FDT head keeps its fresh initialisation
    params = nnx.state(create_model(model_cfg, seed), nnx.Param)

  def take(path, fresh):
    name = jax.tree_util.keystr(path, simple=True, separator='.').removesuffix('.value')
    return jnp.asarray(arrays[name]) if name in arrays else fresh

  return jax.tree_util.tree_map_with_path(take, params)


def _find_checkpoint(checkpoint: str) -> str:
  if not os.path.isdir(checkpoint):
    if not os.path.isfile(checkpoint):
      raise FileNotFoundError(f'no open_clip checkpoint at {checkpoint}')
    return checkpoint
  for name in CHECKPOINT_NAMES:
    if os.path.isfile(os.path.join(checkpoint, name)):
      return os.path.join(checkpoint, name)
  raise FileNotFoundError(f'no open_clip checkpoint in {checkpoint}: '
                          f'expected one of {", ".join(CHECKPOINT_NAMES)}')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A safetensors file or a torch state_dict -> {name: float32 numpy array}."""
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load_file
      return load_file(path)
    except TypeError:  # bfloat16, which numpy lacks: read it through torch
      from safetensors.torch import load_file
      return {name: tensor.float().numpy() for name, tensor in load_file(path).items()}
  import torch  # only for .pt/.bin/.pth
  try:
    # weights_only: tensors and containers only, never arbitrary pickled objects.
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 - torch raises several types for foreign files
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f'{path} is not a plain state_dict that torch.load(weights_only=True) '
                     f'accepts: {first_line}') from None
  if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
    checkpoint = checkpoint['state_dict']  # open_clip's training checkpoints
  if not isinstance(checkpoint, dict):
    raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state_dict')
  return {name.removeprefix('module.'): value.detach().float().numpy()
          for name, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def _from_torch(state_dict: dict, table: list[Entry], shapes: dict, source: str) -> dict:
  """Checks the state_dict against the table and converts it to {JAX path: array}."""
  def squeezed(shape):  # [] and [1] (open_clip's nonscalar_logit_scale) are the same thing
    return tuple(d for d in shape if d != 1)

  fix = 'is it the model that model_cfg describes?'
  arrays = {}
  for entry in table:
    expected = torch_shape(entry, shapes[entry.jax])
    if entry.torch not in state_dict:
      raise ValueError(f'{source}: tensor {entry.torch!r} is missing (expected shape {expected}); {fix}')
    tensor = state_dict[entry.torch]
    if squeezed(tensor.shape) != squeezed(expected):
      raise ValueError(f'{source}: tensor {entry.torch!r} has shape {tuple(tensor.shape)}, '
                       f'expected {expected}; {fix}')
    tensor = np.asarray(tensor, np.float32).reshape(expected)
    arrays[entry.jax] = np.asarray(entry.layout.to_jax(tensor, shapes[entry.jax]))
  known = {entry.torch for entry in table} | TORCH_ONLY
  if unexpected := sorted(set(state_dict) - known):
    raise ValueError(f'{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all) '
                     f'that the model has no place for; {fix}')
  return arrays


def read_config(directory: str) -> CLIPConfig:
  """The CLIPConfig of a directory written by export_open_clip."""
  with open(os.path.join(directory, OPEN_CLIP_CONFIG)) as f:
    model_cfg = json.load(f)['model_cfg']
  vision, text = model_cfg['vision_cfg'], model_cfg['text_cfg']
  fdt = None
  if os.path.exists(os.path.join(directory, FDT_CONFIG)):
    with open(os.path.join(directory, FDT_CONFIG)) as f:
      fdt = json.load(f)
    fdt = FDTConfig(**{k: v for k, v in fdt.items() if k not in ('image_width', 'text_width')})
  return CLIPConfig(
      embed_dim=model_cfg['embed_dim'],
      vision=VisionConfig(vision['image_size'], vision['patch_size'], vision['width'],
                          vision['layers'], vision['width'] // vision['head_width'],
                          vision['mlp_ratio']),
      text=TextConfig(text['context_length'], text['vocab_size'], text['width'], text['layers'],
                      text['heads'], text['mlp_ratio']),
      fdt=fdt, quick_gelu=model_cfg['quick_gelu'])
