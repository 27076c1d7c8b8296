"""'shapes': the embedded image-caption dataset, generated on first use.

Each image holds 1-3 flat-coloured objects, each in its own cell of a 3x3 grid on a
dark, lightly textured background. An object has a shape, a colour, a size and a
position (its cell); with two or more objects, object 0 stands in a relation to
object 1 (left of, right of, above, below: same row or same column). Every example
has five captions from different templates, with synonyms, each naming every
object's colour and shape, and its ground-truth concepts as labels, so one can
check exactly which FDT tokens a concept lights up in either modality.

The (colour, shape) pairs in HELD_OUT never occur in train, validation or test;
every test_compositional example has exactly one object with such a pair.

Example i of a split is drawn from a generator seeded by (seed, split, i), so the
data is a pure function of its arguments. `shapes_tfds.prepare_shapes` writes it once
as TFDS ArrayRecord files (PNG images; TensorFlow is not used) with a sentencepiece
model trained on the training captions, for `tfds.data_source` and grain to read.
"""

import dataclasses

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

SHAPES = ('circle', 'square', 'triangle', 'star', 'diamond', 'cross')
COLOURS = {  # name -> RGB, far apart from each other and from the grey background
    'red': (220, 40, 40), 'orange': (245, 140, 20), 'yellow': (240, 220, 40),
    'green': (40, 180, 60), 'cyan': (40, 210, 220), 'blue': (50, 90, 235),
    'purple': (150, 60, 210), 'pink': (245, 130, 190)}
SIZES = ('small', 'large')
POSITIONS = ('top_left', 'top', 'top_right', 'left', 'center', 'right',
             'bottom_left', 'bottom', 'bottom_right')  # the 3x3 grid, row by row
RELATIONS = ('none', 'left_of', 'right_of', 'above', 'below')  # of object 0 to object 1
CONCEPTS = (*COLOURS, *SHAPES, *SIZES, *POSITIONS, *RELATIONS[1:])
SPLITS = ('train', 'validation', 'test', 'test_compositional')

# 10 of the 48 pairs; each shape and each colour keeps other partners in train.
HELD_OUT = frozenset({
    ('red', 'star'), ('orange', 'circle'), ('yellow', 'triangle'), ('green', 'square'),
    ('cyan', 'cross'), ('blue', 'diamond'), ('purple', 'circle'), ('pink', 'triangle'),
    ('green', 'star'), ('blue', 'cross')})
