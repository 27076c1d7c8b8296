"""What the FDT tokens do, measured on their weights alone (numpy; no model, no figures).

For n inputs of one modality and C tokens, `weights` w [n, C] is the FDT head's output
(sparsemax: rows sum to 1, most entries exactly 0). Definitions:

- active: token c is active for input i when w[i, c] > 0 (sparsemax gives exact zeros);
  the effective number of tokens of input i is 1 / sum_c w[i, c]^2 (1 for one token,
  k for k equal weights; it means something for softmax too, where every token is active).
- tokens in use: active for at least one input of the split; dead tokens: all others.
- purity of token c in a modality, on data whose concepts are known (labels [n, K], bool):
  each input splits its weight for c equally among its ground-truth concepts,
      mass_c(k) = sum_i w[i, c] * labels[i, k] / |labels[i]|,
      purity_c  = max_k mass_c(k) / sum_k mass_c(k),
  1 when the token only ever fires on inputs of one concept. The summary is the
  mass-weighted mean over tokens, sum_c max_k mass_c(k) / sum_c sum_k mass_c(k). A token
  that fires on everything still gets the share of the most frequent concept, so purity is
  read against chance: the same number with the labels permuted across inputs. Within
  a concept type (colour, shape, ...) only that type's concepts count. On shapes, a
  relation comes with its inverse (left_of with right_of), so relation purity is at
  most 0.5, and a caption is labelled with its image's concepts, also those it does not
  mention (a caption always names colours and shapes, not always sizes or positions).
- agreement of an image and its caption: sum_c min(w_img[c], w_txt[c]) in [0, 1]
  (1: the same tokens with the same weights; 0: no token in common); chance pairs an
  image with the caption of another image.

Weights whose rows do not sum to 1 (the sigmoid normaliser) are rescaled to sum 1 first.
"""

import numpy as np

from fdt_jax.data import shapes

END_OF_TEXT = '<end>'


def normalized(weights: np.ndarray) -> np.ndarray:
  """Rows rescaled to sum to 1 (a no-op for sparsemax and softmax); all-zero rows stay 0."""
  weights = np.asarray(weights, np.float64)
  total = weights.sum(-1, keepdims=True)
  return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def active_counts(weights: np.ndarray) -> np.ndarray:
  """[n]: how many tokens each input uses."""
  return (np.asarray(weights) > 0).sum(-1)


def effective_counts(weights: np.ndarray) -> np.ndarray:
  """[n]: 1 / sum_c w^2 of each (normalised) row."""
  return 1.0 / np.sum(normalized(weights) ** 2, axis=-1)


def tokens_in_use(*weights: np.ndarray) -> np.ndarray:
  """bool [C]: tokens active for at least one row of any of the given [n, C] arrays."""
  return np.any([np.any(np.asarray(w) > 0, axis=0) for w in weights], axis=0)


