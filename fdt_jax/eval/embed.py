"""Embedding whole evaluation sets in padded global batches, on every host alike.

Every host runs the same number of steps: the last global batch is padded, and
padded rows carry index -1 so they never reach a metric. Each host loads only its
share of a batch; the embeddings come back to every host with their indices.
"""

from typing import Callable

import jax
import numpy as np
from flax import nnx

from fdt_jax import parallel
from fdt_jax.data.transforms import normalize_images


class Embedder:
  """Jitted image and text encoders shared by all evaluators of a run."""

  def __init__(self, graphdef, mesh, params_shardings, batch_size: int):
    parallel.check_batch_size(batch_size, mesh)
    self.mesh = mesh
    self.batch_size = batch_size
    batch = parallel.batch_sharding(mesh)

    def encode_images(params, images):
      return nnx.merge(graphdef, params).encode_image(normalize_images(images))

    def encode_texts(params, tokens):
      return nnx.merge(graphdef, params).encode_text(tokens)

    jit = lambda f: jax.jit(f, in_shardings=(params_shardings, batch), out_shardings=batch)
    self._encode = {'images': jit(encode_images), 'tokens': jit(encode_texts)}

  def __call__(self, params, kind: str, count: int, load: Callable[[np.ndarray], np.ndarray],
               with_fdt_weights: bool = False):
    """Embeds items 0..count-1; `load(indices)` returns this host's inputs for them.

    kind: 'images' (load gives uint8 [n, H, W, 3]) or 'tokens' (int32 [n, length]).
    Returns float32 [count, dim] (and the FDT weights [count, tokens] if asked).
    """
    per_host = self.batch_size // jax.process_count()
    start = jax.process_index() * per_host
    embeddings, weights = None, None
    if count <= 0:
      raise ValueError(f'nothing to embed: the evaluation set has {count} {kind}')
    for first in range(0, count, self.batch_size):
      indices = np.arange(first + start, first + start + per_host)
      valid = indices < count
      inputs = load(indices[valid])
      if not valid.all():  # pad with zeros; index -1 drops them below
        pad = np.zeros((per_host - len(inputs), *inputs.shape[1:]), inputs.dtype)
        inputs = np.concatenate([inputs, pad])
      batch = parallel.global_batch({'x': inputs, 'index': np.where(valid, indices, -1)}, self.mesh)
      encoded = self._encode[kind](params, batch['x'])
      index, emb, w = parallel.to_host((batch['index'], encoded.embedding, encoded.fdt_weights))
      if embeddings is None:
        embeddings = np.zeros((count, emb.shape[-1]), np.float32)
        if with_fdt_weights and w is not None:
          weights = np.zeros((count, w.shape[-1]), np.float32)
      keep = index >= 0
      embeddings[index[keep]] = emb[keep]
      if weights is not None:
        weights[index[keep]] = w[keep]
    return (embeddings, weights) if with_fdt_weights else embeddings
