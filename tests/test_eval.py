"""Evaluation: metrics on embeddings whose answers are known, padded global batches,
and a run on TFDS data (tfds.testing.mock_data, no downloads)."""

import jax
import numpy as np
from absl import flags
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from conftest import micro_config
from fdt_jax import parallel
from fdt_jax.eval.embed import Embedder
from fdt_jax.eval.metrics import (classification_metrics, reranked_ranks, retrieval_metrics,
                                  retrieval_ranks, top_k)
from fdt_jax.data.pipeline import EvalArrays
from fdt_jax.data.sources import build_data
from fdt_jax.models import build_model, clip_config, model_config
from fdt_jax.run import abstract_params
from fdt_jax.train import loop


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_retrieval_perfect_embeddings_recall_everything():
  images = unit(np.eye(6, 8))
  owners = np.repeat(np.arange(6), 3)  # three captions per image
  texts = images[owners] + 0.01 * unit(np.random.default_rng(0).normal(size=(18, 8)))
  m = retrieval_metrics(images, unit(texts), owners)
  assert all(m[f'{d}_R@{k}'] == 100 for d in ('i2t', 't2i') for k in (1, 5, 10))
  assert m['rsum'] == 600


def test_retrieval_known_partial_case():
  # Four images on the axes; captions 0-3 belong to images 0-3 in order, but caption 3
  # points at image 0. Image 3 has a second caption (4) that points at it correctly.
  images = np.eye(4)
  texts = np.stack([images[0], images[1], images[2], images[0], images[3]])
  owners = np.array([0, 1, 2, 3, 3])
  m = retrieval_metrics(images, texts, owners)
  assert m['t2i_R@1'] == pytest.approx(100 * 4 / 5)  # caption 3 misses
  # Image 0 ties between captions 0 and 3 (ties count against it): rank 1, not 0.
  assert m['i2t_R@1'] == pytest.approx(100 * 3 / 4)
  assert m['i2t_R@5'] == 100


def test_retrieval_random_embeddings_score_near_chance():
  rng = np.random.default_rng(1)
  images, texts = unit(rng.normal(size=(500, 64))), unit(rng.normal(size=(1000, 64)))
  m = retrieval_metrics(images, texts, np.repeat(np.arange(500), 2))
  assert m['t2i_R@1'] < 1.0 and m['t2i_R@10'] < 5.0  # chance: 0.2% and 2%


def test_collapsed_embeddings_score_zero_not_perfect():
  images, texts = np.ones((10, 4)) / 2, np.ones((10, 4)) / 2
  m = retrieval_metrics(images, texts, np.arange(10))
  assert m['t2i_R@1'] == 0 and m['i2t_R@1'] == 0
  assert classification_metrics(images, np.ones((3, 4)) / 2, np.zeros(10, int))['top1'] == 0


def test_classification_top1_and_top5():
  classes = np.eye(10)
  images = np.stack([classes[i] + 0.5 * classes[(i + 1) % 10] for i in range(10)])
  labels = np.arange(10)
  labels[:4] = (labels[:4] + 1) % 10  # the second-best class for the first four
  m = classification_metrics(unit(images), classes, labels)
  assert m['top1'] == pytest.approx(60) and m['top5'] == 100


@pytest.mark.parametrize('count', [1, 37, 64, 65])
def test_embedder_pads_and_returns_every_item_once(count):
  mesh = parallel.make_mesh({'data': 4, 'fsdp': 2})
  cfg = clip_config('micro')
  with jax.set_mesh(mesh):
    graphdef, abstract = abstract_params(cfg, mesh, parallel.DEFAULT_RULES)
    params = jax.device_put(nnx.state(build_model(cfg, 0), nnx.Param), parallel.shardings_of(abstract))
    embedder = Embedder(graphdef, mesh, parallel.shardings_of(abstract), batch_size=16)
    tokens = np.random.default_rng(2).integers(1, 63, size=(count, 8)).astype(np.int32)
    tokens[:, -1] = 63
    out = embedder(params, 'tokens', EvalArrays({'inputs': tokens, 'label': np.arange(count) * 10}))
  np.testing.assert_array_equal(out['label'], np.arange(count) * 10)  # each item once, in order
  model = build_model(cfg, 0)
  np.testing.assert_allclose(out['embedding'], model.encode_text(tokens).embedding, atol=1e-5)


