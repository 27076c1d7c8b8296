r"""FDT against CLIP on the embedded shapes data, and what decides FDT's behaviour.

  python -m fdt_jax.studies.fdt_vs_clip --part=seeds   # configs/tiny.py, FDT and CLIP, 3 seeds
  python -m fdt_jax.studies.fdt_vs_clip --part=sweep   # one FDT knob at a time
  python -m fdt_jax.studies.fdt_vs_clip --part=report  # tables and plots from what has finished

Both towers, the data, the batch (64) and the steps are the tiny config's for every run;
only the FDT head's settings (and, in the sweep, the optimiser and the steps) change.
One run takes 6-13 minutes on 2 CPU cores (600 steps plus evaluation; clip_s0 took 757 s
beside another run); `seeds` is 6 runs, `sweep` 26 (`--seeds=1` halves it). Restarting
resumes: finished runs are read from RESULTS, an unfinished one continues from its last
checkpoint. `--shard=1/2` runs every second run (two processes share the machine's cores).
Results: fdt_jax/studies/results/fdt_vs_clip/.
"""

import dataclasses
import json
import os

from absl import app, flags, logging
from etils import epath

from fdt_jax.studies import plots, runner

RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'fdt_vs_clip')
_PART = flags.DEFINE_enum('part', 'seeds', ['seeds', 'sweep', 'report'], 'Which runs.')
_WORKDIRS = flags.DEFINE_string('workdirs', 'runs/studies/fdt_vs_clip', 'Where the runs train.')
_RESULTS = flags.DEFINE_string('results', RESULTS, 'Where finished runs are summarised.')
_SHARD = flags.DEFINE_string('shard', '1/1', 'i/n: run the i-th of every n runs.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these groups or run names.')
_SEEDS = flags.DEFINE_list('seeds', [], 'Run only these seeds (the report shows which ran).')
_INSPECT = flags.DEFINE_bool('inspect', True, 'Inspect FDT runs as they finish (else on a later run).')

SEEDS = (0, 1, 2)
TINY = 'configs/tiny.py'

# The FDT head as the tiny config had it before this study (T = 10, a N(0, 1) table as the
# authors): every sweep point states all its knobs, so later changes to configs/tiny.py do
# not change what a sweep row means.
REFERENCE = dict(temperature=10.0, init_scale=1.0, normalizer='sparsemax', num_tokens=1024,
                 learning_rate=1e-3, weight_decay=0.1, total_steps=600)


def fdt_overrides(**changes) -> tuple[str, ...]:
  knobs = {**REFERENCE, **changes}
  unknown = set(knobs) - set(REFERENCE)
  if unknown:
    raise ValueError(f'unknown sweep knobs {sorted(unknown)}')
  fdt = ('temperature', 'init_scale', 'normalizer', 'num_tokens')
  opt = ('learning_rate', 'weight_decay')
  return (*(f'--config.model.fdt.{k}={knobs[k]}' for k in fdt),
          *(f'--config.optimizer.{k}={knobs[k]}' for k in opt),
          f'--config.total_steps={knobs["total_steps"]}')


# FDT in the seeds part at two temperatures, each stated (configs/tiny.py's default follows
# the better one): T = 100, the default before the T = 1000 runs finished, and the authors' 1000.
SEED_FDT = {'fdt': 'FDT T=100', 'fdt1000': 'FDT T=1000 (authors)'}


def seed_runs() -> list[runner.Run]:
  """configs/tiny.py's FDT at T = 100 and T = 1000, and its CLIP baseline, three seeds each."""
  runs = []
  for seed in SEEDS:
    for prefix, group in SEED_FDT.items():
      temperature = 1000.0 if prefix == 'fdt1000' else 100.0
      runs.append(runner.Run(f'{prefix}_s{seed}', group, TINY, seed,
                             (f'--config.model.fdt.temperature={temperature}',), inspect=True))
    runs.append(runner.Run(f'clip_s{seed}', 'CLIP (configs/tiny.py:clip)', f'{TINY}:clip', seed))
  return runs


