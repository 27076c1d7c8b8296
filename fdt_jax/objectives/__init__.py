"""Training objectives chosen by name from the config (`config.objective`).

An objective maps the model's outputs and the batch to (loss, metrics). MAMO and
MVPTR objectives are planned beside InfoNCE; each will be one file here.
"""

from fdt_jax.objectives.infonce import infonce, infonce_objective

OBJECTIVES = {'infonce': infonce_objective}


def get_objective(name: str):
  if name not in OBJECTIVES:
    raise ValueError(f'unknown objective {name!r}: use one of {sorted(OBJECTIVES)}')
  return OBJECTIVES[name]


__all__ = ['OBJECTIVES', 'get_objective', 'infonce']
