r"""MAMO against the contrastive-only baseline on the embedded shapes data.

  python -m fdt_jax.studies.mamo_vs_clip --part=seeds    # configs/tiny.py:mamo, 3 seeds
  python -m fdt_jax.studies.mamo_vs_clip --part=report   # the table from what has finished

Both use configs/tiny.py's towers, data, batch (64) and 600 steps; MAMO adds the fusion
encoder (two streams), the EMA teacher and four losses to ITC. A third group drops the image
stream (the implicit target at the masked words only). The baseline is configs/tiny.py:clip,
the same runs as fdt_jax.studies.fdt_vs_clip's (read from its results; `--part=seeds` there
trains them if they are missing). A MAMO run took 16 to 40 minutes of wall time on this 2-core
machine with other jobs beside it (the JSONs' wall_seconds). Restarting resumes
(fdt_jax/studies/runner.py). Results: fdt_jax/studies/results/mamo_vs_clip/.
"""

import os

from absl import app, flags

from fdt_jax.studies import runner

RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'mamo_vs_clip')
_PART = flags.DEFINE_enum('part', 'seeds', ['seeds', 'report'], 'Which runs.')
_WORKDIRS = flags.DEFINE_string('workdirs', 'runs/studies/mamo_vs_clip', 'Where the runs train.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'The seeds to run.')

METRICS = {'test rsum': 'test/rsum', 'test rsum, ITM re-ranked top 16': 'test/itm_rsum',
           'compositional rsum': 'test_compositional/rsum',
           'zero-shot mean top-1': 'zeroshot/mean_top1', 'ITC loss': 'train/infonce/loss',
           'masked words, true image': 'fusion/masked_word_accuracy',
           'masked words, other image': 'fusion/masked_word_accuracy_other_image',
           'ITM accuracy (test pairs)': 'fusion/itm_accuracy'}


def seed_runs(seeds) -> list[runner.Run]:
  """MAMO as configured, for every seed first; then the ablation without the image stream
  (the implicit target at the masked words only)."""
  runs = [runner.Run(f'mamo_s{seed}', 'MAMO (configs/tiny.py:mamo)', 'configs/tiny.py:mamo',
                     int(seed)) for seed in seeds]
  return runs + [runner.Run(f'mamo_words_s{seed}', 'MAMO, implicit target at the masked words only',
                            'configs/tiny.py:mamo', int(seed), ('--config.model.image_fusion=False',))
                 for seed in seeds]


def report(results_dir: str) -> str:
  return runner.report_against_clip(results_dir, 'mamo_*.json', METRICS)


def main(argv):
  del argv
  if _PART.value == 'seeds':
    runner.run_all(seed_runs(_SEEDS.value), _WORKDIRS.value, RESULTS)
  print(report(RESULTS))


if __name__ == '__main__':
  app.run(main)
