"""A run never loses work and never reports what did not happen. Each fault is injected:
a changed config, a signal at the worst moment, damaged checkpoint files, impossible
settings, duplicate records, a resume, an early divergence."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, load_config, micro_config
from fdt_jax.data import convert
from fdt_jax.run import Checkpointer, load_run, read_jsonl
from fdt_jax.train import loop
from test_convert import encode, picture, read_all, tar_bytes

STEPS = 8


def config_of(shapes_dir, **overrides):
  """The micro model, 8 steps, a checkpoint every 4, a log line every step."""
  config = micro_config(shapes_dir, **{'total_steps': STEPS, 'checkpoint_every_steps': 4,
                                       'log_every_steps': 1, **overrides})
  config.evals = {}
  return config


def params_of(workdir):
  """The parameters of the latest checkpoint, as saved."""
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return jax.tree.map(np.asarray, restored['state']['params'])


def snapshot(workdir) -> dict:
  """{relative path: sha256} of every file: what 'left as it was' compares."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, workdir)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


def train_steps(workdir) -> list[int]:
  return [r['step'] for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if 'train/loss' in r]


@pytest.fixture(scope='module')
def trained(shapes_dir, tmp_path_factory):
  """A finished 8-step run (checkpoints 4 and 8). Tests copy it before changing anything."""
  workdir = tmp_path_factory.mktemp('reliability') / 'run'
  loop.train_and_evaluate(config_of(shapes_dir), str(workdir))
  return workdir


@pytest.fixture
def copy_of(trained, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(trained, target)
  return target


def assert_same_params(actual, expected):
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(a, b)


# --- 1. A changed config -----------------------------------------------------------------


@pytest.mark.parametrize('key, value', [('model.fdt.enabled', False), ('seed', 1),
                                        ('optimizer.learning_rate', 0.5), ('data.shapes.seed', 3)])
@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
def test_a_config_that_changes_the_run_is_refused_and_the_workdir_kept(
    shapes_dir, copy_of, key, value):
  config = config_of(shapes_dir, **{key: value})
  before = snapshot(copy_of)
  with pytest.raises(ValueError, match=rf'differs from the run .*{key}.*--accept_config_change') as e:
    loop.train_and_evaluate(config, str(copy_of))
  assert '\n' not in str(e.value)
  assert snapshot(copy_of) == before


@pytest.mark.slow
def test_safe_changes_continue_the_run_and_are_recorded(shapes_dir, copy_of):
  config = config_of(shapes_dir, total_steps=STEPS + 2, keep_checkpoints=5)
  loop.train_and_evaluate(config, str(copy_of))
  assert Checkpointer(str(copy_of), read_only=True).latest_step() == STEPS + 2
  changes = read_jsonl(copy_of / 'config_changes.jsonl')
  assert [c['changes'] for c in changes] == [{'keep_checkpoints': [3, 5],
                                              'total_steps': [STEPS, STEPS + 2]}]
  assert json.loads((copy_of / 'config.json').read_text())['total_steps'] == STEPS + 2


@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
def test_an_accepted_change_of_the_model_is_stopped_by_the_checkpoint_in_one_line(
    shapes_dir, copy_of):
  before = snapshot(copy_of)
  with pytest.raises(ValueError, match=r'checkpoint 8 .* is not of this model: .*fdt') as e:
    loop.train_and_evaluate(config_of(shapes_dir, **{'model.fdt.enabled': False}), str(copy_of),
                            accept_config_change=True)
  assert '\n' not in str(e.value) and len(str(e.value)) < 400
  assert snapshot(copy_of) == before


@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
def test_evaluate_and_export_read_the_model_of_the_run(shapes_dir, trained):
  from fdt_jax.evaluate import evaluate
  from fdt_jax.run import abstract_params, restore_params
  clip = config_of(shapes_dir, **{'model.fdt.enabled': False})
  clip.evals = {'test': dict(type='retrieval', split='test', max_examples=32)}
  with pytest.raises(ValueError, match=r"model differs from the run's .*model\.fdt\.enabled"):
    evaluate(clip, str(trained))
  # What export loads is the run's model, FDT head included.
  assert load_run(str(trained)).model.fdt is not None
  # A checkpoint asked for another model's parameters says so instead of loading a part.
  mesh = jax.make_mesh((1, 1, 1), ('data', 'fsdp', 'tensor'))
  _, abstract = abstract_params(clip.model, mesh, tuple(tuple(r) for r in clip.sharding_rules))
  with pytest.raises(ValueError, match=r'not of this model: .*not in the model \(fdt\.'):
    restore_params(str(trained), abstract)


# --- 2. Preemption -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_save_decision_saves_the_step_it_reports(
    shapes_dir, trained, tmp_path, monkeypatch, sig):
  """The signal lands between the decision to save (not at step 2) and the metrics write of
  step 2: the loop sees it at step 3, saves step 3, and says 3. Rerun: the same run."""
  real_write = loop.write_train_metrics

  def write_then_signal(writer, history, checkpointer):
    real_write(writer, history, checkpointer)
    if history[-1][0] == 2:
      os.kill(os.getpid(), sig)

  monkeypatch.setattr(loop, 'write_train_metrics', write_then_signal)
  with pytest.raises(loop.Preempted, match=rf'{sig.name}: saved step 3') as e:
    loop.train_and_evaluate(config_of(shapes_dir), str(tmp_path))
  assert e.value.step == 3
  assert Checkpointer(str(tmp_path), read_only=True).latest_step() == 3
  assert (tmp_path / 'checkpoint_checksums' / '3.json').exists()
  assert signal.getsignal(sig) is not None and signal.getsignal(sig) != write_then_signal

  monkeypatch.setattr(loop, 'write_train_metrics', real_write)
  loop.train_and_evaluate(config_of(shapes_dir), str(tmp_path))
  assert_same_params(params_of(tmp_path), params_of(trained))
  assert train_steps(tmp_path) == list(range(1, STEPS + 1))  # one line per step (problem 6)


