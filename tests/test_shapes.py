"""The embedded 'shapes' dataset: deterministic, split as promised, and its labels tell
the truth about its captions and its pixels."""

import concurrent.futures
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from fdt_jax.data import shapes, shapes_tfds
from fdt_jax.data.tokenizer import Tokenizer

SIZES = dict(num_train=40, num_validation=16, num_test=24, num_compositional=24)
SMALL = dict(image_size=32, seed=0, vocab_size=128, **SIZES)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return shapes_tfds.prepare_shapes(str(tmp_path_factory.mktemp('shapes')), **SMALL)


def records(data, split):
  source = data.data_source(split)
  return [source[i] for i in range(len(source))]


def names(record):
  """The record's objects as (colour, shape, size, position) names."""
  objects = record['objects']
  return [(list(shapes.COLOURS)[c], shapes.SHAPES[s], shapes.SIZES[z], shapes.POSITIONS[p])
          for c, s, z, p in zip(objects['colour'], objects['shape'], objects['size'], objects['position'])]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      assert_same(a[key], b[key])
    else:
      assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def test_splits_have_the_requested_sizes(data):
  expected = dict(zip(shapes.SPLITS, SIZES.values()))
  assert data.split_sizes == expected
  assert {split: len(data.data_source(split)) for split in shapes.SPLITS} == expected


def test_same_seed_gives_identical_records_and_tokenizer(data, tmp_path):
  again = shapes_tfds.prepare_shapes(str(tmp_path), **SMALL)
  for split in shapes.SPLITS:
    for a, b in zip(records(data, split), records(again, split), strict=True):
      assert_same(a, b)
  assert open(data.tokenizer_path, 'rb').read() == open(again.tokenizer_path, 'rb').read()


def test_another_seed_gives_other_records(data, tmp_path):
  other = shapes_tfds.prepare_shapes(str(tmp_path), **{**SMALL, 'seed': 1})
  a, b = records(data, 'validation'), records(other, 'validation')
  assert sum(np.array_equal(x['image'], y['image']) for x, y in zip(a, b)) == 0
  assert sum(x['captions'] == y['captions'] for x, y in zip(a, b)) == 0


def test_records_have_the_documented_layout(data):
  record = data.data_source('train')[0]
  assert record['image'].dtype == np.uint8 and record['image'].shape == (32, 32, 3)
  assert all(isinstance(c, bytes) for c in record['captions'])
  assert len(record['captions']) == shapes.CAPTIONS_PER_EXAMPLE
  assert isinstance(record['relation'], int)
  assert set(record['objects']) == {'colour', 'shape', 'size', 'position', 'bbox'}
  assert 1 <= len(record['objects']['shape']) <= 3


def test_held_out_pairs_appear_only_in_test_compositional(data):
  for split in shapes.SPLITS:
    for record in records(data, split):
      held_out = [(c, s) in shapes.HELD_OUT for c, s, _, _ in names(record)]
      assert sum(held_out) == (1 if split == 'test_compositional' else 0), split


def test_held_out_pairs_are_a_fifth_and_leave_every_colour_and_shape_in_training():
  assert len(shapes.HELD_OUT) == round(len(shapes.COLOURS) * len(shapes.SHAPES) / 5)
  assert {c for c, _ in shapes.SEEN} == set(shapes.COLOURS)
  assert {s for _, s in shapes.SEEN} == set(shapes.SHAPES)


def mentioned(caption, words_by_class):
  return {name for name, words in words_by_class.items()
          if any(re.search(rf'\b{w}\b', caption) for w in words)}


def test_every_caption_names_exactly_the_colours_and_shapes_in_the_image(data):
  for split in shapes.SPLITS:
    for record in records(data, split):
      objects = names(record)
      for caption in (c.decode() for c in record['captions']):
        assert mentioned(caption, shapes.COLOUR_WORDS) == {o[0] for o in objects}, caption
        assert mentioned(caption, shapes.SHAPE_WORDS) == {o[1] for o in objects}, caption


def test_captions_come_from_different_templates(data):
  for record in records(data, 'train'):
    assert len(set(record['captions'])) == shapes.CAPTIONS_PER_EXAMPLE


def nearest_colour(pixel):
  palette = np.array(list(shapes.COLOURS.values()), float)
  return list(shapes.COLOURS)[np.argmin(np.sum((palette - pixel) ** 2, axis=1))]


