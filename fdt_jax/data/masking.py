"""Batch-level masking, run inside the jitted train step by a family's `prepare_batch`
with a key folded from (seed, step), so a resumed run masks exactly as before.

Token conventions (fdt_jax.data.tokenizer): 0 is padding and end-of-text is the
largest id of the vocabulary; the words are the positions before end-of-text.
"""

import jax
import jax.numpy as jnp


def word_positions(tokens: jax.Array) -> jax.Array:
  """bool [batch, length]: the positions holding words (before end-of-text, not padding)."""
  end_of_text = jnp.argmax(tokens, axis=-1)[:, None]
  return jnp.arange(tokens.shape[-1]) < end_of_text


def random_mask(key: jax.Array, shape: tuple[int, ...], rate: float,
                eligible: jax.Array | None = None) -> jax.Array:
  """bool `shape`: each (eligible) position masked independently with probability `rate`."""
  mask = jax.random.bernoulli(key, rate, shape)
  return mask if eligible is None else mask & eligible


def mask_tokens(key: jax.Array, tokens: jax.Array, rate: float, mask_id: int):
  """BERT-style word masking: (tokens with masked words replaced by `mask_id`, bool mask)."""
  mask = random_mask(key, tokens.shape, rate, word_positions(tokens))
  return jnp.where(mask, jnp.asarray(mask_id, tokens.dtype), tokens), mask
