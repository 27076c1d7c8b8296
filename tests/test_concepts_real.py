"""MVPTR's concepts for real data: the phrase extractor on hand-read captions, the vocabulary
a conversion counts, and the concept fields of training batches read from converted shards."""

import pytest

from fdt_jax.data import phrases

BUS = 'A man riding a red double-decker bus next to two small dogs on the street.'


@pytest.mark.parametrize('caption, expected', [
    (BUS, ['man', 'bus', 'red bus', 'double-decker bus', 'dog', 'small dog', 'street',
           'man riding bus', 'bus next to dog', 'dog on street']),
    ('Two women are sitting on a bench in the park.',  # 'are' left out of the relation
     ['woman', 'bench', 'park', 'woman sitting on bench', 'bench in park']),
    ('people are walking down a busy city street',  # a noun modifier ('city') is dropped
     ['person', 'street', 'busy street', 'person walking down street']),
    ("The dog sits on the man's old sofa",  # the possessed thing is the object
     ['dog', 'man', 'sofa', 'old sofa', 'dog sits on sofa']),
    ("A man's dog doesn't sit on the mat.",  # a negated relation is not one
     ['man', 'dog', 'mat']),
    ('A cat with no tail sleeping under a blue car',  # the nearest noun phrase is the subject
     ['cat', 'tail', 'car', 'blue car', 'tail sleeping under car']),
    ('Buses parked near many tall buildings',  # a quantifier is no attribute
     ['bus', 'building', 'tall building', 'bus parked near building']),
    ('', []), ('!!! ...', []), ('it is there', []),
])
def test_the_tuples_of_hand_read_captions(caption, expected):
  assert phrases.caption_tuples(caption) == expected


def test_each_tuple_spans_the_words_that_state_it():
  stated = {name: BUS[start:end] for name, (start, end) in phrases.caption_tuple_spans(BUS).items()}
  assert stated == {
      'man': 'man', 'bus': 'bus', 'red bus': 'red double-decker bus',
      'double-decker bus': 'double-decker bus', 'dog': 'dogs', 'small dog': 'small dogs',
      'street': 'street', 'man riding bus': 'man riding a red double-decker bus',
      'bus next to dog': 'red double-decker bus next to two small dogs',
      'dog on street': 'two small dogs on the street'}
  curly = 'The dog sits on the man\u2019s old sofa'  # spans in the caption as written
  assert {n: curly[s:e] for n, (s, e) in phrases.caption_tuple_spans(curly).items()}['dog sits on sofa'] \
      == 'dog sits on the man\u2019s old sofa'


def test_the_extractor_names_its_version():
  assert phrases.extractor_name().startswith(f'fdt_jax.data.phrases v{phrases.RULES_VERSION} (textblob 0.20.1')
