"""MVPTR's concept-level objectives (Li et al., ACM MM 2022, arXiv 2201.12596; details as the
authors' public code, Junction4Nako/mvp_pytorch, trains them): masked concept recovery and
weakly supervised phrase grounding (the hardest in-batch negatives of its image-text
matching are in ops/hard_negatives.py, where the model picks them), registered for the
'mvptr' family (models/mvptr.py) as 'mcr', 'wpg' and 'itm_hardest'; its MLM is the registered
'mlm' and its VSC the registered 'infonce'.

Randomness (WPG's draw among the top 3 and its negative image) comes in as arrays drawn by
the family's prepare_batch from the step's key, so a resumed run draws the same.
"""

import jax
import jax.numpy as jnp
import optax

from fdt_jax.models.mvptr import WPG_TOP  # a phrase's score: one of its 3 best region cosines
from fdt_jax.objectives.registry import Objective, register_objective

WPG_MARGIN = 0.2  # the authors' code


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


def mcr(outputs, batch):
  """MCR on the masked tags (the model's 'mcr_logits', the batch's 'tags' and 'tag_mask')."""
  return masked_concept_recovery(outputs['mcr_logits'], batch['tags'], batch['tag_mask'])


def wpg(outputs, batch):
  """WPG on the fused phrases present and not masked, against the drawn other image."""
  choice = batch['wpg_choice']  # [batch, 2, phrases]: for the own image, for the other
  return phrase_grounding(outputs['phrase_features'], batch['grounded_phrases'],
                          outputs['patch_features'], batch['wpg_negative'], choice[:, 0],
                          choice[:, 1])


def itm_hardest(outputs, batch):
  """ITM with MVPTR's hardest negatives: match_logits [batch, 2, 2] holds each example's pair
  (label 1) and its negative (label 0); the mean cross-entropy over both."""
  del batch
  logits = outputs['match_logits'].astype(jnp.float32)
  labels = jnp.broadcast_to(jnp.array([1, 0], jnp.int32), logits.shape[:2])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}


register_objective(Objective('mcr', mcr, needs=('mcr_logits',)))
register_objective(Objective('wpg', wpg, needs=('phrase_features', 'patch_features')))
register_objective(Objective('itm_hardest', itm_hardest, needs=('match_logits',)))