def concept_mass(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[C, K]: mass_c(k), each input's weight split equally among its concepts."""
  labels = np.asarray(labels, np.float64)
  count = labels.sum(-1, keepdims=True)
  shares = np.divide(labels, count, out=np.zeros_like(labels), where=count > 0)
  return normalized(weights).T @ shares


def token_purity(mass: np.ndarray) -> np.ndarray:
  """[C]: max_k mass / sum_k mass per token; NaN for tokens without mass."""
  total = mass.sum(-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(total > 0, mass.max(-1) / total, np.nan)


def mean_purity(mass: np.ndarray) -> float:
  """The mass-weighted mean of token_purity over tokens: sum_c max_k / sum_c sum_k."""
  total = mass.sum()
  return float(mass.max(-1).sum() / total) if total > 0 else float('nan')


def permuted(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """The labels shuffled across inputs: the chance baseline of purity."""
  return np.asarray(labels)[np.random.default_rng(seed).permutation(len(labels))]


def concept_types() -> dict[str, list[int]]:
  """Concept type -> its columns in shapes.CONCEPTS."""
  index = {name: k for k, name in enumerate(shapes.CONCEPTS)}
  types = {'colour': shapes.COLOURS, 'shape': shapes.SHAPES, 'size': shapes.SIZES,
           'position': shapes.POSITIONS, 'relation': shapes.RELATIONS[1:]}
  return {name: [index[c] for c in members] for name, members in types.items()}


def concept_labels(records, concepts) -> np.ndarray:
  """bool [n, len(concepts)] from 'shapes' records (their 'concepts' field holds ids)."""
  labels = np.zeros((len(records), len(concepts)), bool)
  for i, record in enumerate(records):
    labels[i, np.asarray(record['concepts'], int)] = True
  return labels


def purities(weights: np.ndarray, labels: np.ndarray, concept_types: dict | None = None,
             seed: int = 0) -> dict:
  """Mean purity and its chance, overall and within each concept type.

  concept_types: name -> indices of the label columns of that type (e.g. 'colour' -> the
  colours): within a type, an input splits its weight among its concepts of that type
  only, and inputs with none of them do not count.
  """
  labels = np.asarray(labels, bool)
  chance = permuted(labels, seed)
  result = {'': mean_purity(concept_mass(weights, labels)),
            '_chance': mean_purity(concept_mass(weights, chance))}
  for name, columns in (concept_types or {}).items():
    columns = list(columns)
    result[f'_{name}'] = mean_purity(concept_mass(weights, labels[:, columns]))
    result[f'_{name}_chance'] = mean_purity(concept_mass(weights, chance[:, columns]))
  return result


def agreement(image_weights: np.ndarray, text_weights: np.ndarray) -> np.ndarray:
  """[n]: sum_c min(w_img[i, c], w_txt[i, c]) for the pairs (row i, row i)."""
  return np.minimum(normalized(image_weights), normalized(text_weights)).sum(-1)


def derangement(n: int, seed: int = 0) -> np.ndarray:
  """A permutation with no fixed point (for n > 1): partner[i] != i."""
  if n < 2:
    return np.arange(n)
  order = np.random.default_rng(seed).permutation(n)
  partner = np.empty(n, int)
  partner[order] = np.roll(order, -1)  # each element of the cycle points to the next
  return partner


def chance_agreement(image_weights: np.ndarray, text_weights: np.ndarray, seed: int = 0) -> np.ndarray:
  """[n]: agreement of image i with the caption of another image."""
  return agreement(image_weights, np.asarray(text_weights)[derangement(len(text_weights), seed)])


def position_words(pieces: list[str]) -> list[str]:
  """The word each sentencepiece piece belongs to ('▁tri', 'angle' -> 'triangle' twice).

  A word starts at a piece with the '▁' (space) mark; punctuation and END_OF_TEXT pieces
  are words of their own.
  """
  def alone(piece):
    return piece == END_OF_TEXT or not any(ch.isalnum() for ch in piece)

  starts = [j for j, piece in enumerate(pieces)
            if j == 0 or piece.startswith('▁') or alone(piece) or alone(pieces[j - 1])]
  words = []
  for start, end in zip(starts, starts[1:] + [len(pieces)]):
    words += [''.join(pieces[start:end]).lstrip('▁')] * (end - start)
  return words


def top_words(weights: np.ndarray, argmax_positions: np.ndarray, words: list[list[str]],
              tokens: list[int], k: int = 5) -> dict[int, list[tuple[str, float]]]:
  """For each token: the k words at which it fires hardest, scored by the weight of the
  caption they are in (the word at the argmax position of the token's score, per caption).

  weights, argmax_positions: [n, C]; words[i][j]: the word at position j of caption i.
  """
  vocabulary = sorted({w for row in words for w in row})
  index = {w: v for v, w in enumerate(vocabulary)}
  length = max(len(row) for row in words)
  word_ids = np.zeros((len(words), length), int)
  for i, row in enumerate(words):
    word_ids[i, :len(row)] = [index[w] for w in row]
  result = {}
  weights = normalized(weights)
  for c in tokens:
    chosen = word_ids[np.arange(len(words)), np.minimum(argmax_positions[:, c], length - 1)]
    scores = np.bincount(chosen, weights=weights[:, c], minlength=len(vocabulary))
    best = [v for v in np.argsort(-scores, kind='stable')[:k] if scores[v] > 0]
    result[c] = [(vocabulary[v], float(scores[v])) for v in best]
  return result


def top_inputs(weights: np.ndarray, token: int, k: int) -> list[int]:
  """The (at most k) inputs with the largest non-zero weight on `token`."""
  column = np.asarray(weights)[:, token]
  order = np.argsort(-column, kind='stable')[:k]
  return [int(i) for i in order if column[i] > 0]
