"""MVPTR's concepts on the 'shapes' data: the phrases of a caption and the tags of an image.

MVPTR (Li et al., 2022) adds a level between words and sentences: each caption carries
the scene-graph tuples it states (an object; an attribute with its object; subject,
relation, object), each image carries object tags, and both are ids in one concept
vocabulary. On shapes every tuple is known exactly, so:

  - the vocabulary is every tuple the generator can state: a shape ('star'), a colour or a
    size with a shape ('red star', 'small star'), and two shapes in a relation
    ('star left_of circle'): 6 + 48 + 12 + 144 = 210 concepts;
  - an image's tags are the tuples true of it, from the generator's objects (a relation
    in both directions);
  - a caption's phrases are the tuples it states, read off the caption with the generator's
    own word lists (every synonym, both word orders of a relation), so that what a caption
    says and what its image shows can be compared exactly.

Ids 0 and 1 are padding and the mask; concept k of CONCEPT_NAMES has id k + 2. Real data
has its concepts from a phrase extractor at conversion time (data/phrases.py) and its
vocabulary from the conversion (data/concept_vocabulary.py), with the same ids and fields.
"""

import itertools
import re

import numpy as np

from fdt_jax.data.shapes import (COLOUR_WORDS, COLOURS, INVERSE, POSITIONS, RELATION_WORDS,
                                 RELATIONS, SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES, ShapeObject)

COLOUR_NAMES = tuple(COLOURS)

PAD_ID, MASK_ID = 0, 1
FIRST_ID = 2
# MVPTR's pre-training lengths (35 words + 5 phrases; up to 20 tags), from mamo-mvptr.md.
MAX_PHRASES, MAX_TAGS = 5, 20

_SHAPES = tuple(SHAPE_WORDS)
CONCEPT_NAMES = (
    *_SHAPES,
    *(f'{colour} {shape}' for colour in COLOUR_WORDS for shape in _SHAPES),
    *(f'{size} {shape}' for size in SIZE_WORDS for shape in _SHAPES),
    *(f'{a} {relation} {b}' for a, relation, b in itertools.product(_SHAPES, RELATION_WORDS, _SHAPES)),
)
CONCEPT_IDS = {name: i + FIRST_ID for i, name in enumerate(CONCEPT_NAMES)}
VOCAB_SIZE = len(CONCEPT_NAMES) + FIRST_ID


def _alternatives(words: dict[str, tuple[str, ...]]) -> tuple[str, dict[str, str]]:
  """A regex group matching any synonym (longest first) and synonym -> class name."""
  names = {w: name for name, ws in words.items() for w in ws}
  pattern = '|'.join(re.escape(w) for w in sorted(names, key=len, reverse=True))
  return f'({pattern})', names


_SIZE, _SIZE_NAMES = _alternatives(SIZE_WORDS)
_COLOUR, _COLOUR_NAMES = _alternatives(COLOUR_WORDS)
_SHAPE, _SHAPE_NAMES = _alternatives(SHAPE_WORDS)
_RELATION, _RELATION_NAMES = _alternatives(RELATION_WORDS)
# A named object: an optional size, then a colour and a shape (as every caption names them).
_OBJECT = re.compile(rf'\b(?:{_SIZE} )?{_COLOUR} {_SHAPE}\b')
# What stands between two objects in a relation: 'a red circle left of a blue star',
# 'the red circle is under the blue star'.
_BETWEEN = re.compile(rf' (?:is )?{_RELATION} (?:an?|the) $')


def _object_concepts(size: str | None, colour: str, shape: str) -> list[str]:
  return [shape, f'{colour} {shape}'] + ([f'{size} {shape}'] if size else [])


def caption_concepts(caption: str) -> list[str]:
  """The tuples a shapes caption states, in the order it states them, each once."""
  return list(caption_concept_spans(caption))


