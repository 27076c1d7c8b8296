r"""What an FDT run's tokens mean: which words and patches each token fires on, how pure
its concepts are, whether an image and its caption use the same tokens, how many are dead.

  python -m fdt_jax.inspect --workdir=runs/tiny [--split=test] [--out=runs/tiny/inspect] \
      [--max_examples=N] [--step=N]

Writes OUT/inspect.json (the numbers), OUT/tokens.json (per token), PNG figures and
OUT/report.md; the definitions are in fdt_jax/eval/token_stats.py. Purity needs the
'shapes' data (whose concepts are known); the rest works on any split with captions.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags  # noqa: E402

from fdt_jax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run (FDT on) to inspect.')
_SPLIT = flags.DEFINE_string('split', 'test', 'The split whose images and first captions to use.')
_OUT = flags.DEFINE_string('out', None, 'Where the report goes; default: WORKDIR/inspect.')
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', None, 'Use the first N examples; default: all.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step; default: the latest.')
flags.mark_flags_as_required(['workdir'])


def inspect(workdir: str, split: str = 'test', out: str | None = None,
            max_examples: int | None = None, step: int | None = None) -> dict:
  """Writes the report into `out` (default WORKDIR/inspect); returns inspect.json's numbers."""
  from fdt_jax.eval import token_report, tokens
  from fdt_jax.run import load_config
  if not load_config(workdir).model.fdt.enabled:  # before reading any checkpoint
    raise ValueError(tokens.NOT_FDT + ': inspect a run trained with FDT on')
  run = tokens.load_run(workdir, step)
  tokens.check_fdt(run.model)
  acts = tokens.activations(run, split, max_examples)
  return token_report.write_report(run, acts, out or os.path.join(workdir, 'inspect'))


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}', code=2)
  if _MAX_EXAMPLES.value is not None and _MAX_EXAMPLES.value < 2:
    cli.fail(f'--max_examples={_MAX_EXAMPLES.value}: use at least 2', code=2)
  out = _OUT.value or os.path.join(_WORKDIR.value, 'inspect')
  try:
    numbers = inspect(_WORKDIR.value, _SPLIT.value, out, _MAX_EXAMPLES.value, _STEP.value)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(cli.one_line(e))
  width = max(len(k) for k in numbers)
  for key, value in numbers.items():
    print(f'{key:<{width}}  {value:.3f}' if isinstance(value, float) else f'{key:<{width}}  {value}')
  print(f'report: {os.path.join(out, "report.md")}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
