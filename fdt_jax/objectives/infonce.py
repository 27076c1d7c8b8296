"""Symmetric InfoNCE (CLIP's contrastive loss) over the whole global batch.

Under jit the batch axis may be sharded over many devices; the similarity matrix
below is still [global_batch, global_batch], so every example sees every other
example of the step as a negative, however the batch is laid out.
"""

import jax
import jax.numpy as jnp
import optax

from fdt_jax.objectives.registry import Objective, register_objective

MAX_LOGIT_SCALE = 100.0


def infonce(image_embedding: jax.Array, text_embedding: jax.Array, logit_scale: jax.Array):
  """image/text_embedding: [batch, dim], L2-normalised; logit_scale: the log of the scale.

  Returns (loss, metrics): the mean of the image->text and text->image
  cross-entropies, and the two retrieval accuracies within the batch.
  """
  scale = jnp.minimum(jnp.exp(logit_scale.astype(jnp.float32)), MAX_LOGIT_SCALE)
  logits = scale * image_embedding.astype(jnp.float32) @ text_embedding.astype(jnp.float32).T
  labels = jnp.arange(logits.shape[0])
  loss_i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  loss_t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  metrics = {
      'loss_i2t': loss_i2t,
      'loss_t2i': loss_t2i,
      'accuracy_i2t': jnp.mean(jnp.argmax(logits, axis=1) == labels),
      'accuracy_t2i': jnp.mean(jnp.argmax(logits, axis=0) == labels),
      'logit_scale': scale,
  }
  return (loss_i2t + loss_t2i) / 2, metrics


def infonce_objective(outputs: dict[str, jax.Array], batch: dict[str, jax.Array]):
  """The registry's form: the model's outputs in, (loss, metrics) out."""
  del batch  # the positives are the pairs on the diagonal
  return infonce(outputs['image_embedding'], outputs['text_embedding'], outputs['logit_scale'])


register_objective(Objective('infonce', infonce_objective,
                             needs=('image_embedding', 'text_embedding', 'logit_scale')))
