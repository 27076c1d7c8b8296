"""MAMO's objectives beside ITC (the registered 'infonce'): image-text matching, masked
words, the explicit patch target and the implicit target (models/mamo.py says what each
reads). Equal weights are the paper's (review); each is a config value.

The two regression targets are the EMA teacher's features of the unmasked pair, layer-
normalised without parameters and compared by mean squared error at the masked positions
only (normalisation and loss type are our choice: the paper's are unknown).
"""

import jax
import jax.numpy as jnp
import optax

from fdt_jax.objectives.registry import Objective, register_objective


def _masked_mean(values, mask):
  return jnp.sum(values * mask) / jnp.maximum(mask.sum(), 1)


def itm(outputs, batch):
  """Cross-entropy of the match head: the first third of itm_logits are the pairs (label 1),
  the rest hard negatives (label 0)."""
  del batch
  logits = outputs['itm_logits'].astype(jnp.float32)
  n = logits.shape[0] // 3
  labels = jnp.concatenate([jnp.ones(n, jnp.int32), jnp.zeros(2 * n, jnp.int32)])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}


def mlm(outputs, batch):
  """Cross-entropy of the masked words, predicted by the fusion encoder with the (masked)
  image visible."""
  mask = batch['word_mask']
  losses = optax.softmax_cross_entropy_with_integer_labels(
      outputs['mlm_logits'].astype(jnp.float32), batch['tokens'])
  correct = jnp.argmax(outputs['mlm_logits'], -1) == batch['tokens']
  return _masked_mean(losses, mask), {'accuracy': _masked_mean(correct, mask)}


def standardize(x):
  """Layer normalisation without parameters (the targets' scale does not drift)."""
  x = x.astype(jnp.float32)
  return (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)


def _regression(prediction, target, mask):
  error = jnp.mean((prediction.astype(jnp.float32) - standardize(jax.lax.stop_gradient(target))) ** 2, -1)
  return _masked_mean(error, mask), {}


def patch_target(outputs, batch):
  """MIM, explicit: the teacher's patch features at the masked patches."""
  return _regression(outputs['patch_prediction'], outputs['teacher']['patch_features'],
                     batch['patch_mask'])


def implicit_target(outputs, batch):
  """MRM, implicit: the teacher's fusion outputs of the unmasked pair at the masked words
  and, with the image stream (model.image_fusion), at the masked patches: the mean of the
  two modalities' losses (weighting them equally, whatever the mask ratios, is our choice)."""
  words, _ = _regression(outputs['implicit_prediction'], outputs['teacher']['fused'],
                         batch['word_mask'])
  if 'implicit_image_prediction' not in outputs:
    return words, {}
  patches, _ = _regression(outputs['implicit_image_prediction'],
                           outputs['teacher']['fused_patches'], batch['patch_mask'])
  return (words + patches) / 2, {'words': words, 'patches': patches}


register_objective(Objective('itm', itm, needs=('itm_logits',)))
register_objective(Objective('mlm', mlm, needs=('mlm_logits',)))
register_objective(Objective('patch_target', patch_target, needs=('patch_prediction', 'teacher')))
register_objective(Objective('implicit_target', implicit_target,
                             needs=('implicit_prediction', 'teacher')))
