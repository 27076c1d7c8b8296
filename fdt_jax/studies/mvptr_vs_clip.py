r"""MVPTR against the contrastive-only baseline on the embedded shapes data.

  python -m fdt_jax.studies.mvptr_vs_clip --part=seeds    # configs/tiny.py:mvptr, 3 seeds
  python -m fdt_jax.studies.mvptr_vs_clip --part=report   # the table from what has finished

Both use configs/tiny.py's ViT and text sizes, data, batch (64) and 600 steps; MVPTR adds the
concepts (phrases and tags), a visual encoder over tags and patches, the fusion encoder and
four losses to VSC (its contrastive loss, on embeddings made by other layers than CLIP's).
The baseline is configs/tiny.py:clip, the same runs as fdt_jax.studies.fdt_vs_clip's (read
from its results; `--part=seeds` there trains them if they are missing). The first MVPTR
run took 16 minutes on this 2-core machine (its JSON's wall_seconds). Restarting resumes
(fdt_jax/studies/runner.py).
Results: fdt_jax/studies/results/mvptr_vs_clip/.
"""

import os

from absl import app, flags

from fdt_jax.studies import runner

RESULTS = runner.MVPTR_RESULTS
_PART = flags.DEFINE_enum('part', 'seeds', ['seeds', 'report'], 'Which runs.')
_WORKDIRS = flags.DEFINE_string('workdirs', 'runs/studies/mvptr_vs_clip', 'Where the runs train.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'The seeds to run.')

METRICS = {'test rsum': 'test/rsum', 'test rsum, ITM re-ranked top 16': 'test/itm_rsum',
           'compositional rsum': 'test_compositional/rsum',
           'zero-shot mean top-1': 'zeroshot/mean_top1', 'ITC/VSC loss': 'train/infonce/loss',
           'tag recovery': 'concepts/tag_accuracy', 'tag recovery gain': 'concepts/image_gain',
           'pointing game': 'pointing/pointing_accuracy', 'pointing chance': 'pointing/chance',
           'ITM accuracy (train)': 'train/itm_hardest/accuracy',
           'MLM accuracy (train)': 'train/mlm/accuracy'}


def report(results_dir: str) -> str:
  return runner.report_against_clip(results_dir, 'mvptr_s*.json', METRICS)


def main(argv):
  del argv
  if _PART.value == 'seeds':
    runner.run_all(runner.mvptr_runs(_SEEDS.value), _WORKDIRS.value, RESULTS)
  print(report(RESULTS))


if __name__ == '__main__':
  app.run(main)
