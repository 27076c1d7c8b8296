"""Image <-> text retrieval on a split whose records hold an image and its captions."""

import numpy as np

from fdt_jax.data.pipeline import caption_text
from fdt_jax.data.transforms import resize_center_crop
from fdt_jax.eval.metrics import retrieval_metrics


class RetrievalEvaluator:
  """Recall@1/5/10 both ways and rsum, over every image and every caption of a split."""

  def __init__(self, source, *, tokenizer, image_size: int, embedder, max_examples: int | None = None):
    self.source = source
    self.count = len(source) if max_examples is None else min(len(source), max_examples)
    self.image_size = image_size
    self.embedder = embedder
    captions, owners = [], []
    for i in range(self.count):
      for caption in source[i]['captions']:
        captions.append(caption_text(caption))
        owners.append(i)
    self.tokens = tokenizer.encode(captions)  # [captions, length]
    self.text_to_image = np.asarray(owners)

  def _load_images(self, indices):
    return np.stack([resize_center_crop(self.source[int(i)]['image'], self.image_size)
                     for i in indices]) if len(indices) else np.zeros(
                         (0, self.image_size, self.image_size, 3), np.uint8)

  def run(self, params) -> dict:
    images = self.embedder(params, 'images', self.count, self._load_images)
    texts = self.embedder(params, 'tokens', len(self.tokens), lambda idx: self.tokens[idx])
    return retrieval_metrics(images, texts, self.text_to_image)
