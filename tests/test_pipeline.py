"""The grain pipeline: per-host shares add up to the single-host batch, mixtures follow
their weights, and the iterator resumes at the exact next batch."""

import numpy as np

from fdt_jax.data.pipeline import train_iterator


def tag(record, rng):
  """A stand-in for MakeExample: the record's id and a random draw from its own RNG."""
  return {'id': record['id'], 'draw': rng.integers(1 << 30)}


def source(first, count):
  return [{'id': first + i} for i in range(count)]


def batches(it, n):
  return [next(it) for _ in range(n)]


def test_hosts_split_the_same_global_batches():
  kwargs = dict(seed=3, batch_size=8)
  whole = batches(train_iterator([source(0, 30)], tag, process_index=0, process_count=1, **kwargs), 5)
  shares = [batches(train_iterator([source(0, 30)], tag, process_index=i, process_count=2, **kwargs), 5)
            for i in range(2)]
  for step, batch in enumerate(whole):
    # The same examples with the same random draws (augmentation, caption choice), in any order.
    together = sorted(zip(np.concatenate([s[step]['id'] for s in shares]),
                          np.concatenate([s[step]['draw'] for s in shares])))
    assert together == sorted(zip(batch['id'], batch['draw']))


def test_every_epoch_sees_every_record_once_in_a_new_order():
  it = train_iterator([source(0, 24)], tag, seed=0, batch_size=8, process_index=0, process_count=1)
  epochs = [np.concatenate([b['id'] for b in batches(it, 3)]) for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(24))
  assert list(epochs[0]) != list(epochs[1])


def test_mixture_follows_its_weights():
  it = train_iterator([source(0, 100), source(1000, 10)], tag, weights=[0.8, 0.2], seed=0,
                      batch_size=50, process_index=0, process_count=1)
  ids = np.concatenate([b['id'] for b in batches(it, 40)])
  assert abs(np.mean(ids >= 1000) - 0.2) < 0.02


def test_restored_iterator_continues_with_the_next_batch():
  make = lambda: train_iterator([source(0, 30)], tag, seed=1, batch_size=4, process_index=0,
                                process_count=1)
  it = make()
  batches(it, 5)
  state = it.get_state()
  expected = batches(it, 3)
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(expected, batches(resumed, 3)):
    np.testing.assert_array_equal(a['id'], b['id'])
    np.testing.assert_array_equal(a['draw'], b['draw'])
