"""Model families chosen by name from the config (`config.model.name`).

    family = get_family(config.model.name)
    model = build_model(config.model, seed)     # the one constructor
    cfg = model_config(config.model)            # the family's dataclass config

Families register themselves when their module is imported; the built-in ones are
imported here. See registry.py for what a family declares.
"""

import jax

from fdt_jax.models.registry import (FAMILIES, RUN_KEYS, Family, build_model, family_of,
                                     get_family, model_config, register_family)
from fdt_jax.models.clip import CLIP, VARIANTS, CLIPConfig, Encoded, clip_config  # registers 'clip'
from fdt_jax.models.mamo import MAMO, MAMOConfig  # registers 'mamo'
from fdt_jax.models.mvptr import MVPTR, MVPTRConfig  # registers 'mvptr'
from fdt_jax.models.fdt import FDTConfig
from fdt_jax.models.text import TextConfig
from fdt_jax.models.vit import VisionConfig


def count_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


__all__ = ['CLIP', 'CLIPConfig', 'Encoded', 'FAMILIES', 'FDTConfig', 'Family', 'MAMO', 'MAMOConfig', 'MVPTR', 'MVPTRConfig', 'RUN_KEYS',
           'TextConfig', 'VARIANTS', 'VisionConfig', 'build_model', 'clip_config', 'count_params',
           'family_of', 'get_family', 'model_config', 'register_family']
