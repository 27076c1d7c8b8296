"""Retrieval and zero-shot metrics, computed the way CLIP papers report them."""

import numpy as np


def retrieval_metrics(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                      text_to_image: np.ndarray, ks=(1, 5, 10), chunk: int = 1024) -> dict:
  """Recall@K both ways for L2-normalised embeddings; several captions per image allowed.

  text->image: a caption is found if its own image is in its top K.
  image->text: an image is found if any of its captions is in its top K.
  rsum is the sum of the six recalls (in percent), as in the FDT paper.
  """
  image_embeddings = np.asarray(image_embeddings, np.float32)
  text_embeddings = np.asarray(text_embeddings, np.float32)
  text_to_image = np.asarray(text_to_image)
  num_images = len(image_embeddings)
  # Rank of the right image for each caption (0 = best). Ties count against the
  # model, so a collapsed model that embeds everything alike scores zero, not 100.
  t2i_rank = np.empty(len(text_embeddings), np.int64)
  # Best rank over an image's captions.
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
  metrics = {}
  for k in ks:
    metrics[f'i2t_R@{k}'] = 100.0 * np.mean(i2t_rank < k)
    metrics[f't2i_R@{k}'] = 100.0 * np.mean(t2i_rank < k)
  metrics['rsum'] = sum(metrics[f'{d}_R@{k}'] for d in ('i2t', 't2i') for k in ks)
  return metrics


def classification_metrics(image_embeddings: np.ndarray, class_embeddings: np.ndarray,
                           labels: np.ndarray, ks=(1, 5)) -> dict:
  """Top-K accuracy (percent) of nearest-class-embedding classification."""
  logits = np.asarray(image_embeddings, np.float32) @ np.asarray(class_embeddings, np.float32).T
  own = logits[np.arange(len(labels)), labels]
  rank = (logits >= own[:, None]).sum(1) - 1  # ties count against the model
  return {f'top{k}': 100.0 * np.mean(rank < k) for k in ks if k <= class_embeddings.shape[0]}
