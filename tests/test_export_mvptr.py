"""An 'mvptr' model exported: PyTorch (open_clip's ViT and text tower, torch_mvptr's head)
computes what JAX computes: the VSC embeddings, ITM, concept recovery and grounding.

Needs the export extra (requirements-export.txt); skipped without it.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds the model in JAX and PyTorch
torch = pytest.importorskip('torch')
torch_mvptr = pytest.importorskip('fdt_jax.export.torch_mvptr')

import jax.numpy as jnp  # noqa: E402

from conftest import load_config  # noqa: E402
from fdt_jax.export import export_open_clip  # noqa: E402
from fdt_jax.models import build_model, model_config  # noqa: E402
from test_export import random_batch  # noqa: E402


@pytest.mark.parametrize('quick_gelu', [False, True])
def test_pytorch_gives_the_jax_embeddings_itm_concepts_and_grounding(tmp_path, quick_gelu):
  section = load_config('configs/tiny.py', 'mvptr').model
  # The ViT is wider than the text side, so the patch projection's layout is tested.
  section.update(variant='micro', visual_layers=2, fusion_layers=2, quick_gelu=quick_gelu,
                 vision=dict(image_size=32, width=48, heads=3))
  section.text.update(context_length=16, vocab_size=64)
  cfg = model_config(section)
  model = build_model(section, seed=3)
  export_open_clip(model, cfg, str(tmp_path))
  loaded = torch_mvptr.load(str(tmp_path))

  rng = np.random.default_rng(2)
  images, tokens = random_batch(cfg, batch=4)
  assert (tokens == 0).any()  # some captions are padded: the padding mask matters
  tags = rng.integers(2, cfg.num_concepts, (4, 6)) * (rng.random((4, 6)) < 0.7)  # 0: no tag
  tag_mask = (rng.random((4, 6)) < 0.3) & (tags > 0)
  phrases = rng.integers(2, cfg.num_concepts, (4, cfg.max_phrases)) * (rng.random((4, cfg.max_phrases)) < 0.7)
  j = lambda x: jnp.asarray(x)
  expected = {
      'image': model.encode_image(j(images)).embedding, 'text': model.encode_text(j(tokens)).embedding,
      'itm': model.match_logits(model.text_features(j(tokens)), j(tokens), model.image_features(j(images))),
      'concepts': model.recover_concepts(j(images), j(tags), j(tag_mask)),
      'grounding': model.ground(j(images), j(tokens), j(phrases))}
  t = lambda x: torch.from_numpy(np.asarray(x))
  images_nchw, tokens_torch = t(images.transpose(0, 3, 1, 2).copy()), t(tokens).long()
  with torch.no_grad():
    got = {'image': loaded.encode_image(images_nchw).embedding,
           'text': loaded.encode_text(tokens_torch).embedding,
           'itm': loaded.match_logits(loaded.text_features(tokens_torch), tokens_torch,
                                      loaded.image_features(images_nchw)),
           'concepts': loaded.recover_concepts(images_nchw, t(tags).long(), t(tag_mask)),
           'grounding': loaded.ground(images_nchw, tokens_torch, t(phrases).long())}
  for key, value in expected.items():
    np.testing.assert_allclose(got[key].numpy(), np.asarray(value), atol=2e-4, rtol=0, err_msg=key)


def test_an_mvptr_with_the_fdt_head_is_refused_before_anything_is_written(tmp_path):
  section = load_config('configs/tiny.py', 'mvptr_fdt').model
  section.update(variant='micro', visual_layers=1, fusion_layers=1)
  section.text.update(context_length=16, vocab_size=64)
  section.fdt.update(num_tokens=8, dim=8)
  with pytest.raises(ValueError, match='FDT head .* no PyTorch export yet'):
    export_open_clip(build_model(section, seed=0), model_config(section), str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()