@pytest.mark.slow
def test_training_on_coco_captions_and_zero_shot_on_tfds_classification(shapes_dir, tmp_path):
  """The real code path on TFDS datasets; mock_data supplies random records."""
  config = micro_config(shapes_dir, total_steps=4, log_every_steps=2, checkpoint_every_steps=4)
  shapes_tokenizer = build_data(config, model_config(config.model)).tokenizer.model_path
  config.data.update(name='coco_captions', tokenizer=shapes_tokenizer)
  config.evals = {
      'coco': dict(type='retrieval', split='test', max_examples=12),
      'imagenet': dict(type='zeroshot_classification', dataset='imagenet2012', split='validation',
                       templates=['a photo of a {}.', 'a {}.']),
      'cifar100': dict(type='zeroshot_classification', dataset='cifar100', split='test'),
  }
  with tfds.testing.mock_data(num_examples=24):
    results = loop.train_and_evaluate(config, str(tmp_path))
  for key in ['coco/rsum', 'coco/t2i_R@1', 'imagenet/top1', 'imagenet/top5', 'cifar100/top1']:
    assert key in results and np.isfinite(results[key]), key


@pytest.mark.slow
def test_unknown_and_unprepared_tfds_datasets_say_what_to_do(shapes_dir, tmp_path):
  config = micro_config(shapes_dir)
  config.evals = {'x': dict(type='zeroshot_classification', dataset='imagenet2013')}
  with pytest.raises(ValueError, match="TFDS does not know a dataset called 'imagenet2013'"):
    loop.train_and_evaluate(config, str(tmp_path))
  config.evals = {'x': dict(type='zeroshot_classification', dataset='cifar10',
                            data_dir=str(tmp_path / 'empty'))}
  with pytest.raises(FileNotFoundError, match='not prepared.*tfds build cifar10'):
    loop.train_and_evaluate(config, str(tmp_path))


