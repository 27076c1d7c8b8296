"""The sentencepiece tokenizer keeps CLIP's id convention, which the text tower relies on:
padding 0, end-of-text = vocab_size - 1 = the largest id, found by argmax."""

import io
import os
import pickle

import numpy as np
import pytest
import sentencepiece as spm

from fdt_jax.data.tokenizer import Tokenizer, train_tokenizer

CAPTIONS = [
    'a large red circle on the left.',
    'a big crimson disc to the left of a small blue square.',
    'two shapes: a green star above a yellow triangle.',
    'there is a tiny purple diamond in the top right corner.',
    'a picture of an orange cross, a pink square and a cyan star.',
    'a small turquoise plus sign below a large violet rhombus.',
    'three shapes: a golden circle at the top, a blue block on the right and a red star.',
    'one shape: a little emerald triangle in the middle.',
] * 4
VOCAB_SIZE = 96
LENGTH = 16


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
  return train_tokenizer(CAPTIONS, str(tmp_path_factory.mktemp('tokenizer') / 'captions.model'),
                         VOCAB_SIZE)


@pytest.fixture(scope='module')
def tokenizer(model_path):
  return Tokenizer(model_path, LENGTH)


def test_vocabulary_has_exactly_the_requested_size(tokenizer):
  assert tokenizer.vocab_size == VOCAB_SIZE
  assert tokenizer.end_of_text_id == VOCAB_SIZE - 1
  tokens = tokenizer.encode(CAPTIONS)
  assert tokens.dtype == np.int32 and tokens.shape == (len(CAPTIONS), LENGTH)
  assert 0 <= tokens.min() and tokens.max() == VOCAB_SIZE - 1


def test_round_trip_gives_back_the_lowercased_text(model_path):
  tokenizer = Tokenizer(model_path, 64)
  texts = CAPTIONS[:8] + ['A Big RED  Star.']
  assert tokenizer.decode(tokenizer.encode(texts)) == [' '.join(t.lower().split()) for t in texts]
  assert tokenizer.decode(tokenizer.encode('a red star.')[0]) == 'a red star.'


def test_each_row_is_pieces_then_one_end_of_text_then_padding(model_path):
  tokenizer = Tokenizer(model_path, 64)
  pieces = spm.SentencePieceProcessor(model_file=model_path)
  eot = tokenizer.end_of_text_id
  for row, text in zip(tokenizer.encode(CAPTIONS), CAPTIONS):
    (end,) = np.flatnonzero(row == eot)
    assert np.array_equal(row[:end], pieces.encode(text))  # the model's own ids, unchanged
    assert np.all(row[:end] > 0) and np.all(row[end + 1:] == 0)


def test_argmax_finds_end_of_text(tokenizer):
  tokens = tokenizer.encode(CAPTIONS + ['', 'red'])
  positions = np.argmax(tokens, axis=-1)
  assert np.all(tokens[np.arange(len(tokens)), positions] == tokenizer.end_of_text_id)
  assert np.array_equal(positions, [np.flatnonzero(row == tokenizer.end_of_text_id)[0] for row in tokens])


def test_truncation_keeps_end_of_text_as_the_last_token(model_path):
  short = Tokenizer(model_path, 5)
  full = Tokenizer(model_path, 64)
  text = CAPTIONS[1]
  tokens = short.encode(text)[0]
  assert tokens[-1] == short.end_of_text_id
  assert np.array_equal(tokens[:-1], full.encode(text)[0][:4])


def test_empty_and_whitespace_texts_are_just_end_of_text(tokenizer):
  tokens = tokenizer.encode(['', '   ', '\t\n'])
  expected = np.zeros(LENGTH, np.int32)
  expected[0] = tokenizer.end_of_text_id
  assert np.array_equal(tokens, np.stack([expected] * 3))
  assert tokenizer.decode(tokens) == ['', '', '']


def test_training_is_deterministic_and_leaves_only_the_model_file(tmp_path, tokenizer):
  first = train_tokenizer(CAPTIONS, str(tmp_path / 'a.model'), VOCAB_SIZE)
  second = train_tokenizer(CAPTIONS, str(tmp_path / 'b.model'), VOCAB_SIZE)
  assert sorted(os.listdir(tmp_path)) == ['a.model', 'b.model']
  assert open(first, 'rb').read() == open(second, 'rb').read()
  assert np.array_equal(Tokenizer(second, LENGTH).encode(CAPTIONS), tokenizer.encode(CAPTIONS))


def test_too_large_a_vocabulary_says_how_large_it_may_be(tmp_path):
  with pytest.raises(ValueError, match=r'use vocab_size <= \d+'):
    train_tokenizer(CAPTIONS, str(tmp_path / 'x.model'), 5000)
  assert os.listdir(tmp_path) == []


def test_missing_or_broken_model_file_names_the_path_and_the_fix(tmp_path):
  missing = str(tmp_path / 'nowhere.model')
  with pytest.raises(FileNotFoundError, match='nowhere.model.*train_tokenizer'):
    Tokenizer(missing, LENGTH)
  broken = tmp_path / 'broken.model'
  broken.write_bytes(b'not a model')
  with pytest.raises(ValueError, match='broken.model.*train_tokenizer'):
    Tokenizer(str(broken), LENGTH)


def test_model_with_sentencepiece_default_ids_is_remapped(tmp_path):
  """unk 0, bos 1, eos 2, no pad: a pad id is added at 0, end-of-text moves to the top."""
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=proto,
                                 vocab_size=60, model_type='bpe', minloglevel=2)
  path = tmp_path / 'default.model'
  path.write_bytes(proto.getvalue())
  tokenizer = Tokenizer(str(path), 64)
  assert tokenizer.vocab_size == 61
  tokens = tokenizer.encode(CAPTIONS[:3] + [''])
  ends = np.argmax(tokens, axis=-1)
  assert np.all(tokens[np.arange(4), ends] == 60)
  assert all(np.all(row[:end] > 0) and np.all(row[end + 1:] == 0) for row, end in zip(tokens, ends))
  assert tokenizer.decode(tokens) == CAPTIONS[:3] + ['']


def test_tokenizer_survives_pickling_for_data_workers(tokenizer):
  copy = pickle.loads(pickle.dumps(tokenizer))
  assert np.array_equal(copy.encode(CAPTIONS), tokenizer.encode(CAPTIONS))
