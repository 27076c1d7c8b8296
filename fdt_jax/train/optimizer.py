"""optax: AdamW with warmup + cosine, CLIP's weight-decay exclusions, clipping, frozen parts."""

import jax
import optax


def learning_rate_schedule(cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from `warmup_init_lr` to `learning_rate`, then cosine to `end_lr`.

  The authors warm up from 1e-4 to 1e-3 over 2500 steps and decay to 0.
  """
  return optax.warmup_cosine_decay_schedule(
      init_value=cfg.warmup_init_lr, peak_value=cfg.learning_rate,
      warmup_steps=cfg.warmup_steps, decay_steps=max(total_steps, cfg.warmup_steps + 1),
      end_value=cfg.end_lr)


def path_name(path) -> str:
  """'visual.transformer.resblocks.0.attn.in_proj.kernel' for a key path into an nnx.State."""
  keys = (k for k in path if not isinstance(k, jax.tree_util.GetAttrKey))  # skip Variable.value
  return '.'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in keys)


def weight_decay_mask(params, decay_fdt_tokens: bool):
  """True where weight decay applies: not on LayerNorm, biases or the logit scale
  (as in CLIP and the authors' code), and on the FDT table only if asked."""
  def decays(path, _):
    name = path_name(path)
    leaf = name.rsplit('.', 1)[-1]
    if leaf in ('bias', 'scale') or name == 'logit_scale':
      return False
    if name == 'fdt.fdt_tokens':
      return decay_fdt_tokens
    return True
  return jax.tree_util.tree_map_with_path(decays, params)


def frozen_labels(params, frozen_prefixes):
  """'frozen' for parameters under any of the given dotted prefixes, else 'trained'."""
  def label(path, _):
    name = path_name(path)
    return 'frozen' if any(name == p or name.startswith(p + '.') for p in frozen_prefixes) else 'trained'
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its learning-rate schedule; masks are computed from the params tree."""
  if cfg.name != 'adamw':
    raise ValueError(f"unknown optimizer {cfg.name!r}: only 'adamw' is available")
  schedule = learning_rate_schedule(cfg, total_steps)
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  chain.append(optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
      mask=lambda p: weight_decay_mask(p, cfg.decay_fdt_tokens)))
  tx = optax.chain(*chain)
  frozen = tuple(cfg.frozen)
  if frozen:
    tx = optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()},
                               lambda p: frozen_labels(p, frozen))
  return tx, schedule
