"""Zero-shot classification: class names in prompt templates -> a text classifier."""

import dataclasses
import json
import os

import numpy as np

from fdt_jax.data.pipeline import EvalArrays, EvalImages
from fdt_jax.eval.metrics import classification_metrics

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
  embeddings = embedder(params, 'tokens', EvalArrays({'inputs': tokens}))['embedding']
  embeddings = embeddings.reshape(len(classnames), len(templates), -1).mean(1)
  return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class LabelOf:
  """A record's class id: record[key], or record[key][index] (e.g. ('objects', 'shape', 0))."""
  key: str
  subkey: str | None = None
  index: int | None = None

  def __call__(self, record) -> int:
    value = record[self.key]
    if self.subkey is not None:
      value = value[self.subkey]
    return int(value if self.index is None else value[self.index])


class ZeroShotEvaluator:
  """Top-1/top-5 accuracy of source[indices[j]]'s image -> its label among `classnames`.

  `label_of(record)` reads a record's class id (picklable, e.g. a LabelOf, for grain's
  worker processes); labels travel with the images through the padded global
  batches, so every host sees all of them.
  """

  def __init__(self, source, label_of, classnames, templates, *, tokenizer, image_size: int,
               embedder, indices=None, max_examples: int | None = None):
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    if max_examples:
      indices = indices[:max_examples]
    self.images = EvalImages(source, image_size, indices=indices, label_of=label_of)
    self.classnames = list(classnames)
    self.templates = list(templates)
    self.tokenizer = tokenizer
    self.embedder = embedder

  def run(self, params) -> dict:
    classes = class_embeddings(self.embedder, params, self.tokenizer, self.classnames, self.templates)
    images = self.embedder(params, 'images', self.images)
    return classification_metrics(images['embedding'], classes, images['label'])
