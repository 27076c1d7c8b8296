"""The trainer end to end on the embedded data: it learns, resumes exactly, and refuses
bad input with one clear line without losing anything."""

import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, micro_config
from fdt_jax.run import check_writable, read_jsonl
from fdt_jax.train import loop


def train(config, workdir):
  return loop.train_and_evaluate(config, str(workdir))


def final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, jax.tree.map(np.asarray, restored['state']['params'])


def train_losses(workdir):
  """step -> train loss, the last record winning (a resumed run rewrites its replayed steps)."""
  return {r['step']: r['train/loss'] for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if 'train/loss' in r}


@pytest.mark.slow
def test_tiny_config_learns_and_evaluates(shapes_dir, tmp_path):
  config = micro_config(shapes_dir, total_steps=40)
  config.evals.test.max_examples = 32
  results = train(config, tmp_path)
  losses = list(train_losses(tmp_path).values())
  assert losses[-1] < losses[0] - 0.3, losses
  for key in ['test/i2t_R@1', 'test/t2i_R@10', 'test/rsum', 'test_compositional/rsum',
              'zeroshot/shape_top1', 'zeroshot/colour_top1', 'zeroshot/mean_top1']:
    assert key in results and 0 <= results[key] <= (600 if 'rsum' in key else 100), key
  records = read_jsonl(tmp_path / 'metrics.jsonl')
  assert any('train/fdt/active_tokens_image' in r for r in records)
  assert records[-1]['step'] == 40 and 'test/rsum' in records[-1]


class Crash(Exception):
  pass


@pytest.mark.slow
def test_resume_after_a_crash_is_bit_for_bit(shapes_dir, tmp_path, monkeypatch):
  config = micro_config(shapes_dir, total_steps=20, checkpoint_every_steps=8)
  config.evals = {}
  train(config, tmp_path / 'straight')

  # Crash at step 13: the checkpoint of step 8 is the latest; steps 9-13 are lost.
  real_global_batch = loop.parallel.global_batch
  calls = {'n': 0}

  def crashing(batch, mesh):
    calls['n'] += 1
    if calls['n'] == 13:
      raise Crash()
    return real_global_batch(batch, mesh)

  monkeypatch.setattr(loop.parallel, 'global_batch', crashing)
  with pytest.raises(Crash):
    train(config, tmp_path / 'crashed')
  monkeypatch.setattr(loop.parallel, 'global_batch', real_global_batch)
  assert final_params(tmp_path / 'crashed')[0] == 8
  train(config, tmp_path / 'crashed')  # the same command again resumes at step 8

  step_a, params_a = final_params(tmp_path / 'straight')
  step_b, params_b = final_params(tmp_path / 'crashed')
  assert step_a == step_b == 20
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
    np.testing.assert_array_equal(a, b)
  assert train_losses(tmp_path / 'straight') == train_losses(tmp_path / 'crashed')


def run_main(*args, env=None):
  """`python -m fdt_jax.main ...` in a fresh process, as a user runs it."""
  return subprocess.run([sys.executable, '-m', 'fdt_jax.main', *args], cwd=ROOT, text=True,
                        capture_output=True, env={**os.environ, **(env or {})}, timeout=300)


def error_line(result):
  assert result.returncode != 0
  lines = [l for l in result.stderr.splitlines() if l.startswith(('error:', 'FATAL'))]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def test_unknown_config_key_is_refused(tmp_path):
  result = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.bacth_size=8')
  assert 'bacth_size' in error_line(result)


def test_unwritable_workdir_is_refused(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(PermissionError, match='not writable'):
    check_writable(str(blocker / 'run'))


def test_batch_size_that_does_not_divide_over_devices(shapes_dir, tmp_path):
  config = micro_config(shapes_dir, batch_size=12)  # 8 simulated devices
  with pytest.raises(ValueError, match='batch_size 12 does not divide.*multiple of 8'):
    train(config, tmp_path)


def test_missing_tokenizer_file(shapes_dir, tmp_path):
  config = micro_config(shapes_dir)
  config.data.tokenizer = str(tmp_path / 'missing.model')
  with pytest.raises(FileNotFoundError, match='no sentencepiece model at .*missing.model'):
    train(config, tmp_path / 'run')


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_keeps_the_good_checkpoint(shapes_dir, tmp_path):
  config = micro_config(shapes_dir, total_steps=10, checkpoint_every_steps=1, log_every_steps=1)
  config.evals = {}
  # Step 1 runs at 1e-3; step 2 at 1e29 blows the parameters up.
  config.optimizer.update(warmup_init_lr=1e-3, learning_rate=1e30, warmup_steps=10)
  with pytest.raises(loop.NonFiniteLossError, match='diverged at step 2.*last good checkpoint is step 1'):
    train(config, tmp_path)
  step, params = final_params(tmp_path)
  assert step == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']


@pytest.mark.slow
def test_exported_checkpoint_reimports_and_starts_a_new_run(shapes_dir, tmp_path):
  """fdt_jax.export on a workdir, then import_open_clip and config.model.init_from."""
  from fdt_jax.export import import_open_clip
  from fdt_jax.export.__main__ import export_run
  from fdt_jax.models import model_config

  config = micro_config(shapes_dir, total_steps=4, checkpoint_every_steps=4)
  config.evals = {}
  train(config, tmp_path / 'run')
  assert export_run(str(tmp_path / 'run'), str(tmp_path / 'out')) == 4
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'fdt_config.json', 'fdt_head.safetensors', 'open_clip_config.json',
      'open_clip_model.safetensors', 'tokenizer.model']
  _, trained = final_params(tmp_path / 'run')
  imported = import_open_clip(str(tmp_path / 'out'), model_config(config.model))
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(imported), strict=True):
    np.testing.assert_array_equal(a, b)

  # A new run from the exported weights: after one step at learning rate 0 it holds them still.
  config.model.init_from = str(tmp_path / 'out')
  config.update(total_steps=1)
  config.optimizer.update(learning_rate=0.0, warmup_init_lr=0.0)
  train(config, tmp_path / 'finetune')
  _, started = final_params(tmp_path / 'finetune')
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(started), strict=True):
    np.testing.assert_array_equal(a, b)


def test_export_of_a_missing_run_says_so(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'fdt_jax.export', f'--workdir={tmp_path}',
                           f'--out={tmp_path / "out"}'], cwd=ROOT, capture_output=True, text=True)
  assert error_line(result) == f'error: no config.json in {tmp_path}: is it the --workdir of a training run?'


def test_a_checkpoint_from_before_the_ema_field_restores_into_the_train_state(tmp_path):
  from fdt_jax.run import Checkpointer
  from fdt_jax.train.state import TrainState
  old = {'step': np.int32(7), 'params': {'w': np.arange(6.0, dtype=np.float32).reshape(2, 3)},
         'opt_state': {'mu': np.ones(3, np.float32)}}
  with Checkpointer(str(tmp_path), asynchronous=False) as checkpointer:
    checkpointer.save(7, old, force=True)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), np.int32),
                        params={'w': jax.ShapeDtypeStruct((2, 3), np.float32)},
                        opt_state={'mu': jax.ShapeDtypeStruct((3,), np.float32)})
  with Checkpointer(str(tmp_path), read_only=True) as checkpointer:
    state = checkpointer.restore(7, abstract)
  assert isinstance(state, TrainState) and state.ema_params is None and int(state.step) == 7
  np.testing.assert_array_equal(state.params['w'], old['params']['w'])
  np.testing.assert_array_equal(state.opt_state['mu'], old['opt_state']['mu'])
