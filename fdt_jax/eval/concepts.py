"""Evaluators of MVPTR's concept level (the 'mvptr' family) on the shapes data, where every
concept of an image and of a caption is known (data/concepts.py):

  concept_recovery  each image's tags, every 7th masked in turn (7 passes, so every tag is
                    masked once, about the 15 % masked in training), recovered by the visual
                    encoder from the other tags and the image: accuracy with the true image
                    and with another image of the batch (the next one), and the gap; the
                    same per kind of tag (a shape, a colour or a size with its shape, a
                    relation). Then the purity of what is recovered, as fdt_jax.inspect
                    measures FDT tokens (eval/token_stats.py): an image's weights over the
                    concept vocabulary are its softmaxes summed over its masked slots, and
                    each concept's mass is scored against the generator's labels (colour,
                    shape, size, position, relation), with the labels permuted for chance
  pointing_game     the first caption of each image, fused with the image (no tags): for each
                    phrase that names an object (a shape, alone or with its colour or size),
                    does its best patch (highest cosine of the fused vectors) have its centre
                    in the cell of an object the phrase names? Relation phrases name two
                    objects and are left out. 'chance' is the hit rate of a patch drawn at
                    random (the share of patches in the named cells). Where the best
                    patches go: in any object's cell, and how many go to one patch.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fdt_jax import parallel
from fdt_jax.data import concepts, shapes
from fdt_jax.data.pipeline import EvalImages, caption_text, eval_batches
from fdt_jax.data.transforms import normalize_images
from fdt_jax.eval import token_stats

MASK_EVERY = 7  # tag slots k, k + 7, k + 14 masked in pass k: 1 in 7, near training's 15 %
# The kinds of MVPTR concepts on shapes, by their number of words and their first word.
TAG_KINDS = ('shape', 'colour_shape', 'size_shape', 'relation')


def tag_kinds() -> np.ndarray:
  """int [concepts.VOCAB_SIZE]: the index in TAG_KINDS of each concept id; -1 for the
  padding and mask ids."""
  colours, sizes = set(concepts.COLOUR_NAMES), set(shapes.SIZES)
  kinds = np.full(concepts.VOCAB_SIZE, -1)
  for name, concept_id in concepts.CONCEPT_IDS.items():
    words = name.split()
    kinds[concept_id] = (0 if len(words) == 1 else 3 if len(words) == 3 else
                         1 if words[0] in colours else 2 if words[0] in sizes else -1)
  if np.any(kinds[concepts.FIRST_ID:] < 0):
    raise AssertionError('a shapes concept of no known kind')
  return kinds


@dataclasses.dataclass(frozen=True)
class Items:
  """Item i: {'images': uint8 image i, and row i of each array}."""
  images: EvalImages
  arrays: dict

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {'images': self.images[i]['inputs'], **{k: v[i] for k, v in self.arrays.items()}}


def _concept_items(source, max_examples, image_size, tokenizer=None):
  count = len(source) if max_examples is None else min(len(source), max_examples)
  if count < 2:
    raise ValueError('the concept evaluators need at least 2 examples')
  records = [source[i] for i in range(count)]
  captions = [caption_text(r['captions'][0]) for r in records]
  fields = [concepts.example_concepts(r, c) for r, c in zip(records, captions)]
  arrays = {k: np.stack([f[k] for f in fields]) for k in ('phrases', 'tags')}
  if tokenizer is not None:
    arrays['tokens'] = tokenizer.encode(captions)
  return records, Items(EvalImages(source, image_size, indices=np.arange(count)), arrays)


def named_cells(concept_id: int, record) -> set[int] | None:
  """The grid cells (0-8) of the objects a phrase names; None for a relation phrase."""
  words = concepts.CONCEPT_NAMES[concept_id - concepts.FIRST_ID].split()
  if len(words) > 2:
    return None
  objects = record['objects']
  cells = set()
  for colour, shape, size, position in zip(objects['colour'], objects['shape'], objects['size'],
                                           objects['position']):
    if shapes.SHAPES[shape] != words[-1]:
      continue
    if len(words) == 1 or words[0] in (concepts.COLOUR_NAMES[colour], shapes.SIZES[size]):
      cells.add(int(position))
  return cells


def patch_cells(image_size: int, patch_size: int) -> np.ndarray:
  """int [patches]: the 3x3 grid cell holding each patch's centre, patches row by row."""
  grid = image_size // patch_size
  third = np.floor(3 * (np.arange(grid) + 0.5) / grid).astype(int)
  return (3 * third[:, None] + third[None, :]).ravel()


def pointing_targets(records, phrases, cells: np.ndarray) -> np.ndarray:
  """bool [examples, phrases, patches]: the patches in the cells a phrase names (all False
  for padding and relation phrases, which are not scored)."""
  targets = np.zeros((len(records), phrases.shape[1], len(cells)), bool)
  for i, record in enumerate(records):
    for j, concept_id in enumerate(phrases[i]):
      if concept_id != concepts.PAD_ID and (named := named_cells(int(concept_id), record)):
        targets[i, j] = np.isin(cells, sorted(named))
  return targets


