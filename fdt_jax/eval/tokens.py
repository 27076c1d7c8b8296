"""What the FDT tokens mean: load a run, run its FDT head on a split, and keep per input
the token weights and where (which patch, which word) each token fires hardest.

    run = load_run('runs/tiny')
    acts = activations(run, 'test', max_examples=1000)
    numbers = summary(acts)          # the definitions are in fdt_jax.eval.token_stats

The model returns only the pooled weights; the per-position scores
s_ic = <query(x_i), F_c> / sqrt(fdt_dim) / temperature are recomputed here from the
model's own submodules (the towers, `model.fdt.query_image`, `query_text`, `fdt_tokens`),
and checked against the model's weights on every batch. Everything runs on one host.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from fdt_jax.data import shapes
from fdt_jax.data.pipeline import caption_text
from fdt_jax.data.sources import open_source
from fdt_jax.data.transforms import normalize_images, resize_center_crop
from fdt_jax.eval import token_stats
from fdt_jax.models.fdt import pool_scores
from fdt_jax.ops import normalize_scores
from fdt_jax.run import Run, load_run

NOT_FDT = 'the run has no FDT head (it was trained as plain CLIP, model.fdt.enabled=False)'


def _batched(fn, model, inputs: np.ndarray, batch_size: int) -> list:
  """fn(model, batch) over inputs in batches of one shape (the last one padded, then cut)."""
  outputs = []
  for start in range(0, len(inputs), batch_size):
    batch = inputs[start:start + batch_size]
    count = len(batch)
    if count < batch_size and len(inputs) > batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, 0)])
    outputs.append(jax.tree.map(lambda x: np.asarray(x)[:count], fn(model, batch)))
  return [np.concatenate(parts) for parts in zip(*outputs)]


def encode(model, *, images=None, texts=None, tokenizer=None, batch_size: int = 256):
  """(embeddings [n, dim], FDT weights [n, C] or None for CLIP) of uint8 images [n, H, W, 3]
  or of texts (strings)."""
  if (images is None) == (texts is None):
    raise ValueError('give images or texts')
  if texts is not None:
    inputs, fn = tokenizer.encode(list(texts)), jax.jit(lambda m, x: m.encode_text(x))
  else:
    inputs, fn = np.asarray(images), jax.jit(lambda m, x: m.encode_image(normalize_images(x)))
  if getattr(model, 'fdt', None) is None:
    return _batched(lambda m, x: (fn(m, x).embedding,), model, inputs, batch_size)[0], None
  return tuple(_batched(lambda m, x: tuple(fn(m, x)), model, inputs, batch_size))


def token_scores(fdt, query, features: jax.Array, token_ids: jax.Array | None = None) -> jax.Array:
  """[batch, positions, fdt_tokens] float32: s_ic as models/fdt.py computes it (only for
  `token_ids` if given)."""
  table = fdt.fdt_tokens[...].astype(fdt.dtype)  # [fdt_tokens, fdt_dim]
  if token_ids is not None:
    table = table[token_ids]
  q = query(features)  # [batch, positions, fdt_dim]
  scores = jnp.einsum('bnd,cd->bnc', q, table).astype(jnp.float32)
  return scores / (math.sqrt(fdt.cfg.dim) * fdt.cfg.temperature)


def _head_outputs(model, scores, valid, weights):
  """weights, argmax position per token [batch, C], and how far the weights recomputed
  from `scores` are from the model's (a drift in models/fdt.py shows here)."""
  pooled = pool_scores(scores, valid, model.fdt.cfg.pooling)
  recomputed = normalize_scores(model.fdt.cfg.normalizer, pooled)
  if valid is not None:
    scores = jnp.where(valid[:, :, None], scores, -jnp.inf)
  mismatch = jnp.max(jnp.abs(recomputed - weights), axis=-1)
  return weights, jnp.argmax(scores, axis=1).astype(jnp.int16), mismatch


@jax.jit
def _image_activations(model, images):
  patch_features = model.fdt_image_features(normalize_images(images))
  _, weights = model.fdt.encode_image(patch_features)
  scores = token_scores(model.fdt, model.fdt.query_image, patch_features)
  return _head_outputs(model, scores, None, weights)


@jax.jit
def _text_activations(model, tokens):
  token_features, valid = model.fdt_text_features(tokens)
  _, weights = model.fdt.encode_text(token_features, valid)
  scores = token_scores(model.fdt, model.fdt.query_text, token_features)
  return _head_outputs(model, scores, valid, weights)


@jax.jit
def _image_scores(model, images, token_ids):
  patch_features = model.fdt_image_features(normalize_images(images))
  return token_scores(model.fdt, model.fdt.query_image, patch_features, token_ids)


def image_score_maps(model, images: np.ndarray, token_ids: list[int]) -> np.ndarray:
  """float [n, len(token_ids), grid, grid]: each token's score over the patch grid."""
  ids = jnp.asarray(token_ids, jnp.int32)
  scores = _batched(lambda m, x: (_image_scores(m, x, ids),), model, np.asarray(images), 64)[0]
  grid = math.isqrt(scores.shape[1])  # scores: [n, patches, tokens]
  return scores.transpose(0, 2, 1).reshape(len(images), len(token_ids), grid, grid)


