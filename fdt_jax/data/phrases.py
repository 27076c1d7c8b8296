"""MVPTR's concepts of a real caption: the scene-graph tuples it states, each with the
characters that state it, for `python -m fdt_jax.data.convert ... --concepts`.

MVPTR (Li et al., 2022) parsed its captions into scene graphs and kept their tuples: an
object; an attribute with its object; subject, relation, object. The authors' parser
(SceneGraphParser) runs on spaCy's en_core_web_sm, which is a GitHub release, not a PyPI
package; NLTK's taggers and stanza download their models at run time. TextBlob's vendored
copy of the Pattern tagger and chunker (Penn Treebank tags; NP, VP, PP, ADJP ... chunks)
ships its lexicon inside the wheel: it installs with pip and runs offline. (Of TextBlob we
use `textblob.en.parse` with lemmata and relations off, which crash in 0.20.1, and
`Word.singularize`, which is rules; `.noun_phrases` and `.tags` need NLTK's corpora.)
From its chunks, per caption:

  object                     each noun phrase's head (its last noun), lower case; a plural
                             singularised ('dogs' -> 'dog', 'people' -> 'person')
  attribute object           each adjective or participle before the head: 'red bus'
  subject relation object    two consecutive noun phrases with only verb, preposition,
                             adjective or adverb chunks between them, whose words (forms of
                             'be' left out) are the relation: 'man riding bus', 'bus next to dog'

What it does not do: a relation always links the nearest noun phrases ('a man riding a bus
next to a dog' gives 'bus next to dog', whoever is next to the dog); pronouns are not
resolved ('A dog with a ball. It is chasing a cat.' gives no 'dog chasing cat'); verbs are
not lemmatised ('riding', not 'ride'); an adjective after a verb is no attribute ('the bus
is red' gives only 'bus'); a noun's modifiers that are nouns are dropped ('tennis player'
gives 'player'); coordinated phrases give their objects but relate only the nearest ('a cat
and a dog on a sofa' gives 'dog on sofa'); and the tagger's mistakes stay.
"""

import functools
import re

# Bumped whenever the rules below change what a caption gives: the extractor's name is part
# of a conversion's settings, so a resumed conversion never mixes two versions.
RULES_VERSION = 1

NOUNS = ('NN', 'NNS', 'NNP', 'NNPS')
PLURALS = ('NNS', 'NNPS')
ATTRIBUTES = ('JJ', 'JJR', 'JJS', 'VBN', 'VBG')  # before the head, inside the noun phrase
DETERMINERS = ('DT', 'PDT', 'PRP$', 'WDT')  # not part of what a relation's span starts with
RELATION_CHUNKS = ('VP', 'PP', 'ADJP', 'ADVP', 'PRT')  # what may stand between two related objects
BE = frozenset({'am', 'is', 'are', 'was', 'were', 'be', 'been', 'being', "'s", "'re", "'m"})
NEGATIONS = frozenset({'not', "n't", 'no', 'never', 'without'})  # a relation said not to hold
# Adjectives that count or compare rather than describe.
QUANTIFIERS = frozenset({'many', 'several', 'few', 'other', 'another', 'more', 'most', 'much',
                         'various', 'numerous', 'multiple', 'own', 'such', 'same'})

# Words with their hyphens ('double-decker'), the Penn Treebank's clitics split off ("is" "n't",
# "man" "'s"), and each other non-space character alone; the tagger gets them joined by spaces,
# so every token's characters in the caption are known.
_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|[^\w\s]", re.IGNORECASE)


@functools.cache
def extractor_name() -> str:
  """What made a conversion's concepts: recorded with it, compared when it resumes."""
  from importlib.metadata import version
  return f'fdt_jax.data.phrases v{RULES_VERSION} (textblob {version("textblob")} Pattern chunks)'


def caption_tuples(caption: str) -> list[str]:
  """The tuples a caption states, objects (each followed by its attributes) in the order
  they come, then relations, each once."""
  return list(caption_tuple_spans(caption))


