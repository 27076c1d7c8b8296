"""The open_clip state_dict format: which fdt_jax parameter is which open_clip tensor,
and reading open_clip checkpoints into a 'clip' family model's parameters.

Every tensor goes through ONE table, `parameter_table(cfg)`: a JAX path, the
PyTorch name and the layout that converts between the two, in both directions.
Used by `config.model.init_from` (the trainer) and by fdt_jax.export, so it lives
below both. Reading needs only `safetensors` (and `torch` for .pt/.bin/.pth).
"""

import dataclasses
import io
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from fdt_jax.formats.exported import FDT_WEIGHTS, OPEN_CLIP_WEIGHTS, TOKENIZER
from fdt_jax.models import CLIPConfig, build_model

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


def _block(j, t):
  """One residual block: ln_1, self-attention (open_clip's in_proj layout), ln_2, MLP."""
  return [
      *_layer_norm(f'{j}.ln_1', f'{t}.ln_1'),
      Entry(f'{j}.attn.in_proj.kernel', f'{t}.attn.in_proj_weight', IN_PROJ),
      Entry(f'{j}.attn.in_proj.bias', f'{t}.attn.in_proj_bias', FLAT),
      Entry(f'{j}.attn.out_proj.kernel', f'{t}.attn.out_proj.weight', OUT_PROJ),
      Entry(f'{j}.attn.out_proj.bias', f'{t}.attn.out_proj.bias', SAME),
      *_layer_norm(f'{j}.ln_2', f'{t}.ln_2'),
      *_dense(f'{j}.mlp.c_fc', f'{t}.mlp.c_fc'),
      *_dense(f'{j}.mlp.c_proj', f'{t}.mlp.c_proj'),
  ]


def _blocks(jax_name, torch_name, layers):
  return [row for i in range(layers)
          for row in _block(f'{jax_name}.resblocks.{i}', f'{torch_name}.resblocks.{i}')]


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
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
  return {name: leaf.shape for name, leaf in named_leaves(abstract).items()}


def import_open_clip(checkpoint: str, model_cfg: CLIPConfig, seed: int = 0, *,
                     tokenizer: str | None = None, text_tower: bool = True) -> nnx.State:
  """An open_clip checkpoint -> all the model's parameters, as nnx.state(model, nnx.Param).

  `checkpoint`: a .safetensors file, a .pt/.bin/.pth state_dict (read with
  torch.load(weights_only=True); a {'state_dict': ...} wrapper and 'module.'
  prefixes are fine), or a directory holding one (e.g. written by export_open_clip).
  Refuses, naming the tensor, a checkpoint with a missing, mis-shaped or unexpected
  tensor. For an FDT model the head comes from fdt_head.safetensors next to the
  checkpoint if there is one, else it keeps the fresh initialisation of `seed`.

  `tokenizer`: the sentencepiece model the new run reads text with; a text tower trained
  with another vocabulary is refused (`check_vocabulary`). `text_tower=False` imports the
  image tower (and logit scale) only; the text tower and the FDT head start fresh.
  """
  if not isinstance(model_cfg, CLIPConfig):
    raise ValueError(f'open_clip weights (config.model.init_from) fit the clip family only, '
                     f'not a {type(model_cfg).__name__}')
  path = _find_checkpoint(checkpoint)
  if text_tower and tokenizer is not None:
    check_vocabulary(path, tokenizer)
  table = parameter_table(model_cfg)
  skipped = set()  # in the checkpoint, left at their fresh initialisation
  if not text_tower:
    skipped = {entry.torch for entry in table if entry.jax.startswith(('text.', 'fdt.'))}
    table = [entry for entry in table if entry.torch not in skipped]
  shapes = param_shapes(model_cfg)
  towers = [entry for entry in table if not entry.in_fdt_head]
  arrays = _from_torch(read_state_dict(path), towers, shapes, path, skipped)
  head = str(epath.Path(path).parent / FDT_WEIGHTS)
  if model_cfg.fdt is not None and text_tower and epath.Path(head).exists():
    arrays |= _from_torch(read_state_dict(head), [e for e in table if e.in_fdt_head], shapes, head)

  if set(arrays) == set(shapes):
    params = nnx.state(nnx.eval_shape(lambda: build_model(model_cfg)), nnx.Param)
  else:  # the FDT head keeps its fresh initialisation
    params = nnx.state(build_model(model_cfg, seed), nnx.Param)

  def take(path, fresh):
    name = jax.tree_util.keystr(path, simple=True, separator='.').removesuffix('.value')
    return jnp.asarray(arrays[name]) if name in arrays else fresh

  return jax.tree_util.tree_map_with_path(take, params)


def check_vocabulary(checkpoint_file: str, tokenizer: str) -> None:
  """Refuses, in one line, a text tower trained with another vocabulary than `tokenizer`:
  its token embedding would give each id another word's meaning. An fdt_jax export keeps
  its sentencepiece model beside the weights; any other open_clip checkpoint is taken to
  read CLIP's BPE ids (49408), i.e. `data.tokenizer=clip`."""
  import sentencepiece as spm

  def pieces(path):
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(epath.Path(path).read_bytes())
    return [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]

  beside = epath.Path(checkpoint_file).parent / TOKENIZER
  clip_bpe = tokenizer == 'clip' or tokenizer.startswith('clip:')  # fdt_jax.data.clip_bpe
  if beside.exists():
    if not clip_bpe and pieces(beside) == pieces(tokenizer):
      return
    trained_with = f'the sentencepiece model {beside}'
    fix = f'--config.data.tokenizer={beside}'
  else:
    if clip_bpe:
      return
    trained_with = "CLIP's BPE vocabulary (an open_clip / OpenAI checkpoint)"
    fix = '--config.data.tokenizer=clip'
  raise ValueError(
      f'the text tower of {checkpoint_file} reads {trained_with}, not {tokenizer}: its token '
      f'embedding would mean other words; use {fix}, or set --config.model.init_text_tower=False '
      'to import the image tower only')


def _find_checkpoint(checkpoint: str) -> str:
  directory = epath.Path(checkpoint)  # local or gs://
  if not directory.is_dir():
    if not directory.is_file():
      raise FileNotFoundError(f'no open_clip checkpoint at {checkpoint}')
    return checkpoint
  for name in CHECKPOINT_NAMES:
    if (directory / name).is_file():
      return str(directory / name)
  raise FileNotFoundError(f'no open_clip checkpoint in {checkpoint}: '
                          f'expected one of {", ".join(CHECKPOINT_NAMES)}')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A safetensors file or a torch state_dict (local or gs://) -> {name: float32 numpy array}."""
  content = epath.Path(path).read_bytes()
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load
      return load(content)
    except (KeyError, TypeError):  # bfloat16, which numpy lacks: read it through torch
      from safetensors.torch import load
      return {name: tensor.float().numpy() for name, tensor in load(content).items()}
  import torch  # only for .pt/.bin/.pth
  try:
    # weights_only: tensors and containers only, never arbitrary pickled objects.
    checkpoint = torch.load(io.BytesIO(content), map_location='cpu', weights_only=True)
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


def _from_torch(state_dict: dict, table: list[Entry], shapes: dict, source: str,
                skipped: set = frozenset()) -> dict:
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
  known = {entry.torch for entry in table} | TORCH_ONLY | skipped
  if unexpected := sorted(set(state_dict) - known):
    raise ValueError(f'{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all) '
                     f'that the model has no place for; {fix}')
  return arrays
