"""The FDT model in PyTorch: an open_clip CLIP plus the FDT head, from an exported directory.

    model, preprocess, tokenizer = torch_fdt.load_exported('out')  # written by export_open_clip
    image = model.encode_image(preprocess(pil_image)[None])
    text = model.encode_text(tokenizer(['a red circle']))
    image.embedding, image.fdt_weights             # as fdt_jax.models.CLIP.encode_image

Needs torch, open_clip and sentencepiece (`pip install -e .[torch]`), and imports no
JAX: a PyTorch user reads the directory without the training stack.

The head repeats fdt_jax/models/fdt.py line for line; the towers are open_clip's
own, read through its public `forward_intermediates`: the image's last block
outputs without the class token (before ln_post), the text's last block outputs
through ln_final, positions after end-of-text masked.
"""

import sys
import warnings

if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
  # PyPI's CUDA torch wheels bring triton, which torchvision imports; loading triton's
  # library after tensorflow-cpu 2.21's crashes the process (segfault). Triton only
  # compiles GPU kernels for torch.compile, which nothing here uses.
  warnings.warn('tensorflow is already imported and importing triton after it crashes: '
                'torch runs without triton in this process (import torch first to keep it)')
  sys.modules['triton'] = None

import json
import math
import os
from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import load_file
from torch import nn

from fdt_jax.data.tokenizer import Tokenizer  # sentencepiece and numpy only
from fdt_jax.formats.exported import (FDT_CONFIG, FDT_WEIGHTS, MAMO_CONFIG, MVPTR_CONFIG,
                                      OPEN_CLIP_CONFIG, TOKENIZER)


class Encoded(NamedTuple):
  embedding: torch.Tensor  # [batch, dim], L2-normalised
  fdt_weights: torch.Tensor | None  # [batch, fdt_tokens] in FDT mode, else None


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
  """Euclidean projection onto the probability simplex along the last axis, in float32."""
  z = scores.float()
  z = z - z.max(dim=-1, keepdim=True).values  # translation invariant; keeps the "+1" below exact
  z_sorted = z.sort(dim=-1, descending=True).values
  cumsum = z_sorted.cumsum(dim=-1)
  k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
  support_size = (1 + k * z_sorted > cumsum).sum(dim=-1, keepdim=True)  # k = 1 always qualifies
  tau = (cumsum.gather(-1, support_size - 1) - 1) / support_size
  return (z - tau).clamp(min=0).to(scores.dtype)


NORMALIZERS = {
    'sparsemax': sparsemax,
    'softmax': lambda scores: torch.softmax(scores.float(), dim=-1).to(scores.dtype),
    'sigmoid': torch.sigmoid,
}


def pool_scores(scores: torch.Tensor, valid: torch.Tensor | None, pooling: str) -> torch.Tensor:
  """[batch, positions, tokens] -> [batch, tokens], over valid positions only."""
  if valid is None:
    valid = torch.ones(scores.shape[:2], dtype=torch.bool, device=scores.device)
  valid = valid[:, :, None]
  if pooling == 'max':
    return scores.masked_fill(~valid, -math.inf).amax(dim=1)
  total = scores.masked_fill(~valid, 0).sum(dim=1)
  if pooling == 'sum':
    return total
  return total / valid.sum(dim=1).clamp(min=1).to(scores.dtype)


def l2_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
  x = x.float()
  return x / (x.norm(dim=-1, keepdim=True) + eps)


class QueryNetwork(nn.Module):
  """LayerNorm -> Linear -> GELU -> LayerNorm -> Linear, from a tower's width to the FDT dim."""

  def __init__(self, width: int, dim: int):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width, eps=1e-5)
    self.fc_1 = nn.Linear(width, dim)
    self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
    self.fc_2 = nn.Linear(dim, dim)

  def forward(self, x):
    return self.fc_2(self.ln_2(F.gelu(self.fc_1(self.ln_1(x)))))


class FDTHead(nn.Module):
  """The shared token table and one query network per modality (fdt_config.json's fields)."""

  def __init__(self, num_tokens: int, dim: int, temperature: float, pooling: str, normalizer: str,
               image_width: int, text_width: int, init_scale: float = 1.0, max_pool: str = 'plain'):
    super().__init__()
    # How the table was initialised and how JAX computed the max-pool in training (same
    # values either way): the weights are loaded, and PyTorch pools plainly.
    del init_scale, max_pool
    if normalizer not in NORMALIZERS:
      raise ValueError(f'unknown FDT normalizer {normalizer!r}: use one of {sorted(NORMALIZERS)}')
    self.dim, self.temperature, self.pooling, self.normalizer = dim, temperature, pooling, normalizer
    self.fdt_tokens = nn.Parameter(torch.zeros(num_tokens, dim))
    self.query_image = QueryNetwork(image_width, dim)
    self.query_text = QueryNetwork(text_width, dim)

  def ground(self, query: QueryNetwork, features: torch.Tensor, valid: torch.Tensor | None):
    """features [batch, positions, width] -> Encoded: [batch, dim], [batch, fdt_tokens]."""
    tokens = self.fdt_tokens  # [fdt_tokens, dim]
    q = query(features)  # [batch, positions, dim]
    scores = torch.einsum('bnd,cd->bnc', q, tokens) / (math.sqrt(self.dim) * self.temperature)
    pooled = pool_scores(scores, valid, self.pooling)  # [batch, fdt_tokens]
    weights = NORMALIZERS[self.normalizer](pooled.float())
    embedding = weights.to(tokens.dtype) @ tokens  # [batch, dim]
    if self.normalizer == 'sigmoid':  # sigmoid weights do not sum to one
      embedding = embedding / weights.sum(dim=-1, keepdim=True).to(tokens.dtype)
    return Encoded(l2_normalize(embedding), weights)


