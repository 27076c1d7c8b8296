"""What a training workdir holds, besides checkpoints and metrics:

    WORKDIR/config.json       the run's config, for `fdt_jax.evaluate` and `fdt_jax.export`
    WORKDIR/tokenizer.model   the sentencepiece model the run used
    WORKDIR/checkpoints/      orbax, one folder per saved step
    WORKDIR/metrics.jsonl     one JSON object per log step and per evaluation
    WORKDIR/events.out.*      TensorBoard
"""

import json
import os
import shutil

import jax
import ml_collections

CONFIG = 'config.json'
TOKENIZER = 'tokenizer.model'


def check_workdir(workdir: str) -> None:
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


def save_run_files(workdir: str, config, tokenizer_path: str) -> None:
  if jax.process_index() == 0 and '://' not in workdir:
    with open(os.path.join(workdir, CONFIG), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(workdir, TOKENIZER)):
      shutil.copyfile(tokenizer_path, os.path.join(workdir, TOKENIZER))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no {CONFIG} in {workdir}: is it the --workdir of a training run?')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def tokenizer_path(workdir: str) -> str:
  return os.path.join(workdir, TOKENIZER)
