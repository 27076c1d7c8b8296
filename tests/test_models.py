"""The towers: open_clip's shapes and parameter counts, and a model that can learn."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fdt_jax.models import build_model, clip_config, count_params
from fdt_jax.objectives import infonce


def abstract_params(cfg):
  return nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)


def test_vit_b32_fdt_parameter_counts_match_the_authors_model():
  params = abstract_params(clip_config('ViT-B-32', fdt={}))
  counts = {
      'image tower': count_params(params['visual']),
      'text tower': count_params(params['text']),
      'FDT table': count_params(params['fdt']['fdt_tokens']),
      'image query network': count_params(params['fdt']['query_image']),
      'text query network': count_params(params['fdt']['query_text']),
  }
  # The authors' ViT-B/32 FDT model with the CLIP vocabulary (49408), in millions.
  authors = {'image tower': 87.85, 'text tower': 63.43, 'FDT table': 8.39,
             'image query network': 0.66, 'text query network': 0.53}
  for name, millions in authors.items():
    assert abs(counts[name] / 1e6 - millions) <= 0.005 * millions, (name, counts[name])


@pytest.mark.parametrize('variant, millions', [
    # open_clip's published totals for its CLIP models (its model profile table).
    ('ViT-B-32', 151.28), ('ViT-B-16', 149.62), ('ViT-L-14', 427.62)])
def test_clip_variants_have_open_clip_sizes(variant, millions):
  assert count_params(abstract_params(clip_config(variant))) / 1e6 == pytest.approx(millions, abs=0.01)


def test_parameter_names_follow_open_clip():
  params = abstract_params(clip_config('micro'))
  names = {'.'.join(map(str, path)) for path, _ in nnx.to_flat_state(params)}
  for name in ['visual.conv1.kernel', 'visual.class_embedding', 'visual.positional_embedding',
               'visual.ln_pre.scale', 'visual.transformer.resblocks.0.attn.in_proj.kernel',
               'visual.transformer.resblocks.0.mlp.c_fc.kernel', 'visual.ln_post.bias', 'visual.proj',
               'text.token_embedding.embedding', 'text.positional_embedding',
               'text.transformer.resblocks.0.attn.out_proj.kernel', 'text.ln_final.scale',
               'text.text_projection', 'logit_scale']:
    assert name in names, name


def micro_batch(model_cfg, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  size, length, vocab = model_cfg.vision.image_size, model_cfg.text.context_length, model_cfg.text.vocab_size
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  lengths = rng.integers(2, length, size=batch)
  tokens = rng.integers(1, vocab - 1, size=(batch, length))
  tokens[np.arange(batch), lengths - 1] = vocab - 1  # end-of-text
  tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0  # padding
  return jnp.asarray(images), jnp.asarray(tokens, jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize('fdt', [None, dict(num_tokens=128, dim=32, temperature=10.0)],
                         ids=['clip', 'fdt'])
def test_small_model_overfits_a_fixed_batch(fdt):
  cfg = clip_config('micro', fdt=fdt)
  model = build_model(cfg, seed=1)
  images, tokens = micro_batch(cfg)
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      out = nnx.merge(graphdef, p)({'images': images, 'tokens': tokens})
      return infonce(out['image_embedding'], out['text_embedding'], out['logit_scale'])[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(300):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[0] > 1.5  # about log(8) = 2.08 at the start
  assert losses[-1] < 0.05, losses[::25]


@pytest.mark.slow
def test_bfloat16_compute_stays_close_to_float32():
  cfg = clip_config('micro', fdt=dict(num_tokens=64, dim=16))
  images, tokens = micro_batch(cfg, batch=4)
  full = build_model(cfg, seed=2)({'images': images, 'tokens': tokens})
  half_cfg = clip_config('micro', fdt=dict(num_tokens=64, dim=16), dtype='bfloat16')
  half = build_model(half_cfg, seed=2)({'images': images, 'tokens': tokens})
  for key in ['image_embedding', 'text_embedding']:
    assert half[key].dtype == jnp.float32  # embeddings are normalised in float32
    np.testing.assert_allclose(half[key], full[key], atol=0.05)