class FDTCLIP(nn.Module):
  """open_clip's CLIP and, for FDT models, the FDT head: the embeddings of fdt_jax's CLIP."""

  def __init__(self, clip: open_clip.CLIP, fdt: FDTHead | None):
    super().__init__()
    self.clip = clip
    self.fdt = fdt
    # PIL image -> [3, H, W]: open_clip's evaluation transform for the directory's preprocess_cfg.
    self.preprocess = image_transform_v2(
        PreprocessCfg(**open_clip.get_model_preprocess_cfg(clip)), is_train=False)

  def encode_image(self, images: torch.Tensor) -> Encoded:
    """images: [batch, 3, height, width], normalised with the directory's preprocess_cfg."""
    if self.fdt is None:
      return Encoded(l2_normalize(self.clip.encode_image(images)), None)
    patch_features = self.clip.visual.forward_intermediates(
        images, indices=1, intermediates_only=True, output_fmt='NLC')['image_intermediates'][0]
    return self.fdt.ground(self.fdt.query_image, patch_features, None)  # [batch, patches, width]

  def encode_text(self, tokens: torch.Tensor) -> Encoded:
    """tokens: [batch, context_length], 0-padded, end-of-text = the largest id."""
    if self.fdt is None:
      return Encoded(l2_normalize(self.clip.encode_text(tokens)), None)
    last_block = self.clip.forward_intermediates(
        text=tokens, text_indices=1, intermediates_only=True)['text_intermediates'][0]
    token_features = self.clip.ln_final(last_block)  # [batch, length, width]
    end_of_text = tokens.argmax(dim=-1)
    valid = torch.arange(tokens.shape[-1], device=tokens.device) <= end_of_text[:, None]
    return self.fdt.ground(self.fdt.query_text, token_features, valid)

  def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    image, text = self.encode_image(images), self.encode_text(tokens)
    out = {'image_embedding': image.embedding, 'text_embedding': text.embedding,
           'logit_scale': self.clip.logit_scale}
    if self.fdt is not None:
      out['image_fdt_weights'] = image.fdt_weights
      out['text_fdt_weights'] = text.fdt_weights
    return out


def load(directory: str, device: str | torch.device = 'cpu') -> FDTCLIP:
  """The model in a directory written by fdt_jax.export.export_open_clip, in eval mode."""
  for family, marker in (('mamo', MAMO_CONFIG), ('mvptr', MVPTR_CONFIG)):
    if os.path.exists(os.path.join(directory, marker)):
      raise ValueError(f'{directory} holds a {family} model: load it with fdt_jax.export.torch_{family}.load')
  clip = open_clip.create_model(f'local-dir:{directory}', device=device)
  fdt = None
  if os.path.exists(os.path.join(directory, FDT_CONFIG)):
    with open(os.path.join(directory, FDT_CONFIG)) as f:
      fdt = FDTHead(**json.load(f))
    fdt.load_state_dict(load_file(os.path.join(directory, FDT_WEIGHTS)))  # strict: every tensor
  return FDTCLIP(clip, fdt).to(device).eval()


class SentencePieceTokenizer:
  """texts -> LongTensor [n, context_length]: the ids the model was trained with (pieces,
  end-of-text = the largest id, 0-padding), called like open_clip's tokenizers."""

  def __init__(self, path: str, context_length: int):
    self.context_length = context_length
    self._tokenizer = Tokenizer(path, context_length)
    self.vocab_size = self._tokenizer.vocab_size

  def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
    if context_length not in (None, self.context_length):
      raise ValueError(f'the model reads {self.context_length} tokens, not {context_length}: '
                       'leave context_length out')
    return torch.from_numpy(self._tokenizer.encode(texts)).long()

  def decode(self, tokens) -> str | list[str]:
    return self._tokenizer.decode(torch.as_tensor(tokens).numpy())


def load_tokenizer(directory: str) -> SentencePieceTokenizer:
  """The sentencepiece model exported alongside, padding to the model's context length."""
  with open(os.path.join(directory, OPEN_CLIP_CONFIG)) as f:
    context_length = json.load(f)['model_cfg']['text_cfg']['context_length']
  path = os.path.join(directory, TOKENIZER)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {TOKENIZER} in {directory}: export with tokenizer_path=... '
                            '(python -m fdt_jax.export copies the run\'s); a run trained with '
                            f'data.tokenizer=clip reads open_clip.get_tokenizer(\'local-dir:{directory}\')')
  return SentencePieceTokenizer(path, context_length)


def load_exported(directory: str, device: str | torch.device = 'cpu'):
  """(model, preprocess, tokenizer) of an exported directory, like open_clip's
  create_model_and_transforms plus get_tokenizer: the FDTCLIP in eval mode, the PIL image ->
  [3, H, W] evaluation transform, and the tokenizer the model was trained with."""
  model = load(directory, device)
  return model, model.preprocess, load_tokenizer(directory)
