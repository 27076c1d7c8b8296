"""Export to open_clip and import back: PyTorch computes the embeddings JAX computes,
open_clip checkpoints go through JAX unchanged, and mismatched checkpoints are refused.

Needs the export extra (requirements-export.txt); skipped without it.
"""

import argparse
import dataclasses
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a ViT-B/32-shaped model in JAX and PyTorch
torch = pytest.importorskip('torch')
pytest.importorskip('safetensors')
# Imports open_clip too, guarded against tensorflow's crash with triton.
torch_fdt = pytest.importorskip('fdt_jax.export.torch_fdt')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import open_clip  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from fdt_jax.data.tokenizer import train_tokenizer  # noqa: E402
from fdt_jax.export import export_open_clip, import_open_clip, parameter_table, read_config  # noqa: E402
from fdt_jax.export.open_clip import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, open_clip_config  # noqa: E402
from fdt_jax.formats.open_clip import param_shapes, torch_shape  # noqa: E402
from fdt_jax.models import build_model, clip_config  # noqa: E402
from fdt_jax.models.fdt import l2_normalize  # noqa: E402

CAPTIONS = ['a large red circle on the left.', 'a cyan cross.',
            'two shapes: a yellow triangle above a purple diamond and a small blue square.'] * 8

# name -> (config, vocabulary of a sentencepiece model trained on CAPTIONS, or None)
MODELS = {
    'micro-fdt-max-sparsemax': (clip_config(
        'micro', fdt=dict(num_tokens=128, dim=16, temperature=2.0),
        text=dict(vocab_size=64, context_length=16)), 64),
    'micro-fdt-mean-softmax-quickgelu': (clip_config(
        'micro', fdt=dict(num_tokens=64, dim=16, temperature=0.1, pooling='mean', normalizer='softmax'),
        quick_gelu=True), None),
    'micro-fdt-sum-sigmoid': (clip_config(
        'micro', fdt=dict(num_tokens=64, dim=16, pooling='sum', normalizer='sigmoid')), None),
    'micro-clip': (clip_config('micro'), None),
    # ViT-B/32's widths, heads, vocabulary and FDT head (16384 x 512, T = 1000) with two
    # layers per tower instead of twelve, to keep the test short.
    'ViT-B-32-fdt-2-layers': (clip_config(
        'ViT-B-32', fdt={}, vision=dict(layers=2), text=dict(layers=2)), None),
}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('open_clip tried to download something')
  for name in ('download_pretrained', 'download_pretrained_from_hf'):
    monkeypatch.setattr(open_clip.factory, name, refuse)


def random_batch(cfg, batch=3, seed=0):
  """Images [batch, size, size, 3] and tokens ending in end-of-text = vocab - 1, then 0s."""
  rng = np.random.default_rng(seed)
  size, length, vocab = cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  lengths = rng.integers(2, length + 1, size=batch)
  tokens = rng.integers(1, vocab - 1, size=(batch, length))
  tokens[np.arange(batch), lengths - 1] = vocab - 1
  tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
  return images, tokens.astype(np.int32)


@nnx.jit
def jax_embeddings(model, images, tokens):
  image, text = model.encode_image(images), model.encode_text(tokens)
  out = {'clip_image': l2_normalize(model.visual(images)[0]),
         'clip_text': l2_normalize(model.text(tokens)[0]),
         'image': image.embedding, 'text': text.embedding}
  if model.fdt is not None:
    out |= {'image_fdt_weights': image.fdt_weights, 'text_fdt_weights': text.fdt_weights}
  return out


@pytest.fixture(scope='module', params=list(MODELS))
def exported(request, tmp_path_factory):
  """(config, JAX model, export directory, whether a tokenizer was exported)."""
  cfg, vocab = MODELS[request.param]
  model = build_model(cfg, seed=1)
  root = tmp_path_factory.mktemp(request.param)
  tokenizer = vocab and train_tokenizer(CAPTIONS, str(root / 'captions.model'), vocab)
  export_open_clip(model, cfg, str(root / 'export'), tokenizer_path=tokenizer)
  return cfg, model, str(root / 'export'), tokenizer is not None


def test_the_table_names_every_parameter_of_open_clip_and_of_the_model():
  cfg = MODELS['micro-fdt-max-sparsemax'][0]
  table, jax_shapes = parameter_table(cfg), param_shapes(cfg)
  towers = open_clip.CLIP(**open_clip_config(cfg)['model_cfg'])
  head = torch_fdt.FDTHead(**dataclasses.asdict(cfg.fdt), image_width=cfg.vision.width,
                           text_width=cfg.text.width)
  assert {e.jax for e in table} == set(jax_shapes)
  for module, in_fdt_head in [(towers, False), (head, True)]:
    assert ({e.torch: torch_shape(e, jax_shapes[e.jax]) for e in table if e.in_fdt_head == in_fdt_head}
            == {name: tuple(t.shape) for name, t in module.state_dict().items()})


