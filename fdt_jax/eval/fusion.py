"""Evaluators of a fusion encoder (the 'mamo' family): does it use the image?

  masked_words  on a split with captions: the first caption of each image with a fixed
                quarter of its words masked (word positions 0, 4, 8, ...); accuracy of the
                masked words predicted with the true image and with another image of the
                batch (the next one), and the gap; ITM accuracy on the same pairs (each
                image with its caption: match; with the next image's: no match).
  retrieval with itm_rerank=K
                retrieval by the contrastive embeddings, then each caption's top K images
                and each image's top K captions re-ordered by the ITM head's log-odds of a
                match (ALBEF's and MAMO's fine-tuned retrieval; MVPTR's code re-ranks 128
                captions / 64 images): `itm_*` metrics beside the contrastive ones.

A fusion model offers image_features(images), text_features(tokens), match_logits(text
features, tokens, patch features) and match_and_fill(images, tokens, word_mask).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fdt_jax import parallel
from fdt_jax.data.masking import word_positions
from fdt_jax.data.pipeline import EvalArrays, EvalImages, caption_text, eval_batches
from fdt_jax.data.transforms import normalize_images
from fdt_jax.eval.metrics import recalls, reranked_ranks, retrieval_ranks, top_k
from fdt_jax.eval.retrieval import RetrievalEvaluator

MASK_EVERY = 4  # word positions 0, 4, 8, ...: a quarter, as MAMO masks in training


@dataclasses.dataclass(frozen=True)
class Pairs:
  """Item i: {'images': uint8 image i, 'tokens': int32 its first caption}."""
  images: EvalImages
  tokens: np.ndarray

  def __len__(self):
    return len(self.tokens)

  def __getitem__(self, i):
    return {'images': self.images[i]['inputs'], 'tokens': self.tokens[i]}


def fixed_word_mask(tokens):
  return word_positions(tokens) & (jnp.arange(tokens.shape[-1]) % MASK_EVERY == 0)


class MaskedWordsEvaluator:

  def __init__(self, source, *, tokenizer, image_size: int, embedder,
               max_examples: int | None = None):
    count = len(source) if max_examples is None else min(len(source), max_examples)
    if count < 2:
      raise ValueError('masked_words needs at least 2 examples (an image and another)')
    captions = [caption_text(source[i]['captions'][0]) for i in range(count)]
    self.pairs = Pairs(EvalImages(source, image_size, indices=np.arange(count)),
                       tokenizer.encode(captions))
    self.mesh, self.batch_size, self.num_workers = embedder.mesh, embedder.batch_size, embedder.num_workers
    graphdef = embedder.graphdef

    def evaluate(params, images, tokens):
      model = nnx.merge(graphdef, params)
      images = normalize_images(images)
      mask = fixed_word_mask(tokens)
      itm_true, mlm_true = model.match_and_fill(images, tokens, mask)
      itm_other, mlm_other = model.match_and_fill(jnp.roll(images, -1, axis=0), tokens, mask)
      right = lambda logits: jnp.argmax(logits, -1) == tokens
      return {'words_true': jnp.sum(right(mlm_true) & mask, -1),
              'words_other': jnp.sum(right(mlm_other) & mask, -1),
              'masked': jnp.sum(mask, -1),
              'itm_match': jnp.argmax(itm_true, -1) == 1,
              'itm_no_match': jnp.argmax(itm_other, -1) == 0}

    self._evaluate = jax.jit(evaluate)

  def run(self, params) -> dict:
    totals = {}
    for fields in eval_batches(self.pairs, batch_size=self.batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), num_workers=self.num_workers):
      batch = parallel.global_batch(fields, self.mesh)
      out = parallel.to_host({**self._evaluate(params, batch['images'], batch['tokens']),
                              'index': batch['index']})
      # The last real example is compared with a padding row's image: leave it out too.
      keep = (out['index'] >= 0) & (np.roll(out['index'], -1) >= 0)
      for key, value in out.items():
        if key != 'index':
          totals[key] = totals.get(key, 0) + np.sum(np.asarray(value)[keep])
      totals['pairs'] = totals.get('pairs', 0) + int(keep.sum())
    masked = max(totals['masked'], 1)
    true, other = 100 * totals['words_true'] / masked, 100 * totals['words_other'] / masked
    pairs = max(totals['pairs'], 1)
    return {'masked_word_accuracy': float(true), 'masked_word_accuracy_other_image': float(other),
            'image_gain': float(true - other),
            'itm_accuracy': float(50 * (totals['itm_match'] + totals['itm_no_match']) / pairs)}


@dataclasses.dataclass(frozen=True)
class PairFeatures:
  """Item j: the features of caption texts[j] and of image images[j]."""
  texts: np.ndarray
  images: np.ndarray
  text_features: np.ndarray
  tokens: np.ndarray
  patches: np.ndarray

  def __len__(self):
    return len(self.texts)

  def __getitem__(self, j):
    t, i = self.texts[j], self.images[j]
    return {'text_features': self.text_features[t], 'tokens': self.tokens[t], 'patches': self.patches[i]}


class ITMRerankedRetrieval(RetrievalEvaluator):
  """Retrieval by the contrastive embeddings and with the top `rerank` re-ordered by ITM.
  The unimodal features of every image and caption are computed once and kept on the host
  (for COCO's 5k test images at B/16 that is several GB, as in ALBEF's evaluation); only
  the fusion encoder runs per pair."""

  def __init__(self, source, *, rerank: int, embedder, **kwargs):
    super().__init__(source, embedder=embedder, **kwargs)
    if rerank < 1:
      raise ValueError(f'itm_rerank = {rerank}: give the number of candidates to re-rank (>= 1)')
    self.rerank = rerank
    graphdef = embedder.graphdef
    model = lambda params: nnx.merge(graphdef, params)

    def match(params, batch):
      logits = model(params).match_logits(batch['text_features'], batch['tokens'], batch['patches'])
      return {'score': (logits[:, 1] - logits[:, 0]).astype(jnp.float32)}

    self._image_features = embedder.jit(lambda params, batch: {
        'features': model(params).image_features(normalize_images(batch['inputs']))})
    self._text_features = embedder.jit(lambda params, batch: {
        'features': model(params).text_features(batch['inputs'])})
    self._match = embedder.jit(match)

  def run(self, params) -> dict:
    images, texts = self.embeddings(params)
    t2i_rank, i2t_rank = retrieval_ranks(images, texts, self.text_to_image)
    metrics = recalls(t2i_rank, i2t_rank)
    t2i_top = top_k(texts, images, min(self.rerank, len(images)))
    i2t_top = top_k(images, texts, min(self.rerank, len(texts)))
    num_images = len(images)
    keys = np.unique(np.concatenate([
        (np.arange(len(texts))[:, None] * num_images + t2i_top).ravel(),
        (i2t_top * num_images + np.arange(num_images)[:, None]).ravel()]))
    pairs = PairFeatures(
        keys // num_images, keys % num_images,
        self.embedder.map(params, self._text_features, EvalArrays({'inputs': self.tokens}))['features'],
        self.tokens, self.embedder.map(params, self._image_features, self.images)['features'])
    scores = self.embedder.map(params, self._match, pairs, what='pairs')['score']

    def score(text, image):  # -inf for pairs outside every top k (reranked_ranks never reads them)
      key = np.asarray(text) * num_images + np.asarray(image)
      at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
      return np.where(keys[at] == key, scores[at], -np.inf)

    ranks = reranked_ranks(t2i_rank, i2t_rank, t2i_top, i2t_top, score, self.text_to_image)
    metrics.update({f'itm_{name}': value for name, value in recalls(*ranks).items()})
    return metrics
