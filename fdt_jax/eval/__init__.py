"""Evaluators chosen by name from the config: `config.evals.NAME = dict(type=TYPE, ...)`.

Each runs every `every_steps` (default: config.eval_every_steps; 0: at the end only)
and all run at the end of training. Types:

  retrieval                image<->text Recall@1/5/10 and rsum on a split with
                           captions (dataset: default the training data; split; max_examples;
                           itm_rerank: K, for a fusion model, also the top K re-ranked by
                           its ITM head, eval/fusion.py)
  zeroshot_classification  top-1/top-5 on a TFDS classification dataset (dataset, split,
                           templates, label_key, data_dir, max_examples)
  shapes_zeroshot          zero-shot classification of single-object 'shapes' images by
                           each attribute (split, attributes, max_examples)
  masked_words             a fusion encoder's (mamo) masked-word accuracy with the true and
                           with another image, and its ITM accuracy (split, max_examples)
  concept_recovery         MVPTR's (mvptr) masked tags recovered from the image, with the true
                           and with another image, on 'shapes' (split, max_examples)
  pointing_game            MVPTR's phrase grounding: a phrase's best patch in the named object's
                           cell, on 'shapes' (split, max_examples)

Each evaluator has `run(params) -> {metric: value}`; all share one Embedder.
"""

import numpy as np

from fdt_jax.data.sources import label_names, open_tfds
from fdt_jax.eval.embed import Embedder
from fdt_jax.eval.fusion import ITMRerankedRetrieval, MaskedWordsEvaluator
from fdt_jax.eval.retrieval import RetrievalEvaluator
from fdt_jax.eval.zeroshot import LabelOf, ZeroShotEvaluator, imagenet_prompts


class ShapesZeroShotEvaluator:
  """CLIP-style zero-shot accuracy per attribute (shape, colour, size, position) on the
  single-object images of a 'shapes' split."""

  def __init__(self, source, *, attributes, max_examples=None, **kwargs):
    from fdt_jax.data import shapes
    singles = [i for i in range(len(source)) if len(source[i]['objects']['shape']) == 1]
    if not singles:
      raise ValueError('shapes_zeroshot: the split has no single-object images')
    self.evaluators = {}
    for attribute in attributes:
      if attribute not in shapes.ZERO_SHOT:
        raise ValueError(f'unknown shapes attribute {attribute!r}: use one of {sorted(shapes.ZERO_SHOT)}')
      task = shapes.ZERO_SHOT[attribute]
      self.evaluators[attribute] = ZeroShotEvaluator(
          source, LabelOf('objects', task.label, 0), task.classnames, task.templates, indices=singles, max_examples=max_examples, **kwargs)

  def run(self, params) -> dict:
    results = {}
    for attribute, evaluator in self.evaluators.items():
      results.update({f'{attribute}_{k}': v for k, v in evaluator.run(params).items()})
    results['mean_top1'] = float(np.mean([results[f'{a}_top1'] for a in self.evaluators]))
    return results


def _retrieval(cfg, data, common):
  if cfg.get('itm_rerank'):
    return ITMRerankedRetrieval(data.split(cfg.get('split', 'test'), cfg.get('dataset')),
                                rerank=int(cfg.itm_rerank), max_examples=cfg.get('max_examples'),
                                **common)
  return RetrievalEvaluator(data.split(cfg.get('split', 'test'), cfg.get('dataset')),
                            max_examples=cfg.get('max_examples'), **common)


def _shapes_zeroshot(cfg, data, common):
  return ShapesZeroShotEvaluator(
      data.split(cfg.get('split', 'test')),
      attributes=cfg.get('attributes', ('shape', 'colour', 'size', 'position')),
      max_examples=cfg.get('max_examples'), **common)


def _zeroshot_classification(cfg, data, common):
  """A TFDS classification dataset: imagenet2012 gets the CLIP paper's curated class
  names; others their TFDS label names. Templates: CLIP's 80 ImageNet prompts, or
  cfg.templates (a list of '...{}...' strings)."""
  data_dir = cfg.get('data_dir') or data.config.data.data_dir
  source = open_tfds(cfg.dataset, cfg.get('split', 'test'), data_dir)
  imagenet_names, imagenet_templates = imagenet_prompts()
  if cfg.dataset.startswith('imagenet'):
    classnames = imagenet_names
  else:
    classnames = label_names(cfg.dataset, data_dir, cfg.get('label_key', 'label'))
  templates = list(cfg.get('templates') or imagenet_templates)
  label_key = cfg.get('label_key', 'label')
  return ZeroShotEvaluator(source, LabelOf(label_key), classnames, templates,
                           max_examples=cfg.get('max_examples'), **common)


def _masked_words(cfg, data, common):
  return MaskedWordsEvaluator(data.split(cfg.get('split', 'test'), cfg.get('dataset')),
                              max_examples=cfg.get('max_examples'), **common)


def _shapes_only(cfg, data, kind):
  name = cfg.get('dataset') or data.config.data.name
  if name != 'shapes':
    raise ValueError(f'evaluator type {kind!r} needs the concepts the shapes data knows, not '
                     f'{name!r}: evaluate it on shapes or leave it out of config.evals')


def _concept_recovery(cfg, data, common):
  from fdt_jax.eval.concepts import ConceptRecoveryEvaluator  # imports the shapes generator
  _shapes_only(cfg, data, 'concept_recovery')
  return ConceptRecoveryEvaluator(data.split(cfg.get('split', 'test')),
                                  max_examples=cfg.get('max_examples'), **common)


def _pointing_game(cfg, data, common):
  from fdt_jax.eval.concepts import PointingGameEvaluator
  from fdt_jax.models import model_config
  _shapes_only(cfg, data, 'pointing_game')
  patch_size = model_config(data.config.model).vision.patch_size
  return PointingGameEvaluator(data.split(cfg.get('split', 'test')), patch_size=patch_size,
                               max_examples=cfg.get('max_examples'), **common)


EVALUATORS = {
    'concept_recovery': _concept_recovery,
    'masked_words': _masked_words,
    'pointing_game': _pointing_game,
    'retrieval': _retrieval,
    'shapes_zeroshot': _shapes_zeroshot,
    'zeroshot_classification': _zeroshot_classification,
}


def build_evaluators(config, data, graphdef, mesh, params_shardings) -> dict:
  """name -> evaluator for every entry of config.evals."""
  if not config.evals:
    return {}
  embedder = Embedder(graphdef, mesh, params_shardings, config.eval_batch_size,
                      num_workers=config.data.num_workers)
  evaluators = {}
  for name, cfg in config.evals.items():
    if cfg.get('type') not in EVALUATORS:
      raise ValueError(f'config.evals.{name}: unknown type {cfg.get("type")!r}; '
                       f'use one of {sorted(EVALUATORS)}')
    common = dict(tokenizer=data.tokenizer, image_size=data.image_size, embedder=embedder)
    evaluators[name] = EVALUATORS[cfg.type](cfg, data, common)
  return evaluators


def every_steps(config, name: str) -> int:
  """How often evaluator `name` runs: its own every_steps, else config.eval_every_steps."""
  every = config.evals[name].get('every_steps')
  return int(config.eval_every_steps if every is None else every)


def due_evaluators(config, evaluators: dict, step: int, is_last: bool) -> dict:
  """The evaluators to run after `step`: those whose interval divides it; all at the end."""
  return {name: evaluator for name, evaluator in evaluators.items()
          if is_last or ((every := every_steps(config, name)) > 0 and step % every == 0)}