def test_eval_batches_read_each_hosts_share_in_order_with_or_without_workers():
  from fdt_jax.data.pipeline import EvalImages, eval_batches
  from fdt_jax.data.transforms import resize_center_crop
  from fdt_jax.eval.zeroshot import LabelOf
  rng = np.random.default_rng(3)
  source = [{'image': rng.integers(0, 256, (20, 30, 3), np.uint8), 'label': 100 + i} for i in range(11)]
  images = EvalImages(source, 16, label_of=LabelOf('label'))

  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags, as under app.run
    flags.FLAGS.mark_as_parsed()

  def read(workers):  # host 1 of 2, global batches of 4: positions 2 3 | 6 7 | 10 (11 pads)
    return list(eval_batches(images, batch_size=4, process_index=1, process_count=2,
                             num_workers=workers))

  in_process, with_workers = read(0), read(2)
  assert [b['index'].tolist() for b in in_process] == [[2, 3], [6, 7], [10, -1]]
  assert [b['label'].tolist() for b in in_process] == [[102, 103], [106, 107], [110, 0]]
  np.testing.assert_array_equal(in_process[1]['inputs'][0], resize_center_crop(source[6]['image'], 16))
  assert not in_process[2]['inputs'][1].any()  # the padding row
  for a, b in zip(in_process, with_workers, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def brute_force_reranked_ranks(sims, scores, text_to_image, k):
  """Each query's list: its k most similar by `sims` re-ordered by `scores`, then the rest
  by `sims`; the rank is the position of the (best) right answer. Continuous values: no ties."""
  t2i, i2t = [], []
  for t, own in enumerate(text_to_image):
    order = list(np.argsort(-sims[t]))
    order = sorted(order[:k], key=lambda i: -scores[t, i]) + order[k:]
    t2i.append(order.index(own))
  for i in range(sims.shape[1]):
    order = list(np.argsort(-sims[:, i]))
    order = sorted(order[:k], key=lambda t: -scores[t, i]) + order[k:]
    t2i_owner = np.asarray(text_to_image)[order]
    i2t.append(int(np.flatnonzero(t2i_owner == i)[0]))
  return np.asarray(t2i), np.asarray(i2t)


@pytest.mark.parametrize('k', [1, 3, 7, 40])
def test_itm_reranking_reorders_the_top_k_like_a_brute_force_reordering(k):
  rng = np.random.default_rng(k)
  images, texts = unit(rng.normal(size=(10, 6))), unit(rng.normal(size=(30, 6)))
  owners = np.repeat(np.arange(10), 3)
  scores = rng.normal(size=(30, 10))  # an ITM score for every (caption, image)
  t2i_rank, i2t_rank = retrieval_ranks(images, texts, owners)
  got = reranked_ranks(t2i_rank, i2t_rank, top_k(texts, images, min(k, 10)),
                       top_k(images, texts, min(k, 30)), lambda t, i: scores[t, i], owners)
  want = brute_force_reranked_ranks(texts @ images.T, scores, owners, k)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  if k >= 30:  # everything re-ranked: the ranks are the score matrix's own
    want_t2i = (scores >= scores[np.arange(30), owners][:, None]).sum(1) - 1
    np.testing.assert_array_equal(got[0], want_t2i)


def check_itm_reranked_retrieval(config, count=8, k=3):
  """retrieval with itm_rerank=k on `count` images of a fusion model's config: the `itm_*`
  recalls equal those of each query's top k by the model's own embeddings re-ordered by its
  own ITM log-odds, every pair scored here directly; the contrastive recalls are the plain
  evaluator's."""
  import jax.numpy as jnp
  from fdt_jax.data.pipeline import caption_text, resize_center_crop
  from fdt_jax.data.transforms import normalize_images
  from fdt_jax.eval import build_evaluators
  from fdt_jax.eval.metrics import recalls
  config.eval_batch_size = 16
  config.evals = {'rerank': dict(type='retrieval', split='test', max_examples=count, itm_rerank=k)}
  cfg = model_config(config.model)
  data = build_data(config, cfg)
  model = build_model(config.model, 0)
  graphdef, params = nnx.split(model, nnx.Param)
  mesh = parallel.make_mesh(config.mesh)
  params = jax.device_put(params, parallel.replicated(mesh))
  with jax.set_mesh(mesh):
    evaluator = build_evaluators(config, data, graphdef, mesh, jax.tree.map(lambda x: x.sharding, params))['rerank']
    got = evaluator.run(params)

  source = data.split('test')
  images = normalize_images(jnp.asarray(np.stack([resize_center_crop(source[i]['image'], cfg.image_size)
                                                  for i in range(count)])))
  captions = [(caption_text(c), i) for i in range(count) for c in source[i]['captions']]
  tokens = jnp.asarray(data.tokenizer.encode([c for c, _ in captions]))
  owners = np.asarray([i for _, i in captions])
  image_embedding, text_embedding = model.encode_image(images).embedding, model.encode_text(tokens).embedding
  patches, text_features = model.image_features(images), model.text_features(tokens)
  n = len(captions)
  logits = model.match_logits(jnp.repeat(text_features, count, 0), jnp.repeat(tokens, count, 0),
                              jnp.tile(patches, (n, 1, 1)))
  scores = np.asarray(logits[:, 1] - logits[:, 0]).reshape(n, count)
  want = recalls(*brute_force_reranked_ranks(np.asarray(text_embedding @ image_embedding.T),
                                             scores, owners, k))
  for name, value in want.items():
    np.testing.assert_allclose(got[f'itm_{name}'], value, atol=1e-4, err_msg=name)
  plain = retrieval_metrics(np.asarray(image_embedding), np.asarray(text_embedding), owners)
  for name, value in plain.items():
    np.testing.assert_allclose(got[name], value, atol=1e-4, err_msg=name)
