r"""Exports a training run's checkpoint to a directory open_clip loads offline.

  python -m fdt_jax.export --workdir=runs/tiny --out=exported/tiny [--step=N]

Then, in PyTorch (pip install -r requirements-export.txt):

  model = open_clip.create_model('local-dir:exported/tiny')   # the CLIP towers
  fdt_model = fdt_jax.export.torch_fdt.load('exported/tiny')  # towers + FDT head
"""

from absl import app, flags

from fdt_jax import cli

_FLAGS = cli.define_flags('workdir', 'step')
_OUT = flags.DEFINE_string('out', None, 'The directory to write.')
flags.mark_flags_as_required(['workdir', 'out'])


def export_run(workdir: str, out: str, step: int | None = None) -> int:
  """Writes checkpoint `step` (default: the latest) of `workdir` to `out`; returns the step."""
  from fdt_jax.export import export_open_clip
  from fdt_jax.models import model_config
  from fdt_jax.run import load_config, restore_params_on_host, tokenizer_path

  model_section = load_config(workdir).model
  model_cfg = model_config(model_section)
  step, params = restore_params_on_host(workdir, model_section, step)
  export_open_clip(params, model_cfg, out, tokenizer_path(workdir))
  return step


def main(argv):
  del argv
  try:
    step = export_run(_FLAGS.workdir.value, _OUT.value, _FLAGS.step.value)
  except (FileNotFoundError, ValueError) as e:
    cli.fail(str(e))
  print(f'exported step {step} of {_FLAGS.workdir.value} to {_OUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