@dataclasses.dataclass
class Activations:
  """One split through the FDT head: row i of the image arrays and of the text arrays is
  example i and its first caption."""
  images: np.ndarray            # uint8 [n, H, W, 3], as the model saw them
  captions: list[str]
  image_weights: np.ndarray     # [n, C]
  text_weights: np.ndarray      # [n, C]
  image_argmax: np.ndarray      # int16 [n, C]: the patch where each token scores highest
  text_argmax: np.ndarray       # int16 [n, C]: the text position where it scores highest
  words: list[list[str]]        # words[i][j]: the word at position j of caption i
  labels: np.ndarray | None     # bool [n, len(shapes.CONCEPTS)] on shapes, else None
  step: int


def check_fdt(model) -> None:
  if getattr(model, 'fdt', None) is None:
    raise ValueError(NOT_FDT + ': inspect a run trained with FDT on')


def examples(run: Run, split: str = 'test', max_examples: int | None = None):
  """(records, uint8 images [n, size, size, 3] as the model sees them, first captions) of
  the first `max_examples` examples of `split` (default: all)."""
  size = run.model.cfg.vision.image_size
  source = open_source(run.config.data, split, size)
  count = len(source) if max_examples is None else min(max_examples, len(source))
  if count < 2:
    raise ValueError(f'split {split!r} has {len(source)} examples: at least 2 are needed')
  records = [source[i] for i in range(count)]
  images = np.stack([resize_center_crop(r['image'], size) for r in records])
  return records, images, [caption_text(r['captions'][0]) for r in records]


def activations(run: Run, split: str = 'test', max_examples: int | None = None,
                batch_size: int | None = None) -> Activations:
  """Images and first captions of `split` through the run's FDT head. The default batch
  size keeps the per-position scores [batch, positions, fdt_tokens] near 256 MB."""
  check_fdt(run.model)
  cfg = run.model.cfg
  positions = max((cfg.vision.image_size // cfg.vision.patch_size) ** 2, cfg.text.context_length)
  batch_size = batch_size or int(np.clip(2**26 // (positions * cfg.fdt.num_tokens), 1, 256))
  records, images, captions = examples(run, split, max_examples)
  tokens = run.tokenizer.encode(captions)
  image_weights, image_argmax, image_mismatch = _batched(_image_activations, run.model, images, batch_size)
  text_weights, text_argmax, text_mismatch = _batched(_text_activations, run.model, tokens, batch_size)
  worst = max(image_mismatch.max(), text_mismatch.max())
  if worst > 1e-3:
    raise RuntimeError(f'the per-position scores recomputed in {__name__} give weights {worst:.2g} '
                       'away from the model\'s: update token_scores to match models/fdt.py')
  words = [token_stats.position_words(run.tokenizer.pieces(row, token_stats.END_OF_TEXT))
           for row in tokens]
  labels = token_stats.concept_labels(records, shapes.CONCEPTS) if run.config.data.name == 'shapes' else None
  return Activations(images, captions, image_weights, text_weights, image_argmax, text_argmax,
                     words, labels, run.step)


def summary(acts: Activations, seed: int = 0) -> dict:
  """The numbers of fdt_jax.inspect (inspect.json); definitions in token_stats."""
  ts = token_stats
  num_tokens = acts.image_weights.shape[1]
  in_use = ts.tokens_in_use(acts.image_weights, acts.text_weights)
  agreement = ts.agreement(acts.image_weights, acts.text_weights)
  result = {
      'step': acts.step, 'num_examples': len(acts.images), 'num_tokens': num_tokens,
      'tokens_in_use': int(in_use.sum()), 'dead_tokens': int(num_tokens - in_use.sum()),
      'dead_share': float(1 - in_use.mean()),
      'tokens_in_use_image': int(ts.tokens_in_use(acts.image_weights).sum()),
      'tokens_in_use_text': int(ts.tokens_in_use(acts.text_weights).sum()),
      'active_per_image': float(ts.active_counts(acts.image_weights).mean()),
      'active_per_text': float(ts.active_counts(acts.text_weights).mean()),
      'effective_per_image': float(ts.effective_counts(acts.image_weights).mean()),
      'effective_per_text': float(ts.effective_counts(acts.text_weights).mean()),
      'agreement': float(agreement.mean()),
      'agreement_chance': float(ts.chance_agreement(acts.image_weights, acts.text_weights, seed).mean()),
  }
  if acts.labels is not None:
    for modality, weights in (('image', acts.image_weights), ('text', acts.text_weights)):
      for suffix, value in ts.purities(weights, acts.labels, ts.concept_types(), seed).items():
        result[f'purity_{modality}{suffix}'] = value
  return result


def top_tokens(weights: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
  """For each row of weights [n, tokens]: its k heaviest tokens as (token, weight)."""
  order = np.argsort(-weights, axis=-1)[:, :k]
  return [[(int(t), float(w[t])) for t in row if w[t] > 0] for row, w in zip(order, weights)]
