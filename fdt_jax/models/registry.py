"""Model families by name: `config.model.name` -> a Family -> its config and its model.

A family is one module in fdt_jax/models/ that registers itself (clip.py does,
below the model); a test can register a toy one the same way. Everything that
builds a model (the trainer, evaluate, export, notebooks) goes through
`build_model`, so a new family is a new file plus a config.
"""

import dataclasses
from typing import Any, Callable

from flax import nnx

# Keys of `config.model` that every family has and that are not the model's shape:
# where the weights come from and how fast the EMA teacher follows.
RUN_KEYS = ('name', 'init_from', 'init_text_tower', 'ema_decay')


@dataclasses.dataclass(frozen=True)
class Family:
  """What the trainer, the data and the objectives need to know about a kind of model.

  make_config:   the `config.model` section (a plain dict, without RUN_KEYS) -> a frozen
                 dataclass with at least `image_size`, `context_length` and `vocab_size`
                 (what the data pipeline must produce)
  make_model:    (that dataclass, nnx.Rngs) -> the nnx.Module; `__call__(batch, *, teacher=False)`
                 returns a dict with at least the keys in `outputs`
  batch_fields:  what the data must provide (before `prepare_batch`), checked up front
  outputs:       the keys `__call__` returns (objectives' `needs` are checked against them)
  teacher:       True: the train state keeps an EMA copy of the parameters; the step calls
                 the model with them and `teacher=True` and hands the result to the
                 objectives as outputs['teacher']
  prepare_batch: (batch, key, model_cfg) -> batch, inside the jitted step, with a key
                 folded from (seed, step): masks and other per-step randomness
  batch_metrics: (outputs, batch) -> {name: scalar}, logged at every step: statistics of
                 the whole global batch (with gradient accumulation the microbatches'
                 outputs are merged first, so a count over the batch does not depend on
                 accumulation_steps)
  """
  name: str
  make_config: Callable[[dict], Any]
  make_model: Callable[[Any, nnx.Rngs], nnx.Module]
  batch_fields: tuple[str, ...] = ('images', 'tokens')
  outputs: tuple[str, ...] = ()
  teacher: bool = False
  prepare_batch: Callable | None = None
  batch_metrics: Callable | None = None
  config_type: type | None = None  # make_config's return type: lets build_model take a built config


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
  """Adds (or replaces, e.g. in a test) the family under its name."""
  FAMILIES[family.name] = family


def get_family(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f'unknown model family {name!r} (config.model.name): use one of '
                     f'{", ".join(sorted(FAMILIES))}')
  return FAMILIES[name]


def _is_section(model) -> bool:
  return isinstance(model, dict) or hasattr(model, 'to_dict')  # a dict or a ConfigDict


def family_of(model) -> Family:
  """The family of a `config.model` section (dict or ConfigDict) or of a built config."""
  if _is_section(model):
    return get_family(model.get('name', 'clip'))
  for family in FAMILIES.values():
    if family.config_type is not None and isinstance(model, family.config_type):
      return family
  raise ValueError(f'no registered family makes a {type(model).__name__}: give the '
                   'config.model section instead')


def model_config(model) -> Any:
  """The family's dataclass config from the `config.model` section (or a built one, as is)."""
  if not _is_section(model):
    return model
  section = model.to_dict() if hasattr(model, 'to_dict') else dict(model)
  family = get_family(section.get('name', 'clip'))
  return family.make_config({k: v for k, v in section.items() if k not in RUN_KEYS})


def build_model(model, seed: int = 0) -> nnx.Module:
  """THE constructor: the `config.model` section (or a family's built config) -> the model,
  on the default device, without placing it on a mesh (under jit with a mesh, the
  parameters are created directly in their sharded layout)."""
  family = family_of(model)
  with nnx.use_eager_sharding(False):
    return family.make_model(model_config(model), nnx.Rngs(seed))
