"""MVPTR's concepts of a converted dataset (`python -m fdt_jax.data.convert ... --concepts`):
what each record stores, the vocabulary counted over the train split, and the concept
fields of a training example, as data/concepts.py gives them for shapes.

  record['concepts']   one JSON text per caption, beside record['captions']: the tuples the
                       caption states (data/phrases.py) with their characters,
                       [["man", 2, 5], ["man riding bus", 2, 35], ...]
  OUT/concepts.json    the vocabulary: every tuple stated by at least `min_count` captions of
                       the train split (MVPTR keeps those seen in >= 50 sentences), most
                       frequent first, ties by name; concept names[k] has id k + 2 (0 and 1
                       are padding and the mask), so model.num_concepts = len(names) + 2.

The counts are summed from each shard's counts file, so the vocabulary is the same however
the shards were ordered, spread over workers or resumed.
"""

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from fdt_jax.atomic_write import write_json_atomically
from fdt_jax.data.concepts import FIRST_ID, MAX_PHRASES, MAX_TAGS, PAD_ID, token_spans
from fdt_jax.data.converted import read_json

VOCABULARY = 'concepts.json'
DEFAULT_MIN_COUNT = 50  # MVPTR's threshold (mamo-mvptr.md)


def caption_concepts_field(caption: str) -> str:
  """What a record stores for one caption: its tuples with their spans, as JSON."""
  from fdt_jax.data.phrases import caption_tuple_spans
  return json.dumps([[name, start, end] for name, (start, end) in caption_tuple_spans(caption).items()])


def build_vocabulary(counts: Mapping[str, int], min_count: int) -> list[tuple[str, int]]:
  """(name, captions stating it) of every tuple with at least `min_count`: by count, then name."""
  return sorted(((name, n) for name, n in counts.items() if n >= min_count), key=lambda c: (-c[1], c[0]))


def write_vocabulary(output: str, counts: Mapping[str, int], *, min_count: int, extractor: str,
                     captions: int, captions_without_concepts: int, split: str = 'train') -> dict:
  """OUT/concepts.json from the split's tuple counts; returns its content."""
  kept = build_vocabulary(counts, min_count)
  vocabulary = {
      'extractor': extractor, 'split': split, 'min_count': min_count, 'first_id': FIRST_ID,
      'captions': captions, 'captions_without_concepts': captions_without_concepts,
      'distinct_tuples': len(counts), 'num_concepts': len(kept) + FIRST_ID,
      'names': [name for name, _ in kept], 'counts': [n for _, n in kept]}
  write_json_atomically(os.path.join(output, VOCABULARY), vocabulary)
  return vocabulary


def read_vocabulary(path: str) -> dict:
  """OUT/concepts.json; a folder converted without --concepts fails in one line."""
  vocabulary = read_json(os.path.join(os.path.expanduser(path), VOCABULARY))
  if vocabulary is None:
    raise ValueError(f'config.data.concepts = True but {path} has no concepts (no {VOCABULARY}): '
                     f're-convert its train split with python -m fdt_jax.data.convert --concepts '
                     '(and --overwrite)')
  return vocabulary


def check_num_concepts(vocabulary: dict, num_concepts: int, path: str) -> None:
  if num_concepts != vocabulary['num_concepts']:
    raise ValueError(f'config.model.num_concepts = {num_concepts} but {path} has '
                     f'{len(vocabulary["names"])} concepts (seen in >= {vocabulary["min_count"]} '
                     f'captions): set --config.model.num_concepts={vocabulary["num_concepts"]} '
                     '(the concepts, padding and mask)')


def _padded(ids: list[int], length: int) -> np.ndarray:
  return np.asarray(ids + [PAD_ID] * (length - len(ids)), np.int32)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class ConvertedConcepts:
  """A converted record and the caption drawn for it -> 'phrases' int32 [MAX_PHRASES] (the
  caption's tuples in the vocabulary, in order; the others dropped), 'tags' int32 [MAX_TAGS]
  (the image's: the tuples of all its record's captions, in the vocabulary, each once, in
  caption then tuple order) and, with a tokenizer, 'phrase_spans' int32 [MAX_PHRASES, 2]
  (each phrase's token positions), as data/concepts.py's example_concepts for shapes."""
  ids: Mapping[str, int]  # concept name -> id
  tokenizer: Any = None

  @classmethod
  def from_vocabulary(cls, vocabulary: dict, tokenizer=None) -> 'ConvertedConcepts':
    return cls({name: k + FIRST_ID for k, name in enumerate(vocabulary['names'])}, tokenizer)

  def __call__(self, record, caption: str) -> dict[str, np.ndarray]:
    captions = [_text(c) for c in record['captions']]
    stated = [json.loads(_text(field)) for field in record['concepts']]  # per caption
    own = [(name, (start, end)) for name, start, end in stated[captions.index(caption)]
           if name in self.ids][:MAX_PHRASES]
    tags = list(dict.fromkeys(name for tuples in stated for name, _, _ in tuples if name in self.ids))
    fields = {'phrases': _padded([self.ids[name] for name, _ in own], MAX_PHRASES),
              'tags': _padded([self.ids[name] for name in tags[:MAX_TAGS]], MAX_TAGS)}
    if self.tokenizer is not None:
      fields['phrase_spans'] = token_spans(caption, [span for _, span in own], self.tokenizer)
    return fields