SWEEP = {  # group name -> changes from REFERENCE
    'reference: T=10 init_scale=1': {},
    'T=1 (200 steps: it stays at chance)': dict(temperature=1.0, total_steps=200),
    'T=100': dict(temperature=100.0),
    'T=1000 (authors)': dict(temperature=1000.0),
    'init_scale=0.1 T=1': dict(init_scale=0.1, temperature=1.0),
    'init_scale=0.1 T=10': dict(init_scale=0.1),
    'softmax': dict(normalizer='softmax'),
    'C=256': dict(num_tokens=256),
    'C=4096': dict(num_tokens=4096),
    'lr 3e-3': dict(learning_rate=3e-3),
    'weight decay 0': dict(weight_decay=0.0),
    '1200 steps': dict(total_steps=1200),
    'T=30': dict(temperature=30.0),  # added after T=100 became the default: between the two
}
SWEEP_SEEDS = (1, 2)  # the reference's two weaker seeds: where instability shows


def sweep_runs() -> list[runner.Run]:
  runs = []
  for index, (group, changes) in enumerate(SWEEP.items()):
    for seed in SWEEP_SEEDS:
      runs.append(runner.Run(f'sweep{index:02d}_s{seed}', group, TINY, seed,
                             fdt_overrides(**changes), inspect=True))
  return runs


METRICS = {  # table column -> result key
    'test rsum': 'test/rsum',
    'compositional rsum': 'test_compositional/rsum',
    'zero-shot mean top-1': 'zeroshot/mean_top1',
    'train loss': 'train/loss',
    'purity (image / text)': None,  # filled from tokens/purity_image and tokens/purity_text
    'agreement': 'tokens/agreement',
    'tokens in use': 'tokens/tokens_in_use',
    'active per image': 'tokens/active_per_image',
}


def report(results_dir: str) -> str:
  results = [json.loads(p.read_text()) for p in sorted(epath.Path(results_dir).glob('*.json'))
             if p.stem not in ('seeds', 'sweep')]  # the report's own tables
  keys = {label: key for label, key in METRICS.items() if key}
  keys.update({'purity image': 'tokens/purity_image', 'purity text': 'tokens/purity_text'})
  sections = []
  for part, prefix in (('seeds', ('fdt_s', 'fdt1000_s', 'clip_s')), ('sweep', ('sweep',))):
    chosen = [r for r in results if r['name'].startswith(prefix)]
    if not chosen:
      continue
    rows = runner.summarize(chosen, keys)
    labels = [l for l in ('test rsum', 'compositional rsum', 'zero-shot mean top-1', 'train loss',
                          'purity image', 'purity text', 'agreement', 'tokens in use',
                          'active per image') if any(l in r for r in rows)]
    sections.append(f'### {part}\n\n' + runner.markdown_table(rows, labels, digits=2 if part else 1))
    epath.Path(results_dir, f'{part}.json').write_text(json.dumps(rows, indent=1))
    plots.curves(chosen, epath.Path(results_dir, f'{part}_curves.png'))
  inspected = [r for r in results if r.get('tokens')]
  if inspected:
    sections.append(concept_purity(inspected))
  text = '\n\n'.join(sections)
  epath.Path(results_dir, 'tables.md').write_text(text + '\n')
  return text


CONCEPTS = ('colour', 'shape', 'size', 'position')


def concept_purity(results: list[dict]) -> str:
  """Image-side purity of the tokens for each kind of concept, beside what a token that
  ignored the concept would score (the concept's frequency-weighted chance)."""
  keys = {}
  for concept in CONCEPTS:
    keys[concept] = f'tokens/purity_image_{concept}'
    keys[f'{concept} chance'] = f'tokens/purity_image_{concept}_chance'
  rows = runner.summarize(results, keys)
  return ('### purity by concept (image side)\n\n'
          + runner.markdown_table(rows, [l for c in CONCEPTS for l in (c, f'{c} chance')], digits=2))


def main(argv):
  del argv
  if _PART.value == 'report':
    print(report(_RESULTS.value))
    return
  runs = seed_runs() if _PART.value == 'seeds' else sweep_runs()
  if _ONLY.value:
    runs = [r for r in runs if r.group in _ONLY.value or r.name in _ONLY.value]
  if _SEEDS.value:
    runs = [r for r in runs if str(r.seed) in _SEEDS.value]
  i, n = (int(x) for x in _SHARD.value.split('/'))
  runs = runs[i - 1::n]
  if not _INSPECT.value:
    runs = [dataclasses.replace(r, inspect=False) for r in runs]
  logging.info('%d runs: %s', len(runs), [r.name for r in runs])
  runner.run_all(runs, _WORKDIRS.value, _RESULTS.value)
  print(report(_RESULTS.value))


if __name__ == '__main__':
  app.run(main)
