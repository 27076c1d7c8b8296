"""Evaluators chosen by name from the config: `config.evals.NAME = dict(type=TYPE, ...)`.

  retrieval        image<->text Recall@1/5/10 and rsum on a split with captions
                   (split, max_examples)
  shapes_zeroshot  zero-shot classification of single-object 'shapes' images by
                   each attribute (split, attributes)

Each evaluator has `run(params) -> {metric: value}`; all share one Embedder.
"""

import numpy as np

from fdt_jax.eval.embed import Embedder
from fdt_jax.eval.retrieval import RetrievalEvaluator
from fdt_jax.eval.zeroshot import ZeroShotEvaluator


class ShapesZeroShotEvaluator:
  """CLIP-style zero-shot accuracy per attribute (shape, colour, size, position)."""

  def __init__(self, source, *, attributes, tokenizer, image_size, embedder):
    from fdt_jax.data import shapes
    singles = [i for i in range(len(source)) if len(source[i]['objects']['shape']) == 1]
    if not singles:
      raise ValueError('shapes_zeroshot: the split has no single-object images')
    self.evaluators = {}
    for attribute in attributes:
      if attribute not in shapes.ZERO_SHOT:
        raise ValueError(f'unknown shapes attribute {attribute!r}: use one of {sorted(shapes.ZERO_SHOT)}')
      task = shapes.ZERO_SHOT[attribute]
      labels = [int(source[i]['objects'][task.label][0]) for i in singles]
      self.evaluators[attribute] = ZeroShotEvaluator(
          lambda j: source[singles[j]]['image'], labels, task.classnames, task.templates,
          tokenizer=tokenizer, image_size=image_size, embedder=embedder)

  def run(self, params) -> dict:
    results = {}
    for attribute, evaluator in self.evaluators.items():
      results.update({f'{attribute}_{k}': v for k, v in evaluator.run(params).items()})
    results['mean_top1'] = float(np.mean([results[f'{a}_top1'] for a in self.evaluators]))
    return results


def _retrieval(cfg, data, embedder):
  return RetrievalEvaluator(data.split(cfg.split, cfg.get('dataset')), tokenizer=data.tokenizer,
                            image_size=data.image_size, embedder=embedder,
                            max_examples=cfg.get('max_examples'))


def _shapes_zeroshot(cfg, data, embedder):
  return ShapesZeroShotEvaluator(
      data.split(cfg.split), attributes=cfg.get('attributes', ('shape', 'colour', 'size', 'position')),
      tokenizer=data.tokenizer, image_size=data.image_size, embedder=embedder)


EVALUATORS = {'retrieval': _retrieval, 'shapes_zeroshot': _shapes_zeroshot}


def build_evaluators(config, data, graphdef, mesh, params_shardings) -> dict:
  """name -> evaluator for every entry of config.evals."""
  if not config.evals:
    return {}
  embedder = Embedder(graphdef, mesh, params_shardings, config.eval_batch_size)
  evaluators = {}
  for name, cfg in config.evals.items():
    if cfg.get('type') not in EVALUATORS:
      raise ValueError(f'config.evals.{name}: unknown type {cfg.get("type")!r}; '
                       f'use one of {sorted(EVALUATORS)}')
    evaluators[name] = EVALUATORS[cfg.type](cfg, data, embedder)
  return evaluators