@pytest.mark.slow
def test_sigterm_exits_with_the_documented_code_after_a_durable_save(shapes_dir, tmp_path):
  from test_parallel import config_flags
  config = config_of(shapes_dir, total_steps=1000, checkpoint_every_steps=1000)
  command = [sys.executable, '-m', 'fdt_jax.main', '--config=configs/tiny.py',
             f'--workdir={tmp_path}', *config_flags(config, load_config('configs/tiny.py'))]
  process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  lines = []
  for line in process.stderr:  # the first logged train step: training is under way
    lines.append(line)
    if 'train/loss' in line:
      process.send_signal(signal.SIGTERM)
      break
  rest = process.stderr.read()
  assert process.wait(timeout=300) == loop.PREEMPTED_EXIT_CODE, ''.join(lines) + rest
  reported = int(rest.split('stopped: SIGTERM: saved step ')[1].split()[0])
  assert Checkpointer(str(tmp_path), read_only=True).latest_step() == reported
  assert (tmp_path / 'checkpoint_checksums' / f'{reported}.json').exists()


@pytest.mark.slow
def test_the_preemption_notifier_of_several_hosts_stops_the_run_after_a_durable_save(
    shapes_dir, trained, tmp_path, monkeypatch):
  """With jax.distributed, SIGTERM reaches the loop through orbax's reached_preemption (the
  same answer on every host): injected at step 5, the run saves step 5, waits for it and
  stops, instead of saving in the background and training on."""
  monkeypatch.setattr(Checkpointer, 'reached_preemption', lambda self, step: step == 5)
  with pytest.raises(loop.Preempted, match=r'SIGTERM: saved step 5') as e:
    loop.train_and_evaluate(config_of(shapes_dir), str(tmp_path))
  assert e.value.step == 5 == Checkpointer(str(tmp_path), read_only=True).latest_step()
  assert max(train_steps(tmp_path)) == 5  # it did not train on
  monkeypatch.undo()
  loop.train_and_evaluate(config_of(shapes_dir), str(tmp_path))
  assert_same_params(params_of(tmp_path), params_of(trained))


@pytest.mark.slow
def test_kill_9_loses_only_the_steps_after_the_last_checkpoint(shapes_dir, trained, tmp_path):
  """SIGKILL (no handler can run) once step 6 is logged: the rerun resumes from step 4 and
  ends with the undisturbed run's parameters bit for bit, one metrics line per step."""
  from test_parallel import config_flags
  command = [sys.executable, '-m', 'fdt_jax.main', '--config=configs/tiny.py',
             f'--workdir={tmp_path}',
             *config_flags(config_of(shapes_dir), load_config('configs/tiny.py'))]
  process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  for line in process.stderr:
    if '[6]' in line and 'train/loss' in line:  # step 6 logged: checkpoint 4 is behind it
      process.kill()
      break
  process.wait(timeout=300)
  assert process.returncode == -signal.SIGKILL
  # Checkpoint 4 is saved in the background: finished by now, or (rarely) not yet.
  assert Checkpointer(str(tmp_path), read_only=True).latest_step() in (4, None)
  loop.train_and_evaluate(config_of(shapes_dir), str(tmp_path))
  assert_same_params(params_of(tmp_path), params_of(trained))
  assert train_steps(tmp_path) == list(range(1, STEPS + 1))


# --- 3. Damaged checkpoints --------------------------------------------------------------


def largest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / 'state') for f in fs]
  return max(files, key=os.path.getsize)


