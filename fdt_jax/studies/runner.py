"""Runs a list of training runs one after another, each resumable, and tabulates them.

Each run is `python -m fdt_jax.main` in its own workdir (which resumes from its latest
checkpoint when the study is restarted); when it finishes, its final evaluation (and, for
FDT runs, `python -m fdt_jax.inspect`'s numbers) go to RESULTS/NAME.json. A run whose JSON
exists is not run again, so killing and restarting a study loses at most one run's
unfinished steps.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
from etils import epath


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # unique in the study: 'fdt_s0'
  group: str  # runs of one group differ only in their seed: a table row
  config: str  # 'configs/tiny.py:clip'
  seed: int = 0
  overrides: tuple[str, ...] = ()  # '--config.model.fdt.temperature=1'
  inspect: bool = False  # also run fdt_jax.inspect on the test split

  def command(self, workdir: str) -> list[str]:
    return [sys.executable, '-m', 'fdt_jax.main', f'--config={self.config}', f'--workdir={workdir}',
            f'--config.seed={self.seed}', *self.overrides]


def last_values(metrics_path: epath.Path) -> dict:
  """The last value of every key in a metrics.jsonl (its final evaluation and train log)."""
  values = {}
  for line in metrics_path.read_text().splitlines():
    record = json.loads(line)
    values.update({k: v for k, v in record.items() if k != 'step'})
    values['step'] = max(values.get('step', 0), record['step'])
  return values


def train_curve(metrics_path: epath.Path, keys: tuple[str, ...]) -> dict:
  """key -> [(step, value)] for the logged train metrics."""
  curve = {k: [] for k in keys}
  for line in metrics_path.read_text().splitlines():
    record = json.loads(line)
    for k in keys:
      if k in record:
        curve[k].append((record['step'], record[k]))
  return curve


CURVE_KEYS = ('train/loss', 'train/fdt/active_tokens_image', 'train/fdt/active_tokens_text',
              'train/fdt/tokens_in_use', 'train/fdt/agreement', 'train/logit_scale')


def run_one(run: Run, workdirs: epath.Path, results: epath.Path) -> dict:
  out = results / f'{run.name}.json'
  workdir = workdirs / run.name
  if out.exists():
    result = json.loads(out.read_text())
    if run.inspect and 'tokens' not in result and workdir.exists():
      result['tokens'] = inspect(workdir)
      write_result(results, run.name, result)
    return result
  start = time.time()
  logging.info('study: %s', ' '.join(run.command(str(workdir))))
  subprocess.run(run.command(str(workdir)), check=True, stdout=subprocess.DEVNULL)
  result = {'name': run.name, 'group': run.group, 'config': run.config, 'seed': run.seed,
            'overrides': list(run.overrides), 'wall_seconds': round(time.time() - start, 1),
            'final': last_values(workdir / 'metrics.jsonl'),
            'curve': train_curve(workdir / 'metrics.jsonl', CURVE_KEYS)}
  if run.inspect:
    result['tokens'] = inspect(workdir)
  write_result(results, run.name, result)
  return result


def inspect(workdir: epath.Path) -> dict:
  out = workdir / 'inspect'
  subprocess.run([sys.executable, '-m', 'fdt_jax.inspect', f'--workdir={workdir}', '--split=test',
                  f'--out={out}'], check=True, stdout=subprocess.DEVNULL)
  return json.loads((out / 'inspect.json').read_text())


def write_result(results: epath.Path, name: str, result: dict) -> None:
  results.mkdir(parents=True, exist_ok=True)
  tmp = results / f'.{name}.json.tmp'
  tmp.write_text(json.dumps(result, indent=1))
  os.replace(tmp, results / f'{name}.json')  # a result file is whole or absent


def run_all(runs: list[Run], workdirs: str, results: str) -> list[dict]:
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError('two runs of the study share a name')
  return [run_one(r, epath.Path(workdirs), epath.Path(results)) for r in runs]


def metric(result: dict, key: str):
  """A number from a result: 'test/rsum' from the final evaluation, 'tokens/agreement'
  from the inspection."""
  if key.startswith('tokens/'):
    return result.get('tokens', {}).get(key[len('tokens/'):])
  return result['final'].get(key)


def summarize(results: list[dict], keys: dict[str, str]) -> list[dict]:
  """One row per group: mean, sample standard deviation and the per-seed values of each key."""
  rows = []
  for group in dict.fromkeys(r['group'] for r in results):
    members = [r for r in results if r['group'] == group]
    row = {'group': group, 'seeds': [r['seed'] for r in members]}
    for label, key in keys.items():
      values = [metric(r, key) for r in members]
      values = [v for v in values if v is not None]
      if values:
        row[label] = {'mean': float(np.mean(values)),
                      'sd': float(np.std(values, ddof=1)) if len(values) > 1 else None,
                      'values': values}
    rows.append(row)
  return rows


def markdown_table(rows: list[dict], labels: list[str], digits: int = 1) -> str:
  def cell(stat):
    if stat is None:
      return ''
    if stat['sd'] is None:
      return f'{stat["mean"]:.{digits}f}'
    return f'{stat["mean"]:.{digits}f} ± {stat["sd"]:.{digits}f}'
  lines = ['| run | seeds | ' + ' | '.join(labels) + ' |', '|' + ' --- |' * (len(labels) + 2)]
  for row in rows:
    seeds = ','.join(map(str, row['seeds']))
    lines.append(f'| {row["group"]} | {seeds} | ' + ' | '.join(cell(row.get(l)) for l in labels) + ' |')
  return '\n'.join(lines)


# The CLIP baseline's runs, which the family studies compare against (fdt_vs_clip trains them).
CLIP_RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'fdt_vs_clip')
# MVPTR's runs (mvptr_vs_clip trains them; tokens_vs_concepts evaluates them again): here, so
# that a study can name them without importing the other study's flags.
MVPTR_RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'mvptr_vs_clip')


def mvptr_runs(seeds) -> list[Run]:
  return [Run(f'mvptr_s{seed}', 'MVPTR (configs/tiny.py:mvptr)', 'configs/tiny.py:mvptr', int(seed))
          for seed in seeds]


def read_results(folder: str, glob: str) -> list[dict]:
  """The result JSONs `glob` (e.g. 'mvptr_s*.json') of a results folder, by name."""
  return [json.loads(p.read_text()) for p in sorted(epath.Path(folder).glob(glob))]


def report_against_clip(results_dir: str, pattern: str, metrics: dict[str, str]) -> str:
  """The table of the CLIP baseline's seeds and the runs `pattern` of results_dir (e.g.
  'mamo_*.json'), written to results_dir/tables.md and returned."""
  rows = summarize(read_results(CLIP_RESULTS, 'clip_s*.json') + read_results(results_dir, pattern),
                   metrics)
  labels = [label for label in metrics if any(label in row for row in rows)]
  text = markdown_table(rows, labels, digits=2)
  epath.Path(results_dir).mkdir(parents=True, exist_ok=True)
  epath.Path(results_dir, 'tables.md').write_text(text + '\n')
  return text