SEEN = tuple((c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT)
NUM_OBJECTS_PROBABILITIES = (0.4, 0.35, 0.25)  # 1, 2, 3 objects: zero-shot uses the 40% singles
SIZE_FRACTION = {'small': 0.17, 'large': 0.29}  # object width / image width; a cell is 0.33

# Caption words. The first word of each tuple is the class name (zero-shot uses it).
COLOUR_WORDS = {'red': ('red', 'crimson', 'scarlet'), 'orange': ('orange',),
                'yellow': ('yellow', 'golden'), 'green': ('green', 'emerald'),
                'cyan': ('cyan', 'turquoise'), 'blue': ('blue', 'azure'),
                'purple': ('purple', 'violet'), 'pink': ('pink',)}
SHAPE_WORDS = {'circle': ('circle', 'disc'), 'square': ('square', 'block'),
               'triangle': ('triangle',), 'star': ('star',),
               'diamond': ('diamond', 'rhombus'), 'cross': ('cross', 'plus sign')}
SIZE_WORDS = {'small': ('small', 'little', 'tiny'), 'large': ('large', 'big')}
POSITION_WORDS = {
    'top_left': ('in the top left corner', 'at the top left'),
    'top': ('at the top', 'near the top'),
    'top_right': ('in the top right corner', 'at the top right'),
    'left': ('on the left', 'at the left'),
    'center': ('in the center', 'in the middle'),
    'right': ('on the right', 'at the right'),
    'bottom_left': ('in the bottom left corner', 'at the bottom left'),
    'bottom': ('at the bottom', 'near the bottom'),
    'bottom_right': ('in the bottom right corner', 'at the bottom right')}
RELATION_WORDS = {'left_of': ('to the left of', 'left of'),
                  'right_of': ('to the right of', 'right of'),
                  'above': ('above', 'over'), 'below': ('below', 'under', 'beneath')}
INVERSE = {'left_of': 'right_of', 'right_of': 'left_of', 'above': 'below', 'below': 'above'}


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
  """Classify single-object images by `objects[label]`, CLIP style."""
  label: str                   # the per-object feature, e.g. 'shape'
  classnames: tuple[str, ...]  # in label-id order, as the captions spell them
  templates: tuple[str, ...]


ZERO_SHOT = {
    'shape': ZeroShotTask('shape', tuple(w[0] for w in SHAPE_WORDS.values()), (
        'a {}.', 'a picture of a {}.', 'a photo of a {}.', 'there is a {}.', 'one shape: a {}.')),
    'colour': ZeroShotTask('colour', tuple(w[0] for w in COLOUR_WORDS.values()), (  # no 'a': 'orange'
        'the {} shape.', 'a picture of the {} shape.', 'the shape is {}.', 'one shape, {}.')),
    'size': ZeroShotTask('size', tuple(w[0] for w in SIZE_WORDS.values()), (
        'a {} shape.', 'a picture of a {} shape.', 'there is a {} shape.')),
    'position': ZeroShotTask('position', tuple(w[0] for w in POSITION_WORDS.values()), (
        'a shape {}.', 'a picture of a shape {}.', 'there is a shape {}.')),
}


# --- Scenes -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShapeObject:
  colour: str
  shape: str
  size: str
  position: str


def sample_scene(rng: np.random.Generator, compositional: bool) -> tuple[list[ShapeObject], str]:
  """Objects (distinct colour-shape pairs, one per grid cell) and object 0's relation to 1."""
  num_objects = 1 + rng.choice(3, p=NUM_OBJECTS_PROBABILITIES)
  pairs = [SEEN[i] for i in rng.choice(len(SEEN), num_objects, replace=False)]
  if compositional:  # one object, at a random place in the list, gets a held-out pair
    held_out = sorted(HELD_OUT)
    pairs[rng.integers(num_objects)] = held_out[rng.integers(len(held_out))]
  relation, cells = 'none', [int(rng.integers(9))]
  if num_objects > 1:
    relation = RELATIONS[1 + rng.integers(4)]
    line, (first, second) = rng.integers(3), sorted(rng.choice(3, 2, replace=False))
    if relation in ('left_of', 'right_of'):  # same row, different columns
      cells = [3 * line + first, 3 * line + second]
    else:  # same column, different rows
      cells = [3 * first + line, 3 * second + line]
    if relation in ('right_of', 'below'):
      cells.reverse()
    if num_objects == 3:
      cells.append(int(rng.choice([c for c in range(9) if c not in cells])))
  return [ShapeObject(colour, shape, SIZES[rng.integers(2)], POSITIONS[cell])
          for (colour, shape), cell in zip(pairs, cells)], relation


def concepts(objects: list[ShapeObject], relation: str) -> list[str]:
  """The concepts true of the image, in CONCEPTS order; a relation comes with its inverse."""
  present = {name for o in objects for name in (o.colour, o.shape, o.size, o.position)}
  if relation != 'none':
    present |= {relation, INVERSE[relation]}
  return [c for c in CONCEPTS if c in present]


# --- Captions ---------------------------------------------------------------------

def _pick(rng, words, canonical=0.6):
  """The class name with probability `canonical`, else any synonym."""
  return words[0] if len(words) == 1 or rng.random() < canonical else words[1 + rng.integers(len(words) - 1)]


def _with_article(phrase: str) -> str:
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _describe(rng, o: ShapeObject) -> str:
  """'a large red circle', 'a crimson disc', ...: always colour and shape, usually size."""
  words = [_pick(rng, COLOUR_WORDS[o.colour]), _pick(rng, SHAPE_WORDS[o.shape])]
  if rng.random() < 0.75:
    words.insert(0, _pick(rng, SIZE_WORDS[o.size]))
  return _with_article(' '.join(words))


def _where(rng, o: ShapeObject) -> str:
  return _pick(rng, POSITION_WORDS[o.position], 0.5)


def _related(rng, objects, relation, article=True) -> str:
  """Object 0 relative to object 1 ('a red circle left of a blue star'), either way round."""
  a, b = objects[:2]
  if rng.random() < 0.5:
    a, b, relation = b, a, INVERSE[relation]
  if article:
    return f'{_describe(rng, a)} {_pick(rng, RELATION_WORDS[relation], 0.5)} {_describe(rng, b)}'
  name = lambda o: f'{_pick(rng, COLOUR_WORDS[o.colour])} {_pick(rng, SHAPE_WORDS[o.shape])}'
  return f'the {name(a)} is {_pick(rng, RELATION_WORDS[relation], 0.5)} the {name(b)}'


def _listed(rng, objects, where=False) -> str:
  """'a red circle, a blue star and a green cross', in a random order."""
  items = [f'{_describe(rng, o)} {_where(rng, o)}' if where else _describe(rng, o)
           for o in (objects[i] for i in rng.permutation(len(objects)))]
  return ', '.join(items[:-1]) + ' and ' + items[-1]


def _third(rng, objects, where=False) -> str:
  """', and a green cross at the top' for a third object, else ''."""
  if len(objects) < 3:
    return ''
  return f', and {_describe(rng, objects[2])}' + (f' {_where(rng, objects[2])}' if where else '')


# Each field is drawn anew (synonyms, size or not, order) wherever a template uses it.
CAPTION_FIELDS = {
    'a': lambda r, os, rel: _describe(r, os[0]),
    'where_a': lambda r, os, rel: _where(r, os[0]),
    'picture': lambda r, os, rel: _pick(r, ('a picture of', 'a photo of', 'an image of')),
    'count': lambda r, os, rel: ('two', 'three')[len(os) - 2],
    'listed': lambda r, os, rel: _listed(r, os),
    'listed_where': lambda r, os, rel: _listed(r, os, where=True),
    'related': lambda r, os, rel: _related(r, os, rel),
    'the_related': lambda r, os, rel: _related(r, os, rel, article=False),
    'third': lambda r, os, rel: _third(r, os),
    'third_where': lambda r, os, rel: _third(r, os, where=True),
}
SINGLE_TEMPLATES = ('{a}.', '{a} {where_a}.', '{picture} {a}.', 'there is {a} {where_a}.',
                    '{where_a}, {a}.', 'one shape: {a}.')
MULTI_TEMPLATES = ('{related}{third_where}.', '{listed}.', '{count} shapes: {listed_where}.',
                   '{picture} {related}{third}.', 'there is {listed_where}.',
                   '{listed}; {the_related}.')
CAPTIONS_PER_EXAMPLE = 5


class _Fields(dict):
  def __init__(self, rng, objects, relation):
    super().__init__()
    self.args = rng, objects, relation

  def __missing__(self, key):
    return CAPTION_FIELDS[key](*self.args)


def captions(rng: np.random.Generator, objects: list[ShapeObject], relation: str) -> list[str]:
  """CAPTIONS_PER_EXAMPLE captions, each from a different template; all name every object."""
  templates = SINGLE_TEMPLATES if len(objects) == 1 else MULTI_TEMPLATES
  chosen = rng.choice(len(templates), CAPTIONS_PER_EXAMPLE, replace=False)
  return [templates[i].format_map(_Fields(rng, objects, relation)) for i in chosen]


# --- Images -----------------------------------------------------------------------

SUPERSAMPLE = 4  # drawn at 4x and box-filtered down, for clean edges


def object_box(rng: np.random.Generator, o: ShapeObject, image_size: int) -> tuple[float, ...]:
  """(ymin, xmin, ymax, xmax) in [0, 1]: centred in its cell, jittered, inside the cell."""
  half = SIZE_FRACTION[o.size] / 2
  row, column = divmod(POSITIONS.index(o.position), 3)
  slack = max(1 / 6 - half - 1 / image_size, 0)  # keep a pixel between object and cell edge
  cy, cx = (np.array([row, column]) + 0.5) / 3 + rng.uniform(-slack, slack, 2)
  return (cy - half, cx - half, cy + half, cx + half)


def _outline(shape: str, box: np.ndarray) -> list[tuple[float, float]] | None:
  """Polygon vertices (x, y) of a shape filling `box` (pixels); None for the circle."""
  ymin, xmin, ymax, xmax = box
  cx, cy, h = (xmin + xmax) / 2, (ymin + ymax) / 2, (xmax - xmin) / 2
  if shape == 'square':
    return [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)]
  if shape == 'triangle':
    return [(cx, ymin), (xmax, ymax), (xmin, ymax)]
  if shape == 'diamond':
    return [(cx, ymin), (xmax, cy), (cx, ymax), (xmin, cy)]
  if shape == 'star':
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, h, 0.45 * h)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))
  if shape == 'cross':
    t = 0.36 * h  # half the arm thickness
    return [(cx - t, ymin), (cx + t, ymin), (cx + t, cy - t), (xmax, cy - t), (xmax, cy + t),
            (cx + t, cy + t), (cx + t, ymax), (cx - t, ymax), (cx - t, cy + t), (xmin, cy + t),
            (xmin, cy - t), (cx - t, cy - t)]
  return None


