"""A 'mamo' model exported: PyTorch (open_clip's towers and torch_mamo's fusion encoder)
computes what JAX computes, the ITM and masked-word logits included.

Needs the export extra (requirements-export.txt); skipped without it.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds the model in JAX and PyTorch
torch = pytest.importorskip('torch')
torch_mamo = pytest.importorskip('fdt_jax.export.torch_mamo')

import jax.numpy as jnp  # noqa: E402
import open_clip  # noqa: E402

from conftest import load_config  # noqa: E402
from fdt_jax.export import export_open_clip  # noqa: E402
from fdt_jax.formats.exported import MAMO_WEIGHTS  # noqa: E402
from fdt_jax.models import build_model, model_config  # noqa: E402
from test_export import random_batch  # noqa: E402


@pytest.mark.parametrize('quick_gelu', [False, True])
def test_pytorch_gives_the_jax_embeddings_itm_and_masked_word_logits(tmp_path, quick_gelu):
  section = load_config('configs/tiny.py', 'mamo').model
  # Image and text widths differ, so a transposed cross-attention layout cannot pass.
  section.update(variant='micro', fusion_layers=2, quick_gelu=quick_gelu,
                 vision=dict(image_size=32, width=48, heads=3))
  section.text.update(context_length=16, vocab_size=64)
  cfg = model_config(section)
  model = build_model(section, seed=3)
  export_open_clip(model, cfg, str(tmp_path))
  loaded = torch_mamo.load(str(tmp_path))

  images, tokens = random_batch(cfg, batch=4)
  word_mask = np.random.default_rng(1).random(tokens.shape) < 0.3
  assert (tokens == 0).any()  # some captions are padded: the padding mask matters
  itm, mlm = model.match_and_fill(jnp.asarray(images), jnp.asarray(tokens), jnp.asarray(word_mask))
  expected = {'image': model.encode_image(jnp.asarray(images)).embedding,
              'text': model.encode_text(jnp.asarray(tokens)).embedding, 'itm': itm, 'mlm': mlm,
              'image_stream': model.fuse_image(model.image_features(jnp.asarray(images)),
                                               model.text_features(jnp.asarray(tokens)),
                                               jnp.asarray(tokens))}
  images_nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  tokens_torch = torch.from_numpy(tokens).long()
  with torch.no_grad():
    got = {'image': loaded.encode_image(images_nchw).embedding,
           'text': loaded.encode_text(tokens_torch).embedding,
           'itm': loaded.match_logits(loaded.text_features(tokens_torch), tokens_torch,
                                      loaded.image_features(images_nchw)),
           'mlm': loaded.fill(images_nchw, tokens_torch, torch.from_numpy(word_mask)),
           'image_stream': loaded.fusion.fuse_image(loaded.image_features(images_nchw),
                                                    loaded.text_features(tokens_torch),
                                                    torch_mamo.valid_positions(tokens_torch))}
    plain = open_clip.create_model(f'local-dir:{tmp_path}')  # open_clip alone: the image tower
    plain_image = plain.encode_image(images_nchw, normalize=True)
  for key, value in expected.items():
    np.testing.assert_allclose(got[key].numpy(), np.asarray(value), atol=2e-4, rtol=0, err_msg=key)
  np.testing.assert_allclose(plain_image.numpy(), np.asarray(expected['image']), atol=1e-4)
  assert (tmp_path / MAMO_WEIGHTS).exists()
