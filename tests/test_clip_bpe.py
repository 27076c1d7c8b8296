"""data.tokenizer=clip: CLIP's BPE ids exactly as open_clip gives them, so that weights imported
from open_clip keep their text tower's meaning; a run trains and restores with it."""

import importlib.util
import os
import pickle

import numpy as np
import pytest

from conftest import micro_config

if importlib.util.find_spec('open_clip') is None:  # not importorskip: open_clip after the guard below
  pytest.skip('data.tokenizer=clip needs open_clip (the torch extra)', allow_module_level=True)
from fdt_jax.data.clip_bpe import ClipBpeTokenizer, make_tokenizer, simple_tokenizer_class  # noqa: E402

simple_tokenizer_class()  # imports open_clip safely after tensorflow
import open_clip  # noqa: E402

TEXTS = ['A large red circle on the left.', 'two shapes: a yellow triangle above a purple diamond '
         'and a small blue square, then many more words than sixteen tokens hold', '']


def test_ids_are_open_clips_including_truncation_and_empty_texts():
  ours = ClipBpeTokenizer('clip', 16).encode(TEXTS)
  theirs = open_clip.tokenizer.tokenize(TEXTS, context_length=16).numpy()
  np.testing.assert_array_equal(ours, theirs)
  assert ours.dtype == np.int32 and ours.max() == 49407 == ClipBpeTokenizer('clip', 16).vocab_size - 1


def test_decode_and_pieces_follow_the_ids():
  tokenizer = ClipBpeTokenizer('clip', 16)
  tokens = tokenizer.encode(TEXTS[0])[0]
  assert tokenizer.decode(tokens) == 'a large red circle on the left .'
  assert tokenizer.pieces(tokens)[:3] == ['<start_of_text>', 'a</w>', 'large</w>']
  assert tokenizer.pieces(tokens)[-1] == '<end>' and len(tokenizer.pieces(tokens)) == np.count_nonzero(tokens)


def test_a_given_vocabulary_file_and_a_missing_one(tmp_path):
  path = os.path.join(os.path.dirname(open_clip.__file__), 'bpe_simple_vocab_16e6.txt.gz')
  np.testing.assert_array_equal(make_tokenizer(f'clip:{path}', 16).encode(TEXTS),
                                make_tokenizer('clip', 16).encode(TEXTS))
  with pytest.raises(FileNotFoundError, match='no CLIP BPE vocabulary at .*nowhere.gz'):
    make_tokenizer(f'clip:{tmp_path}/nowhere.gz', 16)
  with pytest.raises(FileNotFoundError, match='no sentencepiece model'):  # the other choice
    make_tokenizer(str(tmp_path / 'x.model'), 16)


def test_it_survives_pickling_for_data_workers():
  tokenizer = ClipBpeTokenizer('clip', 16)
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(tokenizer)).encode(TEXTS), tokenizer.encode(TEXTS))


def test_an_open_clip_text_tower_is_accepted_with_clip_bpe_and_an_export_refused(tmp_path):
  from fdt_jax.data.tokenizer import train_tokenizer
  from fdt_jax.export import export_open_clip, import_open_clip
  from fdt_jax.models import build_model, clip_config
  cfg = clip_config('micro', text=dict(vocab_size=64, context_length=16))
  model = build_model(cfg, seed=1)
  export_open_clip(model, cfg, str(tmp_path / 'plain'))
  import_open_clip(str(tmp_path / 'plain'), cfg, tokenizer='clip')
  sentencepiece = train_tokenizer(['a red circle.', 'a blue square.'] * 8, str(tmp_path / 'sp.model'), 30)
  export_open_clip(model, cfg, str(tmp_path / 'ours'), tokenizer_path=sentencepiece)
  with pytest.raises(ValueError, match='reads the sentencepiece model .* not clip'):
    import_open_clip(str(tmp_path / 'ours'), cfg, tokenizer='clip')


@pytest.mark.slow
def test_a_run_trains_and_restores_with_clip_bpe(shapes_dir, tmp_path):
  from fdt_jax.run import load_run
  from fdt_jax.train import loop
  config = micro_config(shapes_dir, total_steps=2, checkpoint_every_steps=2, log_every_steps=1)
  config.evals = {}
  config.data.tokenizer = 'clip'
  config.model.text.vocab_size = 49408
  loop.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'tokenizer.model').exists()
  run = load_run(str(tmp_path))
  assert isinstance(run.tokenizer, ClipBpeTokenizer) and run.step == 2
  np.testing.assert_array_equal(run.tokenizer.encode(TEXTS), ClipBpeTokenizer('clip', 40).encode(TEXTS))
