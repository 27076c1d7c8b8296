"""Models chosen by name from the config (`config.model.name`)."""

import jax
from flax import nnx

from fdt_jax.models.clip import CLIP, VARIANTS, CLIPConfig, Encoded, clip_config
from fdt_jax.models.fdt import FDTConfig
from fdt_jax.models.text import TextConfig
from fdt_jax.models.vit import VisionConfig

MODELS = {'clip': (CLIP, clip_config)}


def model_config(model_cfg) -> CLIPConfig:
  """The model's dataclass config from the `config.model` section (a dict or ConfigDict)."""
  cfg = dict(model_cfg)
  cfg.pop('init_from', None)  # where the weights come from, not what the model is
  name = cfg.pop('name', 'clip')
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}: use one of {sorted(MODELS)}')
  fdt = dict(cfg.pop('fdt', None) or {})
  fdt_enabled = fdt.pop('enabled', bool(fdt))
  return MODELS[name][1](cfg.pop('variant'), fdt=fdt if fdt_enabled else None,
                         vision=_set(cfg.pop('vision', None)), text=_set(cfg.pop('text', None)),
                         **cfg)


def _set(overrides) -> dict:
  """The overrides that are set (None keeps the variant's value)."""
  return {k: v for k, v in dict(overrides or {}).items() if v is not None}


def create_model(model_cfg, seed: int = 0) -> nnx.Module:
  """Builds the model on the default device, without placing it on a mesh.

  The trainer builds the same model straight into its sharded layout instead
  (fdt_jax.parallel); this is for notebooks, tests and export.
  """
  cfg = model_cfg if isinstance(model_cfg, CLIPConfig) else model_config(model_cfg)
  with nnx.use_eager_sharding(False):
    return MODELS['clip'][0](cfg, rngs=nnx.Rngs(seed))


def count_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


__all__ = ['CLIP', 'CLIPConfig', 'Encoded', 'FDTConfig', 'MODELS', 'TextConfig', 'VARIANTS',
           'VisionConfig', 'clip_config', 'count_params', 'create_model', 'model_config']
