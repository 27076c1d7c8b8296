"""MVPTR's objectives against a direct computation, example by example, in NumPy."""

import numpy as np
import pytest

from fdt_jax.objectives import mvptr
from fdt_jax.ops import hardest_negatives


def numpy_grounding_score(phrases, valid, regions, choice):
  """Loops: for each phrase, its cosines with every region, sorted, the choice-th best."""
  picked = []
  for p, c in zip(phrases[valid], choice[valid]):
    cosines = sorted((p @ r / np.linalg.norm(p) / np.linalg.norm(r) for r in regions), reverse=True)
    picked.append(cosines[c])
  return np.mean(picked) if picked else 0.0


@pytest.fixture
def grounding_case():
  rng = np.random.default_rng(0)
  batch, num_phrases, num_regions, dim = 5, 4, 6, 8
  phrases = rng.normal(size=(batch, num_phrases, dim)).astype(np.float32)
  regions = rng.normal(size=(batch, num_regions, dim)).astype(np.float32)
  valid = rng.random((batch, num_phrases)) < 0.6
  valid[0] = False  # a caption without phrases: left out of the mean
  valid[1] = [True, False, False, False]
  choices = rng.integers(0, 3, (2, batch, num_phrases))
  negative = np.array([3, 0, 4, 1, 2])
  return phrases, valid, regions, choices, negative


def test_grounding_scores_match_a_direct_computation(grounding_case):
  phrases, valid, regions, choices, _ = grounding_case
  got = np.asarray(mvptr.grounding_scores(phrases, valid, regions, choices[0]))
  expected = [numpy_grounding_score(phrases[b], valid[b], regions[b], choices[0, b])
              for b in range(len(phrases))]
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_phrase_grounding_is_the_margin_hinge_over_captions_with_phrases(grounding_case):
  phrases, valid, regions, choices, negative = grounding_case
  loss, metrics = mvptr.phrase_grounding(phrases, valid, regions, negative, choices[0], choices[1])
  hinges, positives = [], []
  for b in range(len(phrases)):
    if not valid[b].any():
      continue
    positive = numpy_grounding_score(phrases[b], valid[b], regions[b], choices[0, b])
    other = numpy_grounding_score(phrases[b], valid[b], regions[negative[b]], choices[1, b])
    hinges.append(max(0.0, 0.2 + other - positive))
    positives.append(positive)
  assert len(hinges) == 4
  np.testing.assert_allclose(float(loss), np.mean(hinges), atol=1e-6)
  np.testing.assert_allclose(float(metrics['positive_score']), np.mean(positives), atol=1e-6)


def test_phrase_grounding_is_zero_once_the_own_image_wins_by_the_margin():
  """Each phrase equals a region of its own image and is orthogonal to the other's."""
  eye = np.eye(4, dtype=np.float32)
  phrases = np.stack([eye[:2], eye[2:]])  # caption 0: axes 0, 1; caption 1: axes 2, 3
  regions = np.stack([np.repeat(eye[:2], 2, 0), np.repeat(eye[2:], 2, 0)])  # each axis twice
  valid = np.ones((2, 2), bool)
  zero = np.zeros((2, 2), int)
  loss, _ = mvptr.phrase_grounding(phrases, valid, regions, np.array([1, 0]), zero, zero)
  assert float(loss) == 0.0  # positive 1, negative 0
  swapped, _ = mvptr.phrase_grounding(phrases, valid, regions[::-1], np.array([1, 0]), zero, zero)
  np.testing.assert_allclose(float(swapped), 1.2, atol=1e-6)  # positive 0, negative 1


def test_masked_concept_recovery_is_the_cross_entropy_of_the_masked_tags():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 4, 7)).astype(np.float32)
  tags = rng.integers(0, 7, (3, 4))
  masked = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], bool)
  loss, metrics = mvptr.masked_concept_recovery(logits, tags, masked)
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = np.mean([-log_softmax[b, g, tags[b, g]] for b, g in zip(*np.nonzero(masked))])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  assert int(metrics['masked']) == 3
  nothing, _ = mvptr.masked_concept_recovery(logits, tags, np.zeros_like(masked))
  assert float(nothing) == 0.0


def test_hardest_negatives_are_the_most_similar_others():
  similarity = np.array([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3], [0.4, 0.5, 0.99]], np.float32)
  image_for_text, text_for_image = hardest_negatives(similarity)
  assert list(np.asarray(image_for_text)) == [1, 0, 1]  # row-wise, the diagonal left out
  assert list(np.asarray(text_for_image)) == [1, 0, 1]  # column-wise
