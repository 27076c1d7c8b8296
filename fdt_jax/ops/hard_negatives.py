"""Hard negatives mined from the in-batch similarities: sampled (ALBEF / MAMO's ITM recipe)
or the hardest (MVPTR's).

Here, below the models, because the model that scores the mined pairs (a fusion
encoder) runs them in its own forward pass; objectives only read the result.
"""

import jax
import jax.numpy as jnp


def sample_hard_negatives(similarity: jax.Array, uniform: jax.Array) -> jax.Array:
  """For each row i of similarity [n, m] (pair i's positive at column i), one column
  j != i drawn with probability softmax(similarity[i])_j renormalised without the
  positive: the more similar a negative, the likelier. Returns int32 [n].

  Drawn by inverse CDF at uniform[i] in [0, 1): the randomness is a per-example array
  (drawn from the step's key by the family's prepare_batch), so it splits into
  microbatches with the batch. No gradient flows.
  """
  n = similarity.shape[0]
  logits = jnp.where(jnp.eye(n, similarity.shape[1], dtype=bool), -jnp.inf,
                     jax.lax.stop_gradient(similarity).astype(jnp.float32))
  cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
  drawn = jnp.sum(cdf <= uniform[:, None] * cdf[:, -1:], axis=-1)
  return jnp.minimum(drawn, similarity.shape[1] - 1).astype(jnp.int32)


def hardest_negatives(similarity: jax.Array) -> tuple[jax.Array, jax.Array]:
  """similarity[i, j] of text i and image j (the contrastive scores of the batch) -> (the
  most similar other image of each text, the most similar other text of each image), both
  int32 [n]: MVPTR's ITM negatives."""
  off_diagonal = jnp.where(jnp.eye(similarity.shape[0], dtype=bool), -jnp.inf,
                           jax.lax.stop_gradient(similarity).astype(jnp.float32))
  return (jnp.argmax(off_diagonal, axis=1).astype(jnp.int32),
          jnp.argmax(off_diagonal, axis=0).astype(jnp.int32))
