"""Zero-shot classification: class names in prompt templates -> a text classifier."""

import json
import os

import numpy as np

from fdt_jax.eval.metrics import classification_metrics
from fdt_jax.eval.retrieval import stack_images

IMAGENET_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data',
                             'imagenet_zeroshot.json')


def imagenet_prompts() -> tuple[list[str], list[str]]:
  """The CLIP paper's curated ImageNet class names and its 80 prompt templates."""
  with open(IMAGENET_FILE) as f:
    content = json.load(f)
  return content['imagenet_classnames'], content['templates']


def class_embeddings(embedder, params, tokenizer, classnames, templates) -> np.ndarray:
  """[classes, dim]: each class's prompt embeddings averaged and re-normalised (CLIP's recipe)."""
  tokens = tokenizer.encode([t.format(name) for name in classnames for t in templates])
  embeddings = embedder(params, 'tokens', len(tokens), lambda idx: {'inputs': tokens[idx]})['embedding']
  embeddings = embeddings.reshape(len(classnames), len(templates), -1).mean(1)
  return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


class ZeroShotEvaluator:
  """Top-1/top-5 accuracy of source[indices[j]]'s image -> its label among `classnames`.

  `label_of(record)` reads a record's class id; labels travel with the images through
  the padded global batches, so every host sees all of them.
  """

  def __init__(self, source, label_of, classnames, templates, *, tokenizer, image_size: int,
               embedder, indices=None, max_examples: int | None = None):
    self.source = source
    self.label_of = label_of
    self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    if max_examples:
      self.indices = self.indices[:max_examples]
    self.classnames = list(classnames)
    self.templates = list(templates)
    self.tokenizer = tokenizer
    self.image_size = image_size
    self.embedder = embedder

  def _load(self, positions):
    records = [self.source[int(i)] for i in self.indices[positions]]
    return {'inputs': stack_images(records, self.image_size),
            'label': np.array([self.label_of(r) for r in records], np.int32)}

  def run(self, params) -> dict:
    classes = class_embeddings(self.embedder, params, self.tokenizer, self.classnames, self.templates)
    images = self.embedder(params, 'images', len(self.indices), self._load)
    return classification_metrics(images['embedding'], classes, images['label'])
