"""Image <-> text retrieval on a split whose records hold an image and its captions."""

import numpy as np

from fdt_jax.data.pipeline import EvalArrays, EvalImages, caption_text
from fdt_jax.eval.metrics import retrieval_metrics


class RetrievalEvaluator:
  """Recall@1/5/10 both ways and rsum, over every image and every caption of a split."""

  def __init__(self, source, *, tokenizer, image_size: int, embedder, max_examples: int | None = None):
    count = len(source) if max_examples is None else min(len(source), max_examples)
    self.images = EvalImages(source, image_size, indices=np.arange(count))
    self.embedder = embedder
    captions, owners = [], []
    for i in range(count):
      for caption in source[i]['captions']:
        captions.append(caption_text(caption))
        owners.append(i)
    self.tokens = tokenizer.encode(captions)  # [captions, length]
    self.text_to_image = np.asarray(owners)

  def embeddings(self, params):
    """(image embeddings, caption embeddings) of the split."""
    return (self.embedder(params, 'images', self.images)['embedding'],
            self.embedder(params, 'tokens', EvalArrays({'inputs': self.tokens}))['embedding'])

  def run(self, params) -> dict:
    return retrieval_metrics(*self.embeddings(params), self.text_to_image)
