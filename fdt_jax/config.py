"""Every key a config can set, with its default; configs/*.py start from here.

A config file changes what its recipe needs and documents the command that runs it.
Every value can be overridden from the command line: --config.batch_size=64.
"""

import ml_collections

from fdt_jax import parallel


def _overrides(**types) -> ml_collections.ConfigDict:
  """Typed keys that default to None, so each can be set from the command line."""
  return ml_collections.ConfigDict(
      {k: ml_collections.FieldReference(None, field_type=t) for k, t in types.items()})


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 64  # global, over all hosts and devices
  c.accumulation_steps = 1  # microbatches per step; negatives still span the whole batch
  c.log_every_steps = 50
  c.eval_every_steps = 0  # 0: evaluate at the end only; config.evals.NAME.every_steps overrides
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  # Objectives by name and weight (fdt_jax/objectives); the loss is the weighted sum.
  c.objectives = ml_collections.ConfigDict({'infonce': 1.0})

  c.model = ml_collections.ConfigDict()
  c.model.name = 'clip'  # the model family (fdt_jax/models); the keys below are clip's
  c.model.ema_decay = 0.995  # families with an EMA teacher: teacher = d * teacher + (1 - d) * params
  c.model.variant = 'ViT-B-32'  # see fdt_jax.models.VARIANTS
  # Overrides of the variant's towers; None keeps the variant's value.
  c.model.vision = _overrides(image_size=int, patch_size=int, width=int, layers=int, heads=int,
                              mlp_ratio=float)
  c.model.text = _overrides(context_length=int, vocab_size=int, width=int, layers=int, heads=int,
                            mlp_ratio=float)
  # max_pool: how max pooling is computed, 'lean' (chunked, argmax backward) or 'plain'
  # (einsum then max); the same values and gradients (models/fdt.py, ops/max_pool.py).
  c.model.fdt = ml_collections.ConfigDict(dict(
      enabled=True, num_tokens=16384, dim=512, temperature=1000.0, init_scale=1.0, pooling='max',
      normalizer='sparsemax', max_pool='lean'))
  c.model.quick_gelu = False
  c.model.dtype = 'float32'  # compute dtype; parameters stay float32
  c.model.remat = False
  # What a recomputed block keeps for the backward: 'nothing_saveable' (the whole block is
  # recomputed), 'dots_with_no_batch_dims_saveable', 'dots_saveable' (models/transformer.py).
  c.model.remat_policy = 'nothing_saveable'
  c.model.init_from = ''  # an open_clip state_dict (.safetensors / .pt) to start the towers from
  c.model.init_text_tower = True  # False: init_from gives the image tower only

  c.data = ml_collections.ConfigDict()
  c.data.name = 'shapes'  # 'shapes' (embedded), or a TFDS name such as 'coco_captions'
  c.data.data_dir = ''  # TFDS data dir; '' = TFDS's default (~/tensorflow_datasets)
  c.data.mixture = ()  # ((name, weight), ...): mix several training sources instead of `name`
  c.data.tokenizer = ''  # a sentencepiece .model; '' = the one prepared with the shapes data
  c.data.augmentation = 'none'  # or 'mocov2' (the authors')
  c.data.num_workers = 0  # grain worker processes
  c.data.concepts = False  # MVPTR's phrases and tags in each batch: shapes, or dir:PATH converted with --concepts
  c.data.shapes = ml_collections.ConfigDict(dict(
      seed=0, num_train=20000, num_validation=1000, num_test=1000, num_compositional=1000,
      vocab_size=256))

  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=1e-3, warmup_init_lr=1e-4, warmup_steps=100, end_lr=0.0,
      b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.1, decay_fdt_tokens=True, grad_clip_norm=0.0,
      frozen=()))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = [list(rule) for rule in parallel.DEFAULT_RULES]

  c.eval_batch_size = 256
  c.evals = ml_collections.ConfigDict()  # name -> dict(type=..., ...); see fdt_jax.eval
  return c


# (key, test, what is allowed): every run's settings are checked before anything is written.
_AT_LEAST_ONE = (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1')
_CHECKS = (
    ('total_steps',) + _AT_LEAST_ONE,
    ('batch_size',) + _AT_LEAST_ONE,
    ('accumulation_steps',) + _AT_LEAST_ONE,
    ('log_every_steps',) + _AT_LEAST_ONE,
    ('checkpoint_every_steps',) + _AT_LEAST_ONE,
    ('keep_checkpoints',) + _AT_LEAST_ONE,  # 0 would delete the final checkpoint too
    ('eval_batch_size',) + _AT_LEAST_ONE,
    ('eval_every_steps', lambda v: isinstance(v, int) and v >= 0,
     'an integer >= 0 (0: at the end only)'),
    ('optimizer.learning_rate', lambda v: v >= 0, 'a number >= 0'),
    ('optimizer.warmup_steps', lambda v: isinstance(v, int) and v >= 0, 'an integer >= 0'),
    ('optimizer.weight_decay', lambda v: v >= 0, 'a number >= 0'),
    ('optimizer.grad_clip_norm', lambda v: v >= 0, 'a number >= 0 (0: no clipping)'),
    ('model.ema_decay', lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    ('model.fdt.num_tokens',) + _AT_LEAST_ONE,
    ('model.fdt.temperature', lambda v: v > 0, 'a number > 0'),
)


def check_config(config) -> None:
  """Raises ValueError, in one line naming the key, its value and what is allowed, for a
  setting no run can work with; nothing has been written when it does."""
  for key, ok, allowed in _CHECKS:
    value = config
    for part in key.split('.'):
      value = value.get(part) if hasattr(value, 'get') else None
    if value is not None and not ok(value):
      raise ValueError(f'config.{key} = {value!r}: it must be {allowed} '
                       f'(--config.{key}=...)')
  for name, section in config.get('evals', {}).items():
    every = section.get('every_steps')
    if every is not None and (not isinstance(every, int) or every < 0):
      raise ValueError(f'config.evals.{name}.every_steps = {every!r}: it must be an integer >= 0')
