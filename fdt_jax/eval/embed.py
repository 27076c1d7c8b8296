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

  def __call__(self, params, kind: str, count: int,
               load: Callable[[np.ndarray], dict]) -> dict[str, np.ndarray]:
    """Embeds items 0..count-1 of an evaluation set.

    kind: 'images' or 'tokens'. `load(indices)` returns this host's share as a dict:
    'inputs' (uint8 [n, H, W, 3] images or int32 [n, length] tokens) and any other
    per-item arrays to bring along (e.g. 'label'). Returns, on every host, those
    fields and 'embedding' (and 'fdt_weights' for FDT models), each [count, ...].
    """
    if count <= 0:
      raise ValueError(f'nothing to embed: the evaluation set has {count} {kind}')
    per_host = self.batch_size // jax.process_count()
    start = jax.process_index() * per_host
    out = {}
    for first in range(0, count, self.batch_size):
      indices = np.arange(first + start, first + start + per_host)
      valid = indices < count
      fields = {k: np.asarray(v) for k, v in load(indices[valid]).items()}
      fields = {k: np.concatenate([v, np.zeros((per_host - len(v), *v.shape[1:]), v.dtype)])
                for k, v in fields.items()}  # padding rows get index -1 and are dropped
      fields['index'] = np.where(valid, indices, -1)
      batch = parallel.global_batch(fields, self.mesh)
      encoded = self._encode[kind](params, batch.pop('inputs'))
      batch.update(embedding=encoded.embedding, fdt_weights=encoded.fdt_weights)
      host = parallel.to_host({k: v for k, v in batch.items() if v is not None})
      keep = host['index'] >= 0
      for key, value in host.items():
        if key not in out:
          out[key] = np.zeros((count, *value.shape[1:]), value.dtype)
        out[key][host['index'][keep]] = value[keep]
    out.pop('index')
    return out
