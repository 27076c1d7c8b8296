"""Retrieval and zero-shot metrics, computed the way CLIP papers report them."""

import numpy as np


def retrieval_metrics(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                      text_to_image: np.ndarray, ks=(1, 5, 10), chunk: int = 1024) -> dict:
  """Recall@K both ways for L2-normalised embeddings; several captions per image allowed.

  text->image: a caption is found if its own image is in its top K.
  image->text: an image is found if any of its captions is in its top K.
  rsum is the sum of the six recalls (in percent), as in the FDT paper.
  """
  return recalls(*retrieval_ranks(image_embeddings, text_embeddings, text_to_image, chunk), ks)


def retrieval_ranks(image_embeddings, text_embeddings, text_to_image, chunk: int = 1024):
  """(rank of each caption's image among the images, rank of each image's best caption among
  the captions), 0 = first. Ties count against the model, so a collapsed model that embeds
  everything alike scores zero, not 100."""
  image_embeddings = np.asarray(image_embeddings, np.float32)
  text_embeddings = np.asarray(text_embeddings, np.float32)
  text_to_image = np.asarray(text_to_image)
  num_images = len(image_embeddings)
  t2i_rank = np.empty(len(text_embeddings), np.int64)
  i2t_rank = np.full(num_images, np.iinfo(np.int64).max)
  for start in range(0, len(text_embeddings), chunk):
    sims = text_embeddings[start:start + chunk] @ image_embeddings.T  # [texts, images]
    rows = np.arange(len(sims))
    own = text_to_image[start:start + chunk]
    t2i_rank[start:start + chunk] = (sims >= sims[rows, own][:, None]).sum(1) - 1
  for start in range(0, num_images, chunk):
    sims = image_embeddings[start:start + chunk] @ text_embeddings.T  # [images, texts]
    owner = text_to_image[None, :] == np.arange(start, start + len(sims))[:, None]
    best_own = np.where(owner, sims, -np.inf).max(1)
    i2t_rank[start:start + chunk] = (np.where(owner, -np.inf, sims) >= best_own[:, None]).sum(1)
  return t2i_rank, i2t_rank


def recalls(t2i_rank, i2t_rank, ks=(1, 5, 10)) -> dict:
  metrics = {}
  for k in ks:
    metrics[f'i2t_R@{k}'] = 100.0 * np.mean(np.asarray(i2t_rank) < k)
    metrics[f't2i_R@{k}'] = 100.0 * np.mean(np.asarray(t2i_rank) < k)
  metrics['rsum'] = sum(metrics[f'{d}_R@{k}'] for d in ('i2t', 't2i') for k in ks)
  return metrics


def top_k(queries, keys, k: int, chunk: int = 1024) -> np.ndarray:
  """[queries, k]: the indices of each query's k most similar keys, most similar first."""
  queries, keys = np.asarray(queries, np.float32), np.asarray(keys, np.float32)
  out = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), chunk):
    sims = queries[start:start + chunk] @ keys.T
    out[start:start + chunk] = np.argsort(-sims, axis=1, kind='stable')[:, :k]
  return out


def reranked_ranks(t2i_rank, i2t_rank, t2i_top, i2t_top, score, text_to_image):
  """The ranks after re-ordering each query's top k (t2i_top [texts, k] images, i2t_top
  [images, k] texts, from the similarities the ranks came from) by score(texts, images)
  (arrays of indices -> scores). A right answer outside the top k keeps its rank (>= k);
  ties count against the model, as in retrieval_ranks."""
  text_to_image = np.asarray(text_to_image)
  texts = np.arange(len(t2i_top))
  t2i_scores = score(np.repeat(texts, t2i_top.shape[1]), t2i_top.ravel()).reshape(t2i_top.shape)
  own_score = score(texts, text_to_image)
  inside = t2i_rank < t2i_top.shape[1]
  new_t2i = np.where(inside, (t2i_scores >= own_score[:, None]).sum(1) - 1, t2i_rank)
  images = np.arange(len(i2t_top))
  i2t_scores = score(i2t_top.ravel(), np.repeat(images, i2t_top.shape[1])).reshape(i2t_top.shape)
  own = text_to_image[i2t_top] == images[:, None]
  best_own = np.where(own, i2t_scores, -np.inf).max(1)
  found = own.any(1)
  new_i2t = np.where(found, (np.where(own, -np.inf, i2t_scores) >= best_own[:, None]).sum(1), i2t_rank)
  return new_t2i, new_i2t


def classification_metrics(image_embeddings: np.ndarray, class_embeddings: np.ndarray,
                           labels: np.ndarray, ks=(1, 5)) -> dict:
  """Top-K accuracy (percent) of nearest-class-embedding classification."""
  logits = np.asarray(image_embeddings, np.float32) @ np.asarray(class_embeddings, np.float32).T
  own = logits[np.arange(len(labels)), labels]
  rank = (logits >= own[:, None]).sum(1) - 1  # ties count against the model
  return {f'top{k}': 100.0 * np.mean(rank < k) for k in ks if k <= class_embeddings.shape[0]}