def caption_concept_spans(caption: str) -> dict[str, tuple[int, int]]:
  """Each tuple a caption states -> the characters [start, end) that state it first: the
  shape word; the colour (or size) word to the shape word; a relation from the first
  object's first word to the second object's shape word."""
  found = {}
  text = caption.lower()
  mentions = list(_OBJECT.finditer(text))
  for m in mentions:
    size = _SIZE_NAMES[m[1]] if m[1] else None
    names = _object_concepts(size, _COLOUR_NAMES[m[2]], _SHAPE_NAMES[m[3]])
    spans = [(m.start(3), m.end(3)), (m.start(2), m.end(3))] + ([(m.start(1), m.end(3))] if size else [])
    for name, span in zip(names, spans):
      found.setdefault(name, span)
  for a, b in zip(mentions, mentions[1:]):
    between = _BETWEEN.fullmatch(text[a.end():b.start()])
    if between:  # the article before the second object belongs to the gap
      found.setdefault(f'{_SHAPE_NAMES[a[3]]} {_RELATION_NAMES[between[1]]} {_SHAPE_NAMES[b[3]]}',
                       (a.start(), b.end()))
  return found


def phrase_token_spans(caption: str, tokenizer, length: int = MAX_PHRASES) -> np.ndarray:
  """int32 [length, 2]: the token positions [start, end) of the caption's first `length`
  phrases (0 for padding), so that masking can mask a phrase whose words it masks."""
  return token_spans(caption, list(caption_concept_spans(caption).values()), tokenizer, length)


def token_spans(caption: str, spans: list[tuple[int, int]], tokenizer,
                length: int = MAX_PHRASES) -> np.ndarray:
  """int32 [length, 2]: the token positions [start, end) of the first `length` character
  spans [start, end) of `caption` (0 for padding). The tokenizer splits at spaces
  (sentencepiece does), so a span's tokens are counted by encoding the caption up to its
  first and its last character."""
  spans = spans[:length]
  prefixes = [caption[:start].rstrip() for start, _ in spans] + [caption[:end] for _, end in spans]
  counts = np.sum(tokenizer.encode(prefixes) != 0, axis=1) - 1 if prefixes else []  # not end-of-text
  out = np.zeros((length, 2), np.int32)
  out[:len(spans)] = np.stack([counts[:len(spans)], counts[len(spans):]], axis=1) if spans else 0
  return out


def image_concepts(objects: list[ShapeObject], relation: str) -> list[str]:
  """The tuples true of an image (its tags): each object's, and the relation both ways."""
  found = [c for o in objects for c in _object_concepts(o.size, o.colour, o.shape)]
  if relation != 'none':
    a, b = objects[0].shape, objects[1].shape
    found += [f'{a} {relation} {b}', f'{b} {INVERSE[relation]} {a}']
  return list(dict.fromkeys(found))


def example_concepts(record: dict, caption: str, tokenizer=None) -> dict[str, np.ndarray]:
  """The concept fields of a training example from a shapes record (its objects and
  relation as the TFDS ClassLabel ids) and the caption drawn for it: 'phrases' int32
  [MAX_PHRASES] and 'tags' int32 [MAX_TAGS], padded with PAD_ID; with a tokenizer also
  'phrase_spans' int32 [MAX_PHRASES, 2] (phrase_token_spans)."""
  objects = record['objects']
  scene = [ShapeObject(COLOUR_NAMES[c], SHAPES[s], SIZES[z], POSITIONS[p]) for c, s, z, p in
           zip(objects['colour'], objects['shape'], objects['size'], objects['position'])]
  tags = image_concepts(scene, RELATIONS[int(record['relation'])])
  fields = {'phrases': np.asarray(concept_ids(caption_concepts(caption), MAX_PHRASES), np.int32),
            'tags': np.asarray(concept_ids(tags, MAX_TAGS), np.int32)}
  if tokenizer is not None:
    fields['phrase_spans'] = phrase_token_spans(caption, tokenizer)
  return fields


def concept_ids(names: list[str], length: int) -> list[int]:
  """Ids of the first `length` concepts, padded with PAD_ID."""
  ids = [CONCEPT_IDS[n] for n in names[:length]]
  return ids + [PAD_ID] * (length - len(ids))
