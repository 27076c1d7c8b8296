"""What the FDT tokens mean: which tokens an input uses, which tokens a concept uses in
each modality, and whether the two modalities agree (the paper's claim).

    model, tokenizer, config = load_run('runs/tiny')
    images = concept_tokens(image_weights, labels, CONCEPTS)   # concept -> top tokens
    texts = concept_tokens(text_weights, labels, CONCEPTS)
    modality_agreement(images, texts)                          # concept -> overlap in [0, 1]

On the embedded 'shapes' data the concepts of every image and caption are known, so
agreement is measured exactly. Everything here runs on one host (notebooks).
"""

import jax
import numpy as np

from fdt_jax.data.transforms import normalize_images
from fdt_jax.run import load_run

__all__ = ['concept_labels', 'concept_tokens', 'encode', 'load_run', 'modality_agreement',
           'top_tokens']


def encode(model, *, images=None, texts=None, tokenizer=None, batch_size: int = 256):
  """Embeddings and FDT weights of uint8 images [n, H, W, 3] or of texts (strings)."""
  if (images is None) == (texts is None):
    raise ValueError('give images or texts')
  if texts is not None:
    inputs, fn = tokenizer.encode(list(texts)), jax.jit(lambda m, x: m.encode_text(x))
  else:
    inputs, fn = np.asarray(images), jax.jit(lambda m, x: m.encode_image(normalize_images(x)))
  parts = [fn(model, inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
  embedding = np.concatenate([np.asarray(p.embedding) for p in parts])
  if parts[0].fdt_weights is None:
    raise ValueError('the model has no FDT head (it was trained as plain CLIP)')
  return embedding, np.concatenate([np.asarray(p.fdt_weights) for p in parts])


def top_tokens(weights: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
  """For each row of weights [n, tokens]: its k heaviest tokens as (token, weight)."""
  order = np.argsort(-weights, axis=-1)[:, :k]
  return [[(int(t), float(w[t])) for t in row if w[t] > 0] for row, w in zip(order, weights)]


def concept_tokens(weights: np.ndarray, labels: np.ndarray, concepts, k: int = 5) -> dict:
  """concept -> the k tokens whose mean weight rises most on inputs with the concept.

  weights: [n, tokens]; labels: bool [n, len(concepts)], True where input i shows concept c.
  """
  labels = np.asarray(labels, bool)
  overall = weights.mean(0)
  result = {}
  for c, name in enumerate(concepts):
    if labels[:, c].any() and not labels[:, c].all():
      lift = weights[labels[:, c]].mean(0) - overall
      result[name] = [int(t) for t in np.argsort(-lift)[:k] if lift[t] > 0]
  return result


def modality_agreement(image_tokens: dict, text_tokens: dict) -> dict:
  """concept -> |shared top tokens| / k: 1 when both modalities use the same tokens for it."""
  return {name: len(set(image_tokens[name]) & set(text_tokens[name])) / max(len(image_tokens[name]), 1)
          for name in image_tokens if name in text_tokens}


def concept_labels(records, concepts) -> np.ndarray:
  """bool [n, len(concepts)] from 'shapes' records (their 'concepts' field holds ids)."""
  labels = np.zeros((len(records), len(concepts)), bool)
  for i, record in enumerate(records):
    labels[i, np.asarray(record['concepts'], int)] = True
  return labels
