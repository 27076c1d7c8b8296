"""MVPTR's concepts on shapes: what a caption states and what an image holds, in one
vocabulary, checked against hand-read captions and against the generator's own scenes."""

import numpy as np
import pytest

from fdt_jax.data import concepts as C
from fdt_jax.data.shapes import ShapeObject, captions, sample_scene


@pytest.mark.parametrize('caption, expected', [
    ('a small crimson disc to the left of a blue star.',
     ['circle', 'red circle', 'small circle', 'star', 'blue star', 'circle left_of star']),
    ('the golden plus sign is beneath the pink rhombus.',
     ['cross', 'yellow cross', 'diamond', 'pink diamond', 'cross below diamond']),
    ('two shapes: a big green square on the left and an orange triangle on the right.',
     ['square', 'green square', 'large square', 'triangle', 'orange triangle']),
    ('a photo of a violet block over a tiny azure disc, and a red star.',
     ['square', 'purple square', 'circle', 'blue circle', 'small circle', 'star', 'red star',
      'square above circle']),
    ('in the top left corner, a cyan cross.', ['cross', 'cyan cross']),
])
def test_the_phrases_of_hand_read_captions(caption, expected):
  assert C.caption_concepts(caption) == expected


def test_the_vocabulary_has_every_tuple_once():
  assert len(C.CONCEPT_NAMES) == 6 + 8 * 6 + 2 * 6 + 6 * 4 * 6 == 210
  assert len(set(C.CONCEPT_NAMES)) == 210
  assert sorted(C.CONCEPT_IDS.values()) == list(range(C.FIRST_ID, C.VOCAB_SIZE))
  assert C.concept_ids(['star', 'red star'], 4) == [C.CONCEPT_IDS['star'],
                                                     C.CONCEPT_IDS['red star'], 0, 0]


def test_the_tags_of_an_image_are_its_objects_and_its_relation_both_ways():
  objects = [ShapeObject('red', 'star', 'small', 'left'), ShapeObject('blue', 'circle', 'large', 'right')]
  assert C.image_concepts(objects, 'left_of') == [
      'star', 'red star', 'small star', 'circle', 'blue circle', 'large circle',
      'star left_of circle', 'circle right_of star']


def test_every_generated_caption_states_only_what_its_image_holds():
  """400 scenes of the generator: each caption's phrases are tags of its image; each
  caption names every object (shape, colour + shape); a scene with a relation has it stated,
  the right way round, in at least two of its five captions (3 of the 6 templates do)."""
  for index in range(400):
    rng = np.random.default_rng([7, index])
    objects, relation = sample_scene(rng, compositional=index % 4 == 0)
    tags = set(C.image_concepts(objects, relation))
    stated_relations = 0
    for caption in captions(rng, objects, relation):
      phrases = C.caption_concepts(caption)
      assert set(phrases) <= tags, (caption, set(phrases) - tags)
      for o in objects:
        assert {o.shape, f'{o.colour} {o.shape}'} <= set(phrases), (caption, o)
      stated_relations += any(len(p.split()) == 3 for p in phrases)
    assert stated_relations >= (2 if relation != 'none' else 0), (objects, relation)


def test_training_batches_carry_the_phrases_of_their_caption_and_the_tags_of_their_image(shapes_dir):
  from conftest import micro_config
  from fdt_jax.data.sources import build_data
  from fdt_jax.models import model_config
  config = micro_config(shapes_dir, **{'data.concepts': True})
  data = build_data(config, model_config(config.model))
  assert data.batch_fields == ('images', 'tokens', 'phrases', 'tags', 'phrase_spans')
  batch = next(data.train_iterator(process_index=0, process_count=1))
  assert batch['phrases'].shape == (config.batch_size, C.MAX_PHRASES)
  assert batch['tags'].shape == (config.batch_size, C.MAX_TAGS)
  names = {i: n for n, i in C.CONCEPT_IDS.items()}
  for phrases, tags, tokens in zip(batch['phrases'], batch['tags'], batch['tokens']):
    phrases, tags = set(phrases) - {C.PAD_ID}, set(tags) - {C.PAD_ID}
    assert len(phrases) >= 2 and phrases <= tags, ([names[i] for i in phrases], [names[i] for i in tags])
    caption = data.tokenizer.decode(tokens) if hasattr(data.tokenizer, 'decode') else None
    if caption:  # the phrases are those of the caption the example's tokens spell
      assert phrases == {C.CONCEPT_IDS[n] for n in C.caption_concepts(caption)[:C.MAX_PHRASES]}


def test_concepts_on_data_without_them_are_refused_in_one_line(shapes_dir):
  from conftest import micro_config
  from fdt_jax.data.sources import build_data
  from fdt_jax.models import model_config
  config = micro_config(shapes_dir, **{'data.concepts': True, 'data.name': f'dir:{shapes_dir}',
                                       'data.tokenizer': 'unused.model'})
  with pytest.raises(ValueError, match=r'has no concepts .* re-convert .* --concepts'):
    build_data(config, model_config(config.model))
  config = micro_config(shapes_dir, **{'data.concepts': True,
                                       'data.mixture': (('shapes', 0.5), (f'dir:{shapes_dir}', 0.5))})
  with pytest.raises(ValueError, match=r'concepts .* known for the shapes data and for dir:PATH '
                                       r'converted with --concepts, not a mixture'):
    build_data(config, model_config(config.model))


def test_phrase_spans_are_the_tokens_that_state_each_phrase(shapes_dir):
  """On the shapes tokenizer: decoding a phrase's tokens gives the words that state it."""
  from conftest import micro_config
  from fdt_jax.data.sources import build_data
  from fdt_jax.models import model_config
  config = micro_config(shapes_dir, **{'data.concepts': True})
  tokenizer = build_data(config, model_config(config.model)).tokenizer
  caption = 'two shapes: a small crimson disc to the left of a blue star.'
  assert caption[slice(*C.caption_concept_spans(caption)['red circle'])] == 'crimson disc'
  spans = C.phrase_token_spans(caption, tokenizer)
  tokens = tokenizer.encode(caption)[0]
  stated = [tokenizer.decode(tokens[start:end]) for start, end in spans]
  assert stated == ['disc', 'crimson disc', 'small crimson disc', 'star', 'blue star']
  assert (C.phrase_token_spans('a red star.', tokenizer)[2:] == 0).all()  # padding
  relation = C.caption_concept_spans(caption)['circle left_of star']
  assert caption[slice(*relation)] == 'small crimson disc to the left of a blue star'
