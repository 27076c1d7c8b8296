"""Training objectives chosen by name and weight from the config:
`config.objectives = {'infonce': 1.0}`, one file per objective, each registering itself.

    loss_fn = combine(config.objectives)      # (outputs, batch) -> (loss, metrics)
"""

from fdt_jax.objectives.registry import (OBJECTIVES, Objective, check_objectives, combine,
                                         get_objective, register_objective)
from fdt_jax.objectives.infonce import infonce  # registers 'infonce'
from fdt_jax.objectives import mamo  # registers 'itm', 'mlm', 'patch_target', 'implicit_target'
from fdt_jax.objectives import mvptr  # registers 'mcr', 'wpg', 'itm_hardest'

__all__ = ['OBJECTIVES', 'Objective', 'check_objectives', 'combine', 'get_objective', 'infonce',
           'mamo', 'mvptr', 'register_objective']