def test_pytorch_gives_the_jax_embeddings(exported):
  cfg, model, directory, has_tokenizer = exported
  images, tokens = random_batch(cfg)
  loaded = torch_fdt.load(directory)  # open_clip.create_model('local-dir:...') and the FDT head
  if has_tokenizer:  # real captions, tokenised in PyTorch with the exported sentencepiece model
    tokens = torch_fdt.load_tokenizer(directory)(CAPTIONS[:3]).numpy().astype(np.int32)
    assert (tokens.argmax(-1) < cfg.text.context_length - 1).any()  # some are padded
  expected = jax_embeddings(model, jnp.asarray(images), jnp.asarray(tokens))

  images_nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  tokens_torch = torch.from_numpy(tokens).long()
  with torch.no_grad():
    image, text = loaded.encode_image(images_nchw), loaded.encode_text(tokens_torch)
    got = {'clip_image': loaded.clip.encode_image(images_nchw, normalize=True),
           'clip_text': loaded.clip.encode_text(tokens_torch, normalize=True),
           'image': image.embedding, 'text': text.embedding}
  if cfg.fdt is not None:
    got |= {'image_fdt_weights': image.fdt_weights, 'text_fdt_weights': text.fdt_weights}

  assert set(got) == set(expected)
  for key in expected:
    np.testing.assert_allclose(got[key].numpy(), expected[key], atol=1e-4, rtol=0, err_msg=key)
  if cfg.fdt is not None and cfg.fdt.normalizer == 'sparsemax':  # sparse: the supports agree
    nonzero = (got['image_fdt_weights'] > 0).sum(-1)
    assert ((nonzero > 0) & (nonzero < cfg.fdt.num_tokens)).all(), nonzero


def test_an_exported_directory_imports_back_to_the_same_parameters(exported):
  cfg, model, directory, _ = exported
  assert read_config(directory) == cfg
  params = import_open_clip(directory, cfg, seed=99)  # the FDT head from fdt_head.safetensors
  original = nnx.state(model, nnx.Param)
  assert jax.tree.structure(params) == jax.tree.structure(original)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(original)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def open_clip_checkpoint(tmp_path_factory):
  """open_clip's own model for our config, random weights: (config, state_dict, directory)."""
  cfg = clip_config('micro', fdt=dict(num_tokens=32, dim=16))
  directory = tmp_path_factory.mktemp('open_clip')
  with open(directory / OPEN_CLIP_CONFIG, 'w') as f:
    json.dump(open_clip_config(cfg), f)
  torch.manual_seed(0)
  reference = open_clip.create_model(f'local-dir:{directory}', load_weights=False)  # no weights yet
  with torch.no_grad():
    for parameter in reference.parameters():  # no ones or zeros left that a bug could keep
      parameter.normal_()
  state_dict = reference.state_dict()
  save_file(state_dict, str(directory / 'random.safetensors'))
  return cfg, state_dict, directory


def test_an_open_clip_checkpoint_goes_through_jax_unchanged(open_clip_checkpoint, tmp_path):
  cfg, state_dict, directory = open_clip_checkpoint
  params = import_open_clip(str(directory / 'random.safetensors'), cfg, seed=5)
  fresh_head = nnx.state(build_model(cfg, seed=5), nnx.Param)['fdt']  # none in the checkpoint
  for a, b in zip(jax.tree.leaves(params['fdt']), jax.tree.leaves(fresh_head)):
    np.testing.assert_array_equal(a, b)

  export_open_clip(params, cfg, str(tmp_path))
  exported = load_file(str(tmp_path / OPEN_CLIP_WEIGHTS))
  assert exported.keys() == state_dict.keys()
  for name, tensor in state_dict.items():
    assert torch.equal(exported[name], tensor), name


def test_a_pt_state_dict_loads_with_weights_only(open_clip_checkpoint, tmp_path):
  cfg, state_dict, directory = open_clip_checkpoint
  expected = import_open_clip(str(directory / 'random.safetensors'), cfg)
  # Like open_clip's training checkpoints: wrapped, saved from DistributedDataParallel,
  # with the causal mask buffer of older versions, which only PyTorch has.
  wrapped = {f'module.{name}': tensor for name, tensor in state_dict.items()}
  wrapped['module.attn_mask'] = torch.ones(16, 16)
  torch.save({'epoch': 3, 'state_dict': wrapped}, tmp_path / 'epoch_3.pt')
  params = import_open_clip(str(tmp_path / 'epoch_3.pt'), cfg)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)

  torch.save({'state_dict': state_dict, 'args': argparse.Namespace(lr=1e-3)}, tmp_path / 'pickled.pt')
  with pytest.raises(ValueError, match=r'not a plain state_dict that torch.load\(weights_only=True\)'):
    import_open_clip(str(tmp_path / 'pickled.pt'), cfg)


@pytest.mark.parametrize('change, message', [
    (lambda sd: sd.pop('visual.transformer.resblocks.0.attn.in_proj_weight'),
     r"tensor 'visual.transformer.resblocks.0.attn.in_proj_weight' is missing "
     r"\(expected shape \(96, 32\)\)"),
    (lambda sd: sd.update({'token_embedding.weight': torch.zeros(65, 32)}),
     r"tensor 'token_embedding.weight' has shape \(65, 32\), expected \(64, 32\)"),
    (lambda sd: sd.update({'visual.transformer.resblocks.1.ln_1.weight': torch.ones(32)}),
     r"unexpected tensor 'visual.transformer.resblocks.1.ln_1.weight' \(1 in all\)"),
], ids=['missing', 'mis-shaped', 'unexpected'])
def test_a_mismatched_checkpoint_is_refused_naming_the_tensor(open_clip_checkpoint, tmp_path,
                                                               change, message):
  cfg, state_dict, _ = open_clip_checkpoint
  state_dict = dict(state_dict)
  change(state_dict)
  save_file(state_dict, str(tmp_path / 'bad.safetensors'))
  with pytest.raises(ValueError, match=message) as error:
    import_open_clip(str(tmp_path / 'bad.safetensors'), cfg)
  assert '\n' not in str(error.value)
