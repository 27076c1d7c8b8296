"""MVPTR's concept-level objectives (Li et al., ACM MM 2022, arXiv 2201.12596; details as the
authors' public code, Junction4Nako/mvp_pytorch, trains them): masked concept recovery and
weakly supervised phrase grounding (the hardest in-batch negatives of its image-text
matching are in ops/hard_negatives.py, where the model picks them). Functions of arrays; the MVPTR model
family that produces their inputs is not in the codebase yet, so they are not registered
as objectives.

Randomness (WPG's draw among the top 3 and its negative image) comes in as arrays drawn by
the family's prepare_batch from the step's key, so a resumed run draws the same.
"""

import jax
import jax.numpy as jnp
import optax

WPG_MARGIN = 0.2  # the authors' code
WPG_TOP = 3  # a phrase's score is one of its 3 best region cosines, drawn at random


def masked_concept_recovery(logits: jax.Array, tags: jax.Array, masked: jax.Array):
  """MCR: cross-entropy of the masked image tags, predicted from the visual encoder.

  logits [batch, tags, concept_vocab]; tags int [batch, tags] (the true ids); masked bool
  [batch, tags]. Returns (mean over masked tags, metrics); 0 when nothing is masked.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tags)
  count = jnp.maximum(masked.sum(), 1)
  correct = (jnp.argmax(logits, -1) == tags) & masked
  return jnp.sum(losses * masked) / count, {'accuracy': correct.sum() / count,
                                            'masked': masked.sum()}


def _l2_normalize(x):
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def grounding_scores(phrases: jax.Array, phrase_valid: jax.Array, regions: jax.Array,
                     choice: jax.Array) -> jax.Array:
  """score(T_b, I_b) for each b: the mean over T_b's valid phrases of one of the phrase's
  WPG_TOP best cosines with I_b's regions, the `choice`-th (0 = the best).

  phrases [batch, P, D], phrase_valid bool [batch, P], regions [batch, R, D], choice int
  [batch, P] in [0, WPG_TOP). Returns [batch]; 0 for a caption without phrases.
  """
  cosines = jnp.einsum('bpd,brd->bpr', _l2_normalize(phrases), _l2_normalize(regions))
  best = jax.lax.top_k(cosines, WPG_TOP)[0]  # [batch, P, WPG_TOP], descending
  picked = jnp.take_along_axis(best, choice[..., None], axis=-1)[..., 0]
  count = jnp.maximum(phrase_valid.sum(-1), 1)
  return jnp.sum(picked * phrase_valid, -1) / count


def phrase_grounding(phrases: jax.Array, phrase_valid: jax.Array, regions: jax.Array,
                     negative: jax.Array, choice_positive: jax.Array, choice_negative: jax.Array,
                     margin: float = WPG_MARGIN):
  """WPG: a caption's phrases must score higher with its own image's regions than with
  another image's, by `margin`: max(0, margin + s(T_b, I_negative[b]) - s(T_b, I_b)), averaged
  over the captions that have a phrase. Phrases and regions are the fusion encoder's last
  layer for each pair (the negative image's regions as fused with its own caption, as the
  authors' code takes them from the same batch of fused outputs).

  negative int [batch]: another example's index; choice_*: [batch, P] as in grounding_scores.
  """
  positive = grounding_scores(phrases, phrase_valid, regions, choice_positive)
  negative_scores = grounding_scores(phrases, phrase_valid, regions[negative], choice_negative)
  hinge = jnp.maximum(0.0, margin + negative_scores - positive)
  has_phrase = phrase_valid.any(-1)
  count = jnp.maximum(has_phrase.sum(), 1)
  return jnp.sum(hinge * has_phrase) / count, {
      'positive_score': jnp.sum(positive * has_phrase) / count,
      'negative_score': jnp.sum(negative_scores * has_phrase) / count}


def draw_grounding_choices(key: jax.Array, batch_size: int, num_phrases: int):
  """(negative [batch], choice_positive, choice_negative [batch, P]) for phrase_grounding:
  a uniformly drawn other example, and draws among the top WPG_TOP."""
  k_negative, k_positive, k_other = jax.random.split(key, 3)
  offset = jax.random.randint(k_negative, (batch_size,), 1, batch_size)
  negative = (jnp.arange(batch_size) + offset) % batch_size  # never the example itself
  shape = (batch_size, num_phrases)
  return (negative, jax.random.randint(k_positive, shape, 0, WPG_TOP),
          jax.random.randint(k_other, shape, 0, WPG_TOP))
