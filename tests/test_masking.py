"""Batch-level helpers for families: word masking (data/masking.py) and hard negatives
mined from in-batch similarities (ops/hard_negatives.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from fdt_jax.data.masking import mask_tokens, random_mask, word_positions
from fdt_jax.ops import sample_hard_negatives

END = 63  # end-of-text: the largest id of a 64-id vocabulary


def test_word_positions_stop_before_end_of_text():
  tokens = jnp.asarray([[5, 6, 7, END, 0, 0], [9, END, 0, 0, 0, 0]])
  np.testing.assert_array_equal(word_positions(tokens), [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])


def test_mask_tokens_masks_only_words_at_the_rate():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 30, size=512)
  tokens = np.zeros((512, 32), np.int32)
  for row, n in zip(tokens, lengths):
    row[:n] = rng.integers(2, END, size=n)
    row[n] = END
  masked, mask = mask_tokens(jax.random.key(1), jnp.asarray(tokens), 0.25, mask_id=1)
  masked, mask = np.asarray(masked), np.asarray(mask)
  words = np.arange(32)[None] < lengths[:, None]
  assert not mask[~words].any()  # never padding or end-of-text
  np.testing.assert_array_equal(masked[~mask], tokens[~mask])
  assert (masked[mask] == 1).all()
  assert abs(mask.sum() / words.sum() - 0.25) < 0.02  # ~8,000 words: 4 standard deviations is 0.02
  # The same key masks the same positions (a resumed run masks as before); another does not.
  again = np.asarray(mask_tokens(jax.random.key(1), jnp.asarray(tokens), 0.25, mask_id=1)[1])
  other = np.asarray(random_mask(jax.random.key(2), tokens.shape, 0.25, jnp.asarray(words)))
  np.testing.assert_array_equal(again, mask)
  assert (other != mask).any()


def test_hard_negatives_follow_the_softmax_without_the_positive():
  similarity = jnp.asarray([[5.0, 1.0, 2.0, 0.0],
                            [0.0, 9.0, 0.0, 0.0],
                            [3.0, 3.0, 1.0, 1.0 + np.log(2.0)]])
  uniforms = jax.random.uniform(jax.random.key(0), (20_000, 3))
  drawn = np.asarray(jax.vmap(lambda u: sample_hard_negatives(similarity, u))(uniforms))  # [draws, 3]
  for row in range(3):
    logits = np.asarray(similarity[row], np.float64)
    logits[row] = -np.inf
    expected = np.exp(logits - logits[np.isfinite(logits)].max())
    expected /= expected.sum()
    observed = np.bincount(drawn[:, row], minlength=4) / len(drawn)
    assert observed[row] == 0  # never the positive
    np.testing.assert_allclose(observed, expected, atol=0.015)