def assert_visible(image, objects, boxes):
  """At the centre of each object's box: its colour, inside its labelled grid cell."""
  size = image.shape[0]
  for (colour, _, _, position), box in zip(objects, boxes, strict=True):
    ymin, xmin, ymax, xmax = np.asarray(box)
    y, x = int((ymin + ymax) / 2 * size), int((xmin + xmax) / 2 * size)
    assert nearest_colour(image[y, x]) == colour
    assert divmod(shapes.POSITIONS.index(position), 3) == (y * 3 // size, x * 3 // size)


def test_image_shows_each_object_in_its_colour_at_its_labelled_place(data):
  for split in shapes.SPLITS:
    for record in records(data, split):
      assert_visible(record['image'], names(record), record['objects']['bbox'])


def test_224_px_images_show_their_objects_too():
  for index in range(6):
    record = shapes.generate_example(0, 'test_compositional', index, 224)
    assert record['image'].shape == (224, 224, 3) and record['image'].dtype == np.uint8
    objects = record['objects']
    assert_visible(record['image'], list(zip(*(objects[k] for k in ('colour', 'shape', 'size', 'position')))),
                   objects['bbox'])


def test_relation_and_concepts_agree_with_the_objects(data):
  for record in records(data, 'test'):
    objects = names(record)
    relation = shapes.RELATIONS[record['relation']]
    assert (relation == 'none') == (len(objects) == 1)
    if relation != 'none':
      (row_a, col_a), (row_b, col_b) = (divmod(shapes.POSITIONS.index(o[3]), 3) for o in objects[:2])
      assert {'left_of': row_a == row_b and col_a < col_b, 'right_of': row_a == row_b and col_a > col_b,
              'above': col_a == col_b and row_a < row_b, 'below': col_a == col_b and row_a > row_b}[relation]
    concepts = {shapes.CONCEPTS[i] for i in record['concepts']}
    expected = {name for o in objects for name in o}
    if relation != 'none':
      expected |= {relation, shapes.INVERSE[relation]}
    assert concepts == expected


def test_test_split_has_a_good_share_of_single_objects():
  counts = [len(shapes.generate_example(0, 'test', i, 32)['objects']['shape']) for i in range(300)]
  assert np.mean(np.array(counts) == 1) >= 1 / 3
  assert set(counts) == {1, 2, 3}


def test_tokenizer_is_stored_with_the_dataset_and_encodes_every_caption(data):
  assert os.path.dirname(data.tokenizer_path) == os.path.join(
      data.data_dir, *data.tfds_name.replace(':', '/').split('/'))
  tokenizer = Tokenizer(data.tokenizer_path, 77)
  assert tokenizer.vocab_size == SMALL['vocab_size']
  captions = [c.decode() for r in records(data, 'validation') for c in r['captions']]
  tokens = tokenizer.encode(captions)
  assert np.all(tokens[np.arange(len(tokens)), np.argmax(tokens, -1)] == tokenizer.end_of_text_id)
  assert not np.any(tokens == 1), 'unknown pieces'  # train and validation share the words
  assert tokenizer.decode(tokens) == captions


def test_zero_shot_prompts_use_the_words_and_labels_of_the_data(data):
  tokenizer = Tokenizer(data.tokenizer_path, 48)
  record_labels = set(data.data_source('test')[0]['objects'])
  for task in shapes.ZERO_SHOT.values():
    assert task.label in record_labels
    prompts = [t.format(c) for c in task.classnames for t in task.templates]
    assert not np.any(tokenizer.encode(prompts) == 1), 'unknown pieces'
  assert shapes.ZERO_SHOT['shape'].classnames == shapes.SHAPES
  assert shapes.ZERO_SHOT['colour'].classnames == tuple(shapes.COLOURS)


def test_second_prepare_is_a_cache_hit_and_another_vocabulary_reuses_the_images(data, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('generated again')
  monkeypatch.setattr(shapes_tfds.ShapesBuilder, 'download_and_prepare', fail)
  start = time.perf_counter()
  assert shapes_tfds.prepare_shapes(data.data_dir, **SMALL) == data
  assert time.perf_counter() - start < 0.5  # two file checks; no TFDS builder is made
  other = shapes_tfds.prepare_shapes(data.data_dir, **{**SMALL, 'vocab_size': 100})
  assert Tokenizer(other.tokenizer_path, 8).vocab_size == 100
  monkeypatch.setattr(shapes_tfds, 'train_tokenizer', fail)
  assert shapes_tfds.prepare_shapes(data.data_dir, **{**SMALL, 'vocab_size': 100}) == other


def test_interrupted_generation_leaves_nothing_behind_that_is_used(tmp_path, monkeypatch):
  generate = shapes_tfds.generate_example
  def interrupted(seed, split, index, image_size):
    if split == 'validation' and index == 5:
      raise KeyboardInterrupt
    return generate(seed, split, index, image_size)
  monkeypatch.setattr(shapes_tfds, 'generate_example', interrupted)
  with pytest.raises(KeyboardInterrupt):
    shapes_tfds.prepare_shapes(str(tmp_path), **SMALL)
  config_dir = tmp_path / 'fdt_shapes' / shapes_tfds.shapes_config(32, 0, tuple(SIZES.values())).name
  assert os.listdir(config_dir) == []  # TFDS removed its 'incomplete.*' folder
  monkeypatch.setattr(shapes_tfds, 'generate_example', generate)
  prepared = shapes_tfds.prepare_shapes(str(tmp_path), **SMALL)
  assert len(prepared.data_source('validation')) == SIZES['num_validation']


def test_concurrent_preparations_generate_once(tmp_path, monkeypatch):
  generate, calls = shapes_tfds.generate_example, []
  def counted(*args):
    calls.append(args)
    return generate(*args)
  monkeypatch.setattr(shapes_tfds, 'generate_example', counted)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda _: shapes_tfds.prepare_shapes(str(tmp_path), **SMALL), range(2)))
  assert results[0] == results[1]
  assert len(calls) == sum(SIZES.values())


def test_a_split_of_size_zero_is_left_out(tmp_path):
  data = shapes_tfds.prepare_shapes(str(tmp_path), **{**SMALL, 'num_train': 3, 'num_validation': 0})
  assert data.split_sizes == {'train': 3, 'test': 24, 'test_compositional': 24}
  assert len(data.data_source('test')) == 24


def test_generation_and_reading_need_no_tensorflow(tmp_path):
  """Generated and read back with tfds.data_source and grain in a fresh process."""
  script = f"""
import sys
import grain
from fdt_jax.data import shapes_tfds
data = shapes_tfds.prepare_shapes({str(tmp_path)!r}, image_size=32, num_train=4, num_validation=2,
                             num_test=2, num_compositional=2, vocab_size=60)
record = grain.MapDataset.source(data.data_source('test_compositional'))[1]
assert record['image'].shape == (32, 32, 3) and record['captions'][0].endswith(b'.')
assert len(record['objects']['shape']) == len(record['objects']['bbox']) >= 1
assert record['relation'] in range(5) and len(record['concepts']) >= 4
assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
"""
  env = {**os.environ, 'PYTHONPATH': os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
