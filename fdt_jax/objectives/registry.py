"""Objectives by name, and their weighted sum: `config.objectives = {'infonce': 1.0, ...}`."""

import dataclasses
from typing import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Objective:
  """fn: (outputs, batch) -> (loss, {metric: scalar}); `needs`: the output keys it reads
  ('teacher' for what the EMA teacher produced), checked against the family up front."""
  name: str
  fn: Callable[[dict, dict], tuple[jax.Array, dict]]
  needs: tuple[str, ...] = ()


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> None:
  """Adds (or replaces, e.g. in a test) the objective under its name."""
  OBJECTIVES[objective.name] = objective


def get_objective(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f'unknown objective {name!r} (config.objectives): use one of '
                     f'{", ".join(sorted(OBJECTIVES))}')
  return OBJECTIVES[name]


def check_objectives(weights: dict, family) -> None:
  """Every objective exists, has a number as weight, and finds what it reads in the
  family's outputs (and 'teacher' only if the family keeps one)."""
  if not weights:
    raise ValueError("config.objectives is empty: give at least one, e.g. {'infonce': 1.0}")
  available = set(family.outputs) | ({'teacher'} if family.teacher else set())
  for name, weight in weights.items():
    objective = get_objective(name)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
      raise ValueError(f'config.objectives.{name} = {weight!r}: the weight must be a number')
    if missing := [key for key in objective.needs if key not in available]:
      raise ValueError(f'objective {name!r} needs {", ".join(missing)} but model family '
                       f'{family.name!r} does not output it (it outputs {", ".join(sorted(available))})')


def combine(weights: dict[str, float]) -> Callable:
  """(outputs, batch) -> (sum_i w_i * loss_i, metrics): each objective's metrics under
  '<name>/<metric>', its unweighted loss as '<name>/loss', the total as 'loss'."""
  chosen = [(get_objective(name), float(weight)) for name, weight in weights.items()]

  def objective(outputs, batch):
    total, metrics = 0.0, {}
    for obj, weight in chosen:
      loss, values = obj.fn(outputs, batch)
      total = total + weight * loss
      metrics.update({f'{obj.name}/{k}': v for k, v in values.items()})
      metrics[f'{obj.name}/loss'] = loss
    metrics['loss'] = total
    return total, metrics

  return objective