class _Evaluator:
  """Runs `self._evaluate(params, batch)` over the items, summing per-example counts over
  the examples (a key of `rows` is kept per example instead, in the items' order); a key
  ending in '_other' compares with the next row's image, so the last real row is left out
  (a row of `rows` that is left out stays NaN)."""

  def __init__(self, items, embedder, evaluate, rows: tuple[str, ...] = ()):
    self.items, self.rows = items, rows
    self.mesh, self.batch_size, self.num_workers = embedder.mesh, embedder.batch_size, embedder.num_workers
    self._evaluate = jax.jit(evaluate)

  def totals(self, params) -> dict:
    totals = {}
    for fields in eval_batches(self.items, batch_size=self.batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), num_workers=self.num_workers):
      batch = parallel.global_batch(fields, self.mesh)
      out = parallel.to_host({**self._evaluate(params, batch), 'index': batch['index']})
      index = out.pop('index')  # the item of each row; -1 for padding
      real = index >= 0
      with_next = real & (np.roll(real, -1))
      for key, value in out.items():
        keep = with_next if key.endswith('_other') else real
        value = np.asarray(value)
        if key in self.rows:
          if key not in totals:
            totals[key] = np.full((len(self.items), *value.shape[1:]), np.nan)
          totals[key][index[keep]] = value[keep]
        else:
          totals[key] = totals.get(key, 0) + np.sum(value[keep], axis=0)
    return totals


class ConceptRecoveryEvaluator(_Evaluator):

  def __init__(self, source, *, tokenizer, image_size: int, embedder, max_examples=None):
    del tokenizer
    records, items = _concept_items(source, max_examples, image_size)
    self.labels = token_stats.concept_labels(records, shapes.CONCEPTS)
    graphdef = embedder.graphdef
    kind_of = jnp.asarray(tag_kinds())

    def evaluate(params, batch):
      model = nnx.merge(graphdef, params)
      images, tags = normalize_images(batch['images']), batch['tags']
      other_images = jnp.roll(images, -1, axis=0)
      present = tags != concepts.PAD_ID
      # [batch, kinds]: per kind of tag, how many the image has and how many are recovered
      kinds = (kind_of[tags][..., None] == jnp.arange(len(TAG_KINDS))) & present[..., None]
      out = {'tags': jnp.sum(kinds, 1), 'tags_other': jnp.sum(kinds, 1)}
      for suffix, pixels in (('', images), ('_other', other_images)):
        right, weights = 0, 0
        for offset in range(MASK_EVERY):
          mask = present & (jnp.arange(tags.shape[1]) % MASK_EVERY == offset)
          logits = model.recover_concepts(pixels, tags, mask)
          right = right + jnp.sum(((jnp.argmax(logits, -1) == tags) & mask)[..., None] & kinds, 1)
          weights = weights + jnp.einsum('bt,btv->bv', mask, jax.nn.softmax(logits.astype(jnp.float32)))
        out['right' + suffix], out['weights' + suffix] = right, weights
      return out

    super().__init__(items, embedder, evaluate, rows=('weights', 'weights_other'))

  def run(self, params) -> dict:
    t = self.totals(params)
    result = {}
    for key, suffix in (('', ''), ('_other', '_other_image')):
      tags, right = t['tags' + key], t['right' + key]
      result['tag_accuracy' + suffix] = float(100 * right.sum() / max(tags.sum(), 1))
      for kind, count, hits in zip(TAG_KINDS, tags, right):
        result[f'tag_accuracy_{kind}{suffix}'] = float(100 * hits / max(count, 1))
    result['image_gain'] = result['tag_accuracy'] - result['tag_accuracy_other_image']
    # The purity of the recovered concepts against the generator's labels, as for FDT tokens.
    for key, suffix in (('weights', ''), ('weights_other', '_other_image')):
      scored = ~np.isnan(t[key]).any(-1)
      purities = token_stats.purities(t[key][scored], self.labels[scored],
                                      token_stats.concept_types())
      result.update({f'purity{name}{suffix}': value for name, value in purities.items()})
    return result


class PointingGameEvaluator(_Evaluator):
  """Also, to see where the best patches go when they miss: the share of scored phrases
  whose best patch lies in any object's cell (with its random-patch chance), and the share
  taken by the single most frequent best patch (100 / patches if they spread evenly)."""

  def __init__(self, source, *, tokenizer, image_size: int, embedder, patch_size: int,
               max_examples=None):
    records, items = _concept_items(source, max_examples, image_size, tokenizer)
    graphdef = embedder.graphdef
    cells = patch_cells(image_size, patch_size)
    items.arrays['targets'] = pointing_targets(records, items.arrays['phrases'], cells)
    items.arrays['objects_at'] = np.stack([np.isin(cells, np.asarray(r['objects']['position']))
                                           for r in records])  # [examples, patches]

    def evaluate(params, batch):
      model = nnx.merge(graphdef, params)
      cosines = model.ground(normalize_images(batch['images']), batch['tokens'], batch['phrases'])
      best = jnp.argmax(cosines, -1)  # [batch, phrases]
      targets = batch['targets']  # [batch, phrases, patches]
      scored = jnp.any(targets, -1)
      hit = jnp.take_along_axis(targets, best[..., None], -1)[..., 0] & scored
      objects_at = batch['objects_at']  # [batch, patches]
      in_object = jnp.take_along_axis(objects_at, best, -1) & scored
      return {'phrases': jnp.sum(scored, -1), 'hits': jnp.sum(hit, -1),
              'chance': jnp.sum(jnp.mean(targets, -1) * scored, -1),
              'in_object': jnp.sum(in_object, -1),
              'in_object_chance': jnp.mean(objects_at, -1) * jnp.sum(scored, -1),
              'best_patches': jnp.sum(jax.nn.one_hot(best, cosines.shape[-1]) * scored[..., None], 1)}

    super().__init__(items, embedder, evaluate)

  def run(self, params) -> dict:
    t = self.totals(params)
    count = max(t['phrases'], 1)
    return {'pointing_accuracy': float(100 * t['hits'] / count),
            'chance': float(100 * t['chance'] / count), 'phrases': int(t['phrases']),
            'best_in_any_object': float(100 * t['in_object'] / count),
            'best_in_any_object_chance': float(100 * t['in_object_chance'] / count),
            'top_patch_share': float(100 * np.max(t['best_patches']) / count)}
