"""Zero-shot classification: class names in prompt templates -> a text classifier."""

import numpy as np

from fdt_jax.data.transforms import resize_center_crop
from fdt_jax.eval.metrics import classification_metrics


def class_embeddings(embedder, params, tokenizer, classnames, templates) -> np.ndarray:
  """[classes, dim]: each class's prompt embeddings averaged and re-normalised (CLIP's recipe)."""
  prompts = [template.format(name) for name in classnames for template in templates]
  tokens = tokenizer.encode(prompts)
  embeddings = embedder(params, 'tokens', len(tokens), lambda idx: tokens[idx])
  embeddings = embeddings.reshape(len(classnames), len(templates), -1).mean(1)
  return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


class ZeroShotEvaluator:
  """Top-1/top-5 accuracy of images[i] -> labels[i] among `classnames`."""

  def __init__(self, load_image, labels, classnames, templates, *, tokenizer, image_size: int,
               embedder):
    self.load_image = load_image  # index -> an image (array, PIL or encoded bytes)
    self.labels = np.asarray(labels)
    self.classnames = list(classnames)
    self.templates = list(templates)
    self.tokenizer = tokenizer
    self.image_size = image_size
    self.embedder = embedder

  def _load_images(self, indices):
    images = [resize_center_crop(self.load_image(int(i)), self.image_size) for i in indices]
    return np.stack(images) if images else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

  def run(self, params) -> dict:
    classes = class_embeddings(self.embedder, params, self.tokenizer, self.classnames, self.templates)
    images = self.embedder(params, 'images', len(self.labels), self._load_images)
    return classification_metrics(images, classes, self.labels)
