"""Embedding whole evaluation sets in padded global batches, on every host alike.

Every host runs the same number of steps: the last global batch is padded, and
padded rows carry index -1 so they never reach a metric. Each host reads only its
share of a batch, through grain (fdt_jax.data.pipeline.eval_batches); the embeddings
come back to every host with their indices.
"""

import jax
import numpy as np
from flax import nnx

from fdt_jax import parallel
from fdt_jax.data.pipeline import eval_batches
from fdt_jax.data.transforms import normalize_images


class Embedder:
  """Jitted image and text encoders shared by all evaluators of a run."""

  def __init__(self, graphdef, mesh, params_shardings, batch_size: int, num_workers: int = 0):
    parallel.check_batch_size(batch_size, mesh)
    self.mesh = mesh
    self.graphdef = graphdef  # for evaluators that run more of the model than its embeddings
    self.params_shardings = params_shardings
    self.batch_size = batch_size
    self.num_workers = num_workers
    batch = parallel.batch_sharding(mesh)

    def encode_images(params, images):
      return nnx.merge(graphdef, params).encode_image(normalize_images(images))

    def encode_texts(params, tokens):
      return nnx.merge(graphdef, params).encode_text(tokens)

    jit = lambda f: jax.jit(f, in_shardings=(params_shardings, batch), out_shardings=batch)
    self._encode = {'images': jit(encode_images), 'tokens': jit(encode_texts)}

  def __call__(self, params, kind: str, examples) -> dict[str, np.ndarray]:
    """Embeds every item of `examples`, a random-access sequence of dicts: 'inputs'
    (uint8 [H, W, 3] images or int32 [length] tokens, by `kind`) and any other per-item
    arrays to bring along (e.g. 'label'). Returns, on every host, those fields and
    'embedding' (and 'fdt_weights' for FDT models), each [len(examples), ...]."""

    def encode(params, batch):
      encoded = self._encode[kind](params, batch.pop('inputs'))
      return {**batch, 'embedding': encoded.embedding, 'fdt_weights': encoded.fdt_weights}

    return self.map(params, encode, examples, what=kind)

  def jit(self, fn):
    """fn(params, batch) jitted with the parameters' and the batch's shardings."""
    batch = parallel.batch_sharding(self.mesh)
    return jax.jit(fn, in_shardings=(self.params_shardings, batch), out_shardings=batch)

  def map(self, params, fn, examples, what: str = 'examples') -> dict[str, np.ndarray]:
    """fn(params, batch) -> {name: [batch, ...]} over every item of `examples` in padded
    global batches; the results, on every host, each [len(examples), ...] in item order."""
    count = len(examples)
    if count <= 0:
      raise ValueError(f'nothing to embed: the evaluation set has {count} {what}')
    out = {}
    for fields in eval_batches(examples, batch_size=self.batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), num_workers=self.num_workers):
      batch = parallel.global_batch(fields, self.mesh)
      index = batch.pop('index')
      results = fn(params, batch)
      host = parallel.to_host({k: v for k, v in {**results, 'index': index}.items() if v is not None})
      keep = host['index'] >= 0
      for key, value in host.items():
        if key not in out:
          out[key] = np.zeros((count, *value.shape[1:]), value.dtype)
        out[key][host['index'][keep]] = value[keep]
    out.pop('index')
    return out
