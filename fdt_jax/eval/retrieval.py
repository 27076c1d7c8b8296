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
    return {'inputs': stack_images([self.source[int(i)] for i in indices], self.image_size)}

  def run(self, params) -> dict:
    images = self.embedder(params, 'images', self.count, self._load_images)['embedding']
    texts = self.embedder(params, 'tokens', len(self.tokens),
                          lambda idx: {'inputs': self.tokens[idx]})['embedding']
    return retrieval_metrics(images, texts, self.text_to_image)


def stack_images(records, image_size: int) -> np.ndarray:
  """uint8 [len(records), size, size, 3]: CLIP's resize and centre crop of each 'image'."""
  images = [resize_center_crop(r['image'], image_size) for r in records]
  return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