def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def overwrite_middle(path):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.seek(size // 2)
    f.write(np.random.default_rng(0).bytes(min(64, size // 4)))


@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
@pytest.mark.parametrize('damage', [truncate, os.remove, overwrite_middle])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_used(copy_of, damage):
  damaged_file = largest_file(copy_of / 'checkpoints' / '8')
  damage(damaged_file)
  checkpointer = Checkpointer(str(copy_of))
  assert checkpointer.latest_intact_step() == 4
  checkpointer.close()
  assert sorted(os.listdir(copy_of / 'checkpoints')) == ['4']
  kept = copy_of / 'checkpoints_damaged' / '8'  # moved, not deleted
  assert kept.is_dir() and os.path.exists(
      os.path.join(kept, os.path.relpath(damaged_file, copy_of / 'checkpoints' / '8'))) == (
          damage is not os.remove)


@pytest.mark.slow
def test_a_run_resumes_from_the_newest_intact_checkpoint_to_the_same_result(
    shapes_dir, trained, copy_of, caplog):
  overwrite_middle(largest_file(copy_of / 'checkpoints' / '8'))
  with caplog.at_level('WARNING'):
    loop.train_and_evaluate(config_of(shapes_dir), str(copy_of))
  assert any('checkpoint 8 is damaged' in r.getMessage() and 'checkpoints_damaged' in r.getMessage()
             for r in caplog.records)
  assert_same_params(params_of(copy_of), params_of(trained))
  assert train_steps(copy_of) == list(range(1, STEPS + 1))


@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
def test_when_no_checkpoint_is_intact_the_run_stops_and_keeps_them_all(shapes_dir, copy_of):
  for step in ('4', '8'):
    truncate(largest_file(copy_of / 'checkpoints' / step))
  with pytest.raises(ValueError, match=r'no checkpoint .* is intact \(steps \[8, 4\]'):
    loop.train_and_evaluate(config_of(shapes_dir), str(copy_of))
  assert sorted(os.listdir(copy_of / 'checkpoints_damaged')) == ['4', '4.checksums.json', '8',
                                                                  '8.checksums.json']


@pytest.mark.slow  # uses the trained run (a 14 s fixture): full suite
def test_evaluate_refuses_a_damaged_checkpoint(copy_of):
  from fdt_jax.run import restore_params_on_host
  from fdt_jax.run.workdir import load_config
  overwrite_middle(largest_file(copy_of / 'checkpoints' / '8'))
  with pytest.raises(ValueError, match=r'checkpoint 8 .* is damaged .*--step'):
    restore_params_on_host(str(copy_of), load_config(str(copy_of)).model)


# --- 4. Settings that cannot work --------------------------------------------------------


@pytest.mark.parametrize('key, value, message', [
    ('total_steps', -5, r'config.total_steps = -5: it must be an integer >= 1'),
    ('checkpoint_every_steps', 0, r'config.checkpoint_every_steps = 0: it must be'),
    ('log_every_steps', 0, r'config.log_every_steps = 0: it must be'),
    ('accumulation_steps', 0, r'config.accumulation_steps = 0: it must be'),
    ('keep_checkpoints', 0, r'config.keep_checkpoints = 0: it must be an integer >= 1'),
    ('model.fdt.temperature', 0.0, r'config.model.fdt.temperature = 0.0: it must be a number > 0'),
    ('data.name', 'dir:/nonexistent', r"config.data.name = 'dir:/nonexistent': there is no directory"),
    ('data.name', 'no_such_dataset', r"config.data.name = 'no_such_dataset': TFDS does not know"),
])
def test_impossible_settings_are_refused_before_anything_is_written(
    shapes_dir, tmp_path, key, value, message):
  workdir = tmp_path / 'new'
  with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
    loop.train_and_evaluate(config_of(shapes_dir, **{key: value}), str(workdir))
  assert '\n' not in str(e.value)
  assert not workdir.exists()


# --- 5. Duplicate records in the converter -----------------------------------------------


def test_duplicate_keys_are_written_once_and_counted(tmp_path):
  jpeg = lambda seed: encode(picture(seed), 'JPEG', quality=90)
  members = [('a.jpg', jpeg(1)), ('a.txt', b'first a'),
             ('a.jpg', jpeg(2)), ('a.txt', b'a again, back to back'),
             ('b.jpg', jpeg(3)), ('b.txt', b'b'),
             ('a.jpg', jpeg(4)), ('a.txt', b'a again, far apart'),
             ('c.jpg', jpeg(5)), ('c.txt', b'c')]
  (tmp_path / 'in.tar').write_bytes(tar_bytes(members))
  stats = convert.convert([str(tmp_path / 'in.tar')], str(tmp_path / 'out'), workers=1,
                          log=lambda line: None)
  captions = [r['captions'][0].decode() for r in read_all(tmp_path / 'out', 'train')]
  assert captions == ['first a', 'b', 'c']
  assert stats['records_read'] == 5 and stats['records_written'] == 3
  assert stats['skipped'] == {'duplicate_key': 2}
  assert stats['records_read'] == stats['records_written'] + sum(stats['skipped'].values())


# --- 7. A divergence before the first checkpoint -----------------------------------------


@pytest.mark.slow
def test_a_divergence_before_any_checkpoint_says_so(shapes_dir, tmp_path):
  config = config_of(shapes_dir, total_steps=10, checkpoint_every_steps=5)
  config.optimizer.update(warmup_init_lr=1e-3, learning_rate=1e30, warmup_steps=10)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r'diverged at step 2 .*no checkpoint was saved before it') as e:
    loop.train_and_evaluate(config, str(tmp_path))
  assert 'None' not in str(e.value)
