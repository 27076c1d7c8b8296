r"""Exports a training run's checkpoint to a directory open_clip loads offline.

  python -m fdt_jax.export --workdir=runs/tiny --out=exported/tiny [--step=N]

Then, in PyTorch (pip install -r requirements-export.txt):

  model = open_clip.create_model('local-dir:exported/tiny')   # the CLIP towers
  fdt_model = fdt_jax.export.torch_fdt.load('exported/tiny')  # towers + FDT head
"""

from absl import app, flags

from fdt_jax import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run to export.')
_OUT = flags.DEFINE_string('out', None, 'The directory to write.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step; default: the latest.')
flags.mark_flags_as_required(['workdir', 'out'])


def export_run(workdir: str, out: str, step: int | None = None) -> int:
  """Writes checkpoint `step` (default: the latest) of `workdir` to `out`; returns the step."""
  from fdt_jax.export import export_open_clip
  from fdt_jax.models import model_config
  from fdt_jax.train.checkpoints import Checkpointer
  from fdt_jax.train.workdir import load_run_config, tokenizer_path

  model_cfg = model_config(load_run_config(workdir).model)
  step, params = Checkpointer(workdir, read_only=True).restore_params_on_host(step, model_cfg)
  export_open_clip(params, model_cfg, out, tokenizer_path(workdir))
  return step


def main(argv):
  del argv
  try:
    step = export_run(_WORKDIR.value, _OUT.value, _STEP.value)
  except (FileNotFoundError, ValueError) as e:
    cli.fail(str(e))
  print(f'exported step {step} of {_WORKDIR.value} to {_OUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
