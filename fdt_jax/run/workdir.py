"""What a training workdir holds (a local path or gs://, through etils.epath):

    WORKDIR/config.json       the run's config, for `fdt_jax.evaluate`, `fdt_jax.export`, notebooks
    WORKDIR/tokenizer.model   the sentencepiece model the run used
    WORKDIR/checkpoints/      orbax, one folder per saved step
    WORKDIR/metrics.jsonl     one JSON object per log step and per evaluation
    WORKDIR/events.out.*      TensorBoard
"""

import json
import os

import jax
import ml_collections
from etils import epath

from fdt_jax.atomic_write import write_atomically
from fdt_jax.data.clip_bpe import is_clip_bpe

CONFIG = 'config.json'
TOKENIZER = 'tokenizer.model'


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


def save_run_files(workdir: str, config, tokenizer_path: str) -> None:
  if jax.process_index() == 0:
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
