r"""FDT's learned tokens against MVPTR's given concepts on the shapes data: which of the
generator's concepts each picks out, and how each retrieves.

  python -m fdt_jax.studies.tokens_vs_concepts            # the runs below, then the tables
  python -m fdt_jax.studies.tokens_vs_concepts --part=report

Both kinds of unit are scored by one measure, the purity of eval/token_stats.py against the
generator's labels (colour, shape, size, position, relation; chance: the labels permuted):
  - FDT: an image's (a caption's) weights over the FDT tokens, from fdt_jax.inspect, as the
    FDT study records them (its runs with the authors' temperature, T = 1000);
  - MVPTR: an image's weights over its concept vocabulary, the visual encoder's softmaxes at
    its masked tag slots summed (eval/concepts.py, concept_recovery), with its own image and
    with another image (then only the other, visible tags say what the masked one was);
  - MVPTR+FDT (configs/tiny.py:mvptr_fdt): MVPTR whose VSC goes through the FDT head, so
    that FDT tokens learn beside the given concepts; its tokens are inspected as FDT's.
FDT learns its tokens from image-caption pairs alone; MVPTR is given the concepts of every
image and caption as inputs and trained to recover masked ones, so its purity is the upper
reference, not a rival measured on equal terms. Retrieval and the tag recovery per kind of
tag come from the same runs.

The MVPTR runs are fdt_jax.studies.mvptr_vs_clip's (same workdirs: a run whose workdir is
gone is trained again, ~16 minutes each on this 2-core machine, and checked against the
study's numbers); each run's numbers go to RESULTS/mvptr_sN.json, the MVPTR+FDT runs (trained
here, in the same workdirs folder) to RESULTS/mvptr_fdt_sN.json, so a restart resumes.
Results: fdt_jax/studies/results/tokens_vs_concepts/.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
from absl import app, flags
from etils import epath

from fdt_jax.studies import runner

RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'tokens_vs_concepts')
FDT_RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'fdt_vs_clip_v2')
TYPES = ('', '_colour', '_shape', '_size', '_position', '_relation')
KINDS = ('shape', 'colour_shape', 'size_shape', 'relation')
# Retrieval (and the loss) of each system, from its final evaluation.
RETRIEVAL = {'test rsum': 'test/rsum', 'compositional rsum': 'test_compositional/rsum',
             'zero-shot mean top-1': 'zeroshot/mean_top1'}


def concept_numbers(run: runner.Run, workdir: epath.Path) -> dict:
  """A trained MVPTR run's concept_recovery numbers (with the rest of its configured
  evaluation, `python -m fdt_jax.evaluate`), training it first if its workdir is gone."""
  if not (workdir / 'checkpoints').exists():
    logging.info('tokens_vs_concepts: training %s again', run.name)
    subprocess.run(run.command(str(workdir)), check=True, stdout=subprocess.DEVNULL)
  subprocess.run([sys.executable, '-m', 'fdt_jax.evaluate', f'--config={run.config}',
                  f'--workdir={workdir}', f'--config.seed={run.seed}'], check=True,
                 stdout=subprocess.DEVNULL)
  final = runner.last_values(workdir / 'metrics.jsonl')
  return {'name': run.name, 'seed': run.seed, 'step': final['step'], 'test/rsum': final['test/rsum'],
          'concepts': {k.removeprefix('concepts/'): v for k, v in final.items()
                       if k.startswith('concepts/')},
          'pointing': {k.removeprefix('pointing/'): v for k, v in final.items()
                       if k.startswith('pointing/')}}


def fdt_in_mvptr_runs(seeds) -> list[runner.Run]:
  """MVPTR with its VSC through the FDT head: FDT tokens learned beside given concepts."""
  return [runner.Run(f'mvptr_fdt_s{seed}', 'MVPTR, VSC by FDT (configs/tiny.py:mvptr_fdt)',
                     'configs/tiny.py:mvptr_fdt', int(seed), inspect=True) for seed in seeds]


def run_all(seeds, workdirs: str, fdt_seeds=()) -> None:
  runner.run_all(fdt_in_mvptr_runs(fdt_seeds), workdirs, RESULTS)
  results = epath.Path(RESULTS)
  study = epath.Path(runner.MVPTR_RESULTS)
  for run in runner.mvptr_runs(seeds):
    out = results / f'{run.name}.json'
    if out.exists():
      continue
    workdir = epath.Path(workdirs) / run.name
    again = not (workdir / 'checkpoints').exists()
    numbers = concept_numbers(run, workdir)
    recorded = study / f'{run.name}.json'
    if again and recorded.exists():  # a run trained again should give the study's numbers
      numbers['study_test/rsum'] = json.loads(recorded.read_text())['final']['test/rsum']
    results.mkdir(parents=True, exist_ok=True)
    runner.write_result(results, run.name, numbers)


def _stat(values: list[float]) -> str:
  if not values:
    return ''
  mean = float(np.mean(values))
  if len(values) == 1:
    return f'{mean:.3f}'
  return f'{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}'


def report(results_dir: str, fdt_dir: str) -> str:
  fdt = [r for r in runner.read_results(fdt_dir, 'fdt1000_s*.json') if 'tokens' in r]
  both = [r for r in runner.read_results(results_dir, 'mvptr_fdt_s*.json') if 'tokens' in r]
  mvptr = runner.read_results(results_dir, 'mvptr_s*.json')
  seeds = lambda rs: ','.join(str(r['seed']) for r in rs) or 'none yet'
  columns = (  # label, runs, key of a purity (its chance: + '_chance')
      ('FDT image tokens', fdt, lambda r, t: r['tokens'].get(f'purity_image{t}')),
      ('FDT caption tokens', fdt, lambda r, t: r['tokens'].get(f'purity_text{t}')),
      ('MVPTR+FDT image tokens', both, lambda r, t: r['tokens'].get(f'purity_image{t}')),
      ('MVPTR+FDT caption tokens', both, lambda r, t: r['tokens'].get(f'purity_text{t}')),
      ('MVPTR concepts, own image', mvptr, lambda r, t: r['concepts'].get(f'purity{t}')),
      ('MVPTR concepts, other image', mvptr,
       lambda r, t: r['concepts'].get(f'purity{t}_other_image')))
  lines = [f'Purity against the generator\'s labels (chance in brackets); FDT seeds '
           f'{seeds(fdt)}, MVPTR+FDT seeds {seeds(both)}, MVPTR seeds {seeds(mvptr)}.', '',
           '| concept type | ' + ' | '.join(c[0] for c in columns) + ' |',
           '|' + ' --- |' * (len(columns) + 1)]
  for t in TYPES:
    cells = []
    for _, runs, get in columns:
      value = _stat([v for r in runs if (v := get(r, t)) is not None])
      chance = _stat([v for r in runs if (v := get(r, f'{t}_chance')) is not None])
      cells.append(f'{value} ({chance})' if value else '')
    lines.append(f'| {t[1:] or "all"} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'MVPTR tag recovery (%) by kind of tag; seeds {seeds(mvptr)}.', '',
            '| kind | own image | other image |', '| --- | --- | --- |']
  for kind in ('',) + tuple(f'_{k}' for k in KINDS):
    own = _stat([r['concepts'][f'tag_accuracy{kind}'] for r in mvptr])
    other = _stat([r['concepts'][f'tag_accuracy{kind}_other_image'] for r in mvptr])
    lines.append(f'| {kind[1:] or "all"} | {own} | {other} |')
  lines += ['', f'Where MVPTR\'s phrases point (pointing_game, %), per seed.', '',
            '| seed | in the named object\'s cell (chance) | in any object\'s cell (chance) | '
            'the most frequent best patch\'s share |', '| --- | --- | --- | --- |']
  for r in mvptr:
    p = r.get('pointing', {})
    if 'best_in_any_object' in p:
      lines.append(f'| {r["seed"]} | {p["pointing_accuracy"]:.1f} ({p["chance"]:.1f}) | '
                   f'{p["best_in_any_object"]:.1f} ({p["best_in_any_object_chance"]:.1f}) | '
                   f'{p["top_patch_share"]:.1f} |')
  rows = runner.summarize(runner.read_results(runner.CLIP_RESULTS, 'clip_s*.json') + fdt +
                          runner.read_results(runner.MVPTR_RESULTS, 'mvptr_s*.json') + both, RETRIEVAL)
  lines += ['', 'Retrieval on the same held-out test split, the same runs.', '',
            runner.markdown_table(rows, list(RETRIEVAL), digits=2)]
  again = [f'{r["name"]} test rsum {r["test/rsum"]:.2f} (the study recorded '
           f'{r["study_test/rsum"]:.2f})' for r in mvptr if 'study_test/rsum' in r]
  if again:
    lines += ['', 'MVPTR runs whose workdir was gone, trained again: ' + '; '.join(again) + '.']
  text = '\n'.join(lines)
  epath.Path(results_dir).mkdir(parents=True, exist_ok=True)
  epath.Path(results_dir, 'tables.md').write_text(text + '\n')
  return text


def define_flags() -> None:
  """When run as a script only, so that tests can import this beside the other studies."""
  flags.DEFINE_enum('part', 'runs', ['runs', 'report'], 'Which part.')
  flags.DEFINE_string('workdirs', 'runs/studies/mvptr_vs_clip',
                      'Where the MVPTR runs train (mvptr_vs_clip\'s workdirs).')
  flags.DEFINE_string('fdt_results', FDT_RESULTS,
                      'The FDT study results holding fdt1000_s*.json with their inspection.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'The MVPTR seeds.')
  flags.DEFINE_list('fdt_seeds', ['0', '1', '2'], 'The seeds of MVPTR with the FDT head.')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.part == 'runs':
    run_all(f.seeds, f.workdirs, f.fdt_seeds)
  print(report(RESULTS, f.fdt_results))


if __name__ == '__main__':
  define_flags()
  app.run(main)
