r"""FDT on ViT-B/16 with the ViT-B/32 recipe (configs/vitb32.py), for TPU pods and GPU clusters.

  python -m fdt_jax.main --config=configs/vitb16.py --workdir=gs://BUCKET/runs/vitb16 \
      --config.data.name=dir:gs://BUCKET/cc3m_fdt
  python -m fdt_jax.main --config=configs/vitb16.py:clip ...    # the CLIP baseline (FDT off)

launch/README.md shows how to run it on a Cloud TPU pod slice or a SLURM cluster.
Expected: above the ViT-B/32 numbers of the same data; we have not run it (README).
"""

import importlib.util
import os


def get_config(arg: str = 'fdt'):
  # The same recipe as ViT-B/32 but the patch size; configs are files, so load the sibling.
  spec = importlib.util.spec_from_file_location(
      'vitb32', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vitb32.py'))
  vitb32 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vitb32)
  if arg not in ('fdt', 'clip'):
    raise ValueError(f'configs/vitb16.py:{arg}: use configs/vitb16.py (FDT) or configs/vitb16.py:clip')
  c = vitb32.get_config(arg)
  c.model.variant = 'ViT-B-16'
  c.model.remat = True  # 197 tokens per image: recompute blocks rather than keep activations
  return c
