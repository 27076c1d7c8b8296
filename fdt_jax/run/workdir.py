"""What a training workdir holds (a local path or gs://, through etils.epath):

    WORKDIR/config.json       the run's config, for `fdt_jax.evaluate`, `fdt_jax.export`, notebooks
    WORKDIR/config_changes.jsonl  changes accepted on a rerun (safe ones, or accepted ones)
    WORKDIR/tokenizer.model   the sentencepiece model the run used
    WORKDIR/checkpoints/      orbax, one folder per saved step
    WORKDIR/metrics.jsonl     one JSON object per log step and per evaluation
    WORKDIR/events.out.*      TensorBoard
"""

import datetime
import json
import os

import jax
import ml_collections
from etils import epath

from fdt_jax.atomic_write import write_atomically
from fdt_jax.config import base_config
from fdt_jax.data.clip_bpe import is_clip_bpe

CONFIG = 'config.json'
CONFIG_CHANGES = 'config_changes.jsonl'
TOKENIZER = 'tokenizer.model'

# Keys a rerun may change and still continue the same run: how long, how often, what is
# evaluated, on which mesh and with how many microbatches, and how the same values are
# computed (remat, the max-pool's form). Any other change (the model, the
# data, the optimizer, the seed, the objectives) makes the checkpoints another run's.
SAFE_TO_CHANGE = ('total_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                  'keep_checkpoints', 'eval_batch_size', 'evals', 'mesh', 'sharding_rules',
                  'accumulation_steps', 'model.remat', 'model.remat_policy', 'model.fdt.max_pool',
                  'data.num_workers', 'data.data_dir')
_MISSING = '<not set>'


def flat_config(config) -> dict:
  """{'model.fdt.temperature': 1000.0, ...} of a ConfigDict or of config.json's dict, with
  tuples as lists (as JSON has them)."""
  if not isinstance(config, dict):
    config = json.loads(config.to_json_best_effort())
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict) and value:
      flat.update({f'{key}.{k}': v for k, v in flat_config(value).items()})
    else:
      flat[key] = value
  return flat


def config_changes(old, new) -> dict:
  """{key: (old value, new value)} for every key that differs. A key the old config lacks
  (written before the key existed) counts as changed only if the new value is not the
  default the old run had implicitly."""
  old, new, default = flat_config(old), flat_config(new), flat_config(base_config())
  changes = {}
  for key in sorted(old.keys() | new.keys()):
    before, after = old.get(key, _MISSING), new.get(key, _MISSING)
    if before == _MISSING and after == default.get(key, _MISSING):
      continue
    if before != after:
      changes[key] = (before, after)
  return changes


def is_safe_change(key: str) -> bool:
  return any(key == k or key.startswith(k + '.') for k in SAFE_TO_CHANGE)


def describe(changes: dict, limit: int = 4) -> str:
  shown = [f'{k}: {json.dumps(a)} -> {json.dumps(b)}' for k, (a, b) in list(changes.items())[:limit]]
  more = f' and {len(changes) - limit} more' if len(changes) > limit else ''
  return '; '.join(shown) + more


def check_config_change(workdir: str, config, accept: bool = False) -> dict:
  """Compares `config` with the one the workdir's run was started with (nothing is written
  here). Returns the changes; raises ValueError, naming them, if one would make the
  checkpoints another run's and `accept` is False."""
  path = epath.Path(workdir, CONFIG)
  if not path.exists():
    return {}
  changes = config_changes(json.loads(path.read_text()), config)
  unsafe = {k: v for k, v in changes.items() if not is_safe_change(k)}
  if unsafe and not accept:
    raise ValueError(f'the config differs from the run in {workdir} ({describe(unsafe)}): use '
                     'a new --workdir for a new run, or --accept_config_change to continue this '
                     'run with the change (it is recorded in ' + CONFIG_CHANGES + ')')
  return changes


def check_writable(workdir: str) -> None:
  """Fails early, with the reason, if the workdir cannot be written."""
  if '://' in workdir:  # gs:// and other remote paths are checked by orbax/etils on first write
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f'workdir {workdir} is not writable ({e.strerror}): '
                          'choose another --workdir') from None


def save_run_files(workdir: str, config, tokenizer_path: str, changes: dict | None = None) -> None:
  """config.json (the config now in force), the tokenizer, and the `changes` made to the
  config by this rerun, appended to config_changes.jsonl."""
  if jax.process_index() == 0:
    if changes:
      record = {'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                'changes': {k: list(v) for k, v in changes.items()}}
      with epath.Path(workdir, CONFIG_CHANGES).open('a') as f:
        f.write(json.dumps(record) + '\n')
    write_atomically(epath.Path(workdir, CONFIG), config.to_json_best_effort(indent=2))
    target = epath.Path(workdir, TOKENIZER)
    if is_clip_bpe(tokenizer_path):  # CLIP's BPE: config.json's data.tokenizer says it all
      return
    if epath.Path(tokenizer_path) != target:
      write_atomically(target, epath.Path(tokenizer_path).read_bytes())


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = epath.Path(workdir, CONFIG)
  if not path.exists():
    raise FileNotFoundError(f'no {CONFIG} in {workdir}: is it the --workdir of a training run?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def tokenizer_path(workdir: str) -> str | None:
  """The run's tokenizer, if the workdir has one."""
  path = epath.Path(workdir, TOKENIZER)
  return str(path) if path.exists() else None