def background(rng: np.random.Generator, image_size: int) -> np.ndarray:
  """A dark grey, slightly tinted: plain, a gentle gradient or faint noise. float [H, W, 3]."""
  base = rng.uniform(25, 95) + rng.uniform(-8, 8, 3)
  image = np.broadcast_to(base, (image_size, image_size, 3)).astype(np.float32)
  kind = rng.integers(3)
  if kind == 1:
    ramp = np.linspace(-1, 1, image_size, dtype=np.float32) * rng.uniform(8, 20)
    image = image + (ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None])
  elif kind == 2:
    image = image + rng.normal(0, 5, image.shape).astype(np.float32)
  return image


def render(rng: np.random.Generator, objects: list[ShapeObject], image_size: int
           ) -> tuple[np.ndarray, list[tuple[float, ...]]]:
  """uint8 [image_size, image_size, 3] and each object's box, (ymin, xmin, ymax, xmax) in [0, 1]."""
  canvas = Image.fromarray(np.clip(background(rng, image_size), 0, 255).astype(np.uint8))
  big = image_size * SUPERSAMPLE
  canvas = canvas.resize((big, big), Image.Resampling.NEAREST)
  draw = ImageDraw.Draw(canvas)
  boxes = []
  for o in objects:
    box = object_box(rng, o, image_size)
    colour = tuple(int(v) for v in np.clip(np.array(COLOURS[o.colour]) + rng.integers(-12, 13, 3), 0, 255))
    pixels = np.array(box) * big
    outline = _outline(o.shape, pixels)
    if outline is None:
      draw.ellipse([pixels[1], pixels[0], pixels[3], pixels[2]], fill=colour)
    else:
      draw.polygon(outline, fill=colour)
    boxes.append(box)
  return np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX)), boxes


SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}


def generate_example(seed: int, split: str, index: int, image_size: int) -> dict:
  """One record of the dataset, as TFDS features expect it (the image still as pixels)."""
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  objects, relation = sample_scene(rng, compositional=split == 'test_compositional')
  texts = captions(rng, objects, relation)
  image, boxes = render(rng, objects, image_size)
  return {
      'image': image,
      'captions': texts,
      'objects': {
          'colour': [o.colour for o in objects], 'shape': [o.shape for o in objects],
          'size': [o.size for o in objects], 'position': [o.position for o in objects],
          'bbox': [tfds.features.BBox(*np.clip(b, 0, 1)) for b in boxes]},
      'relation': relation,
      'concepts': concepts(objects, relation),
  }
