"""config.model.init_from keeps the text tower's meaning: a text tower trained with another
vocabulary than the run's tokenizer is refused in one line, and init_text_tower=False imports
the image tower alone."""

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import load_config
from fdt_jax.data.tokenizer import train_tokenizer
from fdt_jax.export import export_open_clip, import_open_clip
from fdt_jax.models import build_model, clip_config, model_config

CAPTIONS = ['a large red circle on the left.', 'a cyan cross.', 'a small blue square.'] * 8
OTHER_CAPTIONS = ['the quick brown fox jumps over the lazy dog.', 'colourless green ideas.'] * 8
CFG = clip_config('micro', fdt=dict(num_tokens=32, dim=16), text=dict(vocab_size=64, context_length=16))


def flat(params):
  return {jax.tree_util.keystr(path, simple=True, separator='.'): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp('init_from')
  tokenizer = train_tokenizer(CAPTIONS, str(root / 'captions.model'), 64)
  other = train_tokenizer(OTHER_CAPTIONS, str(root / 'other.model'), 40)
  model = build_model(CFG, seed=5)
  export_open_clip(model, CFG, str(root / 'ours'), tokenizer_path=tokenizer)
  export_open_clip(model, CFG, str(root / 'plain'))  # like any open_clip checkpoint: no tokenizer
  return root, tokenizer, other, flat(nnx.state(model, nnx.Param))


def test_the_tokenizer_the_tower_was_trained_with_is_accepted(exported):
  root, tokenizer, _, trained = exported
  imported = flat(import_open_clip(str(root / 'ours'), CFG, tokenizer=tokenizer))
  assert imported.keys() == trained.keys()
  for name in trained:
    np.testing.assert_array_equal(imported[name], trained[name], err_msg=name)


def test_another_sentencepiece_vocabulary_is_refused_in_one_line(exported):
  root, _, other, _ = exported
  with pytest.raises(ValueError) as error:
    import_open_clip(str(root / 'ours'), CFG, tokenizer=other)
  message = str(error.value)
  assert '\n' not in message and 'would mean other words' in message
  assert f'--config.data.tokenizer={root / "ours" / "tokenizer.model"}' in message
  assert '--config.model.init_text_tower=False' in message


def test_an_open_clip_checkpoint_text_tower_is_refused_for_a_sentencepiece_run(exported):
  root, tokenizer, _, _ = exported
  with pytest.raises(ValueError, match="reads CLIP's BPE vocabulary .*--config.model.init_text_tower=False"):
    import_open_clip(str(root / 'plain'), CFG, tokenizer=tokenizer)


def test_init_text_tower_false_imports_the_image_tower_only(exported):
  root, tokenizer, _, trained = exported
  imported = flat(import_open_clip(str(root / 'plain'), CFG, seed=9, tokenizer=tokenizer,
                                   text_tower=False))
  fresh = flat(nnx.state(build_model(CFG, seed=9), nnx.Param))
  for name in trained:
    expected = fresh[name] if name.startswith(('text.', 'fdt.')) else trained[name]
    np.testing.assert_array_equal(imported[name], expected, err_msg=name)
  assert any(not np.array_equal(fresh[n], trained[n]) for n in trained if n.startswith('text.'))


def test_init_text_tower_is_a_config_key_not_a_model_setting():
  config = load_config('configs/tiny.py')
  assert config.model.init_text_tower is True
  config.model.init_text_tower = False
  assert model_config(config.model) == model_config(load_config('configs/tiny.py').model)