def caption_tuple_spans(caption: str) -> dict[str, tuple[int, int]]:
  """Each tuple -> the characters [start, end) that state it first: the head noun; the
  adjective to the head; a relation from the subject's first word (after its determiner)
  to the object's head. The same format as data/concepts.py's caption_concept_spans."""
  # The curly apostrophe as the straight one the tagger knows (one character for one).
  tokens = [(m.start(), m.end(), m[0]) for m in _TOKEN.finditer(caption.replace('\u2019', "'"))]
  if not tokens:
    return {}
  tagged = _tag([word for _, _, word in tokens])
  found = {}
  objects = _objects(tagged)
  for part in objects:
    if part.head is None:
      continue
    name = _object_name(*tagged[part.head][:2])
    found.setdefault(name, tokens[part.head][:2])
    for i in part.attributes:
      found.setdefault(f'{tagged[i][0].lower()} {name}', (tokens[i][0], tokens[part.head][1]))
  for k, (subject, obj) in enumerate(zip(objects, objects[1:])):
    gap = range(subject.end, obj.start)
    if not gap or any(_kind(tagged[i][2]) not in RELATION_CHUNKS for i in gap):
      continue
    # 'on the children's mat': the object is the mat, the thing possessed.
    following = iter(objects[k + 2:])
    while obj.possessor and (obj := next(following, None)) is not None:
      pass
    if subject.head is None or obj is None or obj.head is None:
      continue
    words = [tagged[i][0].lower() for i in gap if tagged[i][0].lower() not in BE]
    said_not = {tagged[i][0].lower() for i in [*gap, *range(obj.start, obj.head)]} & NEGATIONS
    if words and not said_not:  # not 'cat with tail' from 'a cat with no tail'
      name = ' '.join([_object_name(*tagged[subject.head][:2]), *words,
                       _object_name(*tagged[obj.head][:2])])
      found.setdefault(name, (tokens[subject.first_word][0], tokens[obj.head][1]))
  return found


def _tag(words: list[str]) -> list[tuple[str, str, str]]:
  """(word, Penn Treebank tag, chunk tag: 'B-NP' begins a noun phrase, 'I-NP' continues it,
  'O' is outside any chunk) per word, in order."""
  from textblob.en import parse  # Pattern's tagger and chunker, vendored in TextBlob
  parsed = parse(' '.join(words), tokenize=False, tags=True, chunks=True, relations=False,
                 lemmata=False).split()
  tagged = [tuple(token[:3]) for sentence in parsed for token in sentence]
  if [word for word, _, _ in tagged] != words:  # the words go in split at spaces: never seen
    raise RuntimeError(f'the tagger changed the words of {" ".join(words)!r}')
  return tagged


def _kind(iob: str) -> str:
  return 'O' if iob == 'O' else iob[2:]


class _Part:
  """A noun phrase, or one piece of a coordination in one ('broccoli and meat'): the words
  [start, end), its head noun (None if it has none: 'it', 'two'), the attributes before it,
  the first word after the determiners, and whether a possessive "'s" follows it."""

  def __init__(self, tagged, start: int, end: int):
    self.start, self.end = start, end
    nouns = [i for i in range(start, end) if tagged[i][1] in NOUNS and tagged[i][0][0].isalnum()]
    self.head = nouns[-1] if nouns else None
    self.attributes = [i for i in range(start, self.head if nouns else start)
                       if tagged[i][1] in ATTRIBUTES and tagged[i][0][0].isalnum()
                       and tagged[i][0].lower() not in QUANTIFIERS]
    self.first_word = next((i for i in range(start, end) if tagged[i][1] not in DETERMINERS), start)
    self.possessor = end < len(tagged) and tagged[end][1] == 'POS'  # 'man' in "the man's dog"


def _objects(tagged) -> list[_Part]:
  """The noun phrases in order, each cut at its commas, conjunctions and possessive "'s"."""
  parts, start = [], None
  for i, (_, tag, iob) in enumerate(tagged + [('', '', 'O')]):
    inside = _kind(iob) == 'NP' and tag not in ('CC', ',', 'POS')
    new_phrase = iob == 'B-NP' or not inside
    if start is not None and new_phrase:
      parts.append(_Part(tagged, start, i))
      start = None
    if inside and start is None:
      start = i
  return parts


def _object_name(word: str, tag: str) -> str:
  word = word.lower()
  if tag in PLURALS:
    from textblob import Word  # rules, no data
    word = str(Word(word).singularize())
  return word
