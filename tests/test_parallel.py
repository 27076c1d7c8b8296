"""One code path from one device to many hosts: the same run gives the same numbers on
every mesh and on several processes, parameters live sharded as the rules say, and a
step's global batch is one batch (InfoNCE and gradient accumulation see all of it).

Tolerances. A mesh changes the order of float32 sums (partial sums per shard, then an
all-reduce), so runs agree to rounding, not bit for bit. Measured on the micro model
over 4 steps: losses within 3e-7 (relative) of each other, parameters within 5e-7
(float32 epsilon is 1.2e-7). We allow LOSS_RTOL = 1e-5 and PARAM_ATOL = 1e-5. A real
sharding bug (a missing all-reduce, a gradient taken from one shard) moves a parameter
by about one Adam step, the learning rate 3e-3: 300 times more than the tolerance.

Rarely (CI: 1 of 4096 elements of one kernel, 2.3e-5 off) an element whose gradient is
near zero gets an Adam step from rounding noise alone, as the key bias below does; so at
most one element in a thousand of a tensor may exceed PARAM_ATOL.

One parameter is left out of the comparison of trained weights: the attention key bias.
It adds q.b_k to every score of a query alike, so softmax cancels it and its gradient is
exactly zero; only rounding noise reaches Adam, which normalises the noise into steps of
+-lr whose signs differ from mesh to mesh (measured: up to 9e-3 after 4 steps).
"""

import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import ROOT, load_config, micro_config
from fdt_jax import parallel
from fdt_jax.data.sources import build_data
from fdt_jax.data.transforms import normalize_images
from fdt_jax.models import get_family, model_config
from fdt_jax.objectives import combine, infonce
from fdt_jax.train import loop
from fdt_jax.train.optimizer import make_optimizer, path_name
from fdt_jax.train.state import prepare_train_state
from fdt_jax.train.step import forward, train_step
from fdt_jax.run import read_jsonl
from fdt_jax.run.workdir import load_config as load_run_config

pytestmark = pytest.mark.slow  # meshes of 8 devices and two processes

STEPS = 4
LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-5
# Of the largest gradient of the same parameter. Measured: 3.5e-6 between 1, 2 and 4
# microbatches (k backward passes summed in another order); a bug (a microbatch left out,
# negatives only within a microbatch) changes gradients by tens of percent.
GRAD_RTOL = 1e-4

# The run's meshes: name -> config overrides.
MESHES = {
    '1 device': {},  # the default mesh (data=-1) in a process with 1 device
    'data=8': {},  # the same, with 8
    'data=4 x fsdp=2': {'mesh.data': 4, 'mesh.fsdp': 2},
    'data=2 x fsdp=2 x tensor=2': {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2},
}
# Trained by `python -m fdt_jax.main` in the background on that many devices, so that they
# use the second core while this process compiles; the other meshes train in this process.
IN_SUBPROCESS = {'1 device': 1, 'data=4 x fsdp=2': 8}


def run_config(shapes_dir, **overrides):
  """micro_config trained for STEPS steps, logging every step, one checkpoint at the end."""
  config = micro_config(shapes_dir, total_steps=STEPS, log_every_steps=1,
                        checkpoint_every_steps=STEPS, **overrides)
  config.evals = {}
  return config


def named(tree) -> dict:
  """'visual.transformer.resblocks.0.attn.in_proj.kernel' -> leaf."""
  return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run_results(workdir):
  """(train loss of every step, final train state as NumPy) of a finished run."""
  losses = [r['train/loss'] for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
            if 'train/loss' in r]
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                                  item_handlers={'state': ocp.StandardCheckpointHandler()})
  try:
    step = manager.latest_step()
    # Onto one device here, whatever devices and processes saved it.
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one_device),
                          manager.item_metadata(step)['state'])
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  finally:
    manager.close()
  return losses, jax.tree.map(np.asarray, restored['state'])


def assert_same_params(actual, expected, context):
  actual, expected = named(jax.device_get(actual)), named(jax.device_get(expected))
  assert actual.keys() == expected.keys()
  for name in expected:
    a, b = actual[name], expected[name]
    if 'attn.in_proj.bias' in name:  # [q k v, heads, head_dim]: leave out the key bias (docstring)
      a, b = a[[0, 2]], b[[0, 2]]
    off = np.abs(np.asarray(a, np.float64) - b) > PARAM_ATOL
    # Adam divides by sqrt(v): an element whose gradient is ~0 turns rounding noise into a
    # step of up to the learning rate (module docstring). A few such elements per thousand
    # are rounding; a sharding bug moves most of a tensor.
    assert off.sum() <= off.size // 1000, (
        f'{context}: {name}: {off.sum()} of {off.size} elements differ by more than '
        f'{PARAM_ATOL}, up to {np.abs(np.asarray(a, np.float64) - b).max():.2e}')


# --- The same run on every mesh and process count ---------------------------------------


def config_flags(config, base, prefix='--config'):
  """The command-line overrides that turn `base` into `config`. A section whose keys
  change is given whole (`--config.evals={}`): a locked config takes no new keys."""
  flags = []
  for key, value in config.items():
    name = f'{prefix}.{key}'
    if isinstance(value, ml_collections.ConfigDict):
      if set(value) != set(base[key]):
        flags.append(f'{name}={value.to_dict()!r}')
      else:
        flags += config_flags(value, base[key], name)
    elif value != base[key]:
      flags.append(f'{name}={value}')
  return flags


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class CliRun:
  """`python -m fdt_jax.main` in one or several processes sharing a workdir."""
  workdir: str
  processes: list
  logs: list

  def finished(self, timeout=600) -> str:
    for process, log in zip(self.processes, self.logs):
      try:
        process.wait(timeout)
      except subprocess.TimeoutExpired:
        process.kill()
      log.flush()
      with open(log.name) as f:
        assert process.returncode == 0, f'{log.name}:\n' + f.read()[-5000:]
    return self.workdir

  def log(self, i) -> str:
    with open(self.logs[i].name) as f:
      return f.read()


def start_main(args, workdir, log_path, devices, niceness=0, **env):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_DEFAULT_MATMUL_PRECISION': 'highest',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', **env}
  if 'JAX_PROCESS_ID' not in env:
    for var in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES'):
      env.pop(var, None)
  log = open(log_path, 'w')
  command = [sys.executable, '-m', 'fdt_jax.main', *args, f'--workdir={workdir}']
  process = subprocess.Popen(['nice', '-n', str(niceness), *command], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
  return process, log


@pytest.fixture(scope='module')
def cli_runs(shapes_dir, tmp_path_factory):
  """The run as a user starts it, on the IN_SUBPROCESS meshes and on 2 processes x 4
  devices (gloo), started in the background: name -> CliRun."""
  build_data(run_config(shapes_dir), model_config(run_config(shapes_dir).model))  # generated here, once, not by several processes at a time
  tiny = load_config('configs/tiny.py')
  root = tmp_path_factory.mktemp('cli')
  runs = {}
  for name, devices in IN_SUBPROCESS.items():
    args = ['--config=configs/tiny.py', *config_flags(run_config(shapes_dir, **MESHES[name]), tiny)]
    directory = root / name.replace(' ', '')
    process, log = start_main(args, directory, f'{directory}.log', devices)
    runs[name] = CliRun(str(directory), [process], [log])
  args = ['--config=configs/tiny.py', *config_flags(run_config(shapes_dir), tiny)]
  address = f'127.0.0.1:{free_port()}'
  # Niced: it is needed last, so the other runs and this process's tests get the cores first.
  two = [start_main(args, root / 'two_processes', root / f'process_{i}.log', devices=4, niceness=10,
                    JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i))
         for i in range(2)]
  runs['2 processes'] = CliRun(str(root / 'two_processes'), [p for p, _ in two],
                               [log for _, log in two])
  yield runs
  for run in runs.values():
    for process, log in zip(run.processes, run.logs):
      if process.poll() is None:
        process.kill()
        process.wait()
      log.close()


@pytest.fixture(scope='module')
def mesh_runs(shapes_dir, tmp_path_factory):
  """The run trained in this process on the other meshes: name -> workdir."""
  root = tmp_path_factory.mktemp('meshes')
  runs = {}
  for name in [n for n in MESHES if n not in IN_SUBPROCESS]:
    runs[name] = str(root / name.replace(' ', ''))
    loop.train_and_evaluate(run_config(shapes_dir, **MESHES[name]), runs[name])
  return runs


def assert_ran(workdir, config):
  """The run in `workdir` used exactly `config` (the command line reproduced micro_config)."""
  assert load_run_config(workdir).to_dict() == json.loads(config.to_json_best_effort())


def test_every_mesh_trains_the_same_run(shapes_dir, cli_runs, mesh_runs):
  workdirs = {name: cli_runs[name].finished() for name in IN_SUBPROCESS} | mesh_runs
  assert workdirs.keys() == MESHES.keys()
  for name, workdir in workdirs.items():
    assert_ran(workdir, run_config(shapes_dir, **MESHES[name]))
  expected_losses, expected = run_results(workdirs['1 device'])
  # The run really trained: its losses move far more than the meshes may differ (four steps
  # are too few, and each on another batch, to ask for a steady fall; test_train does that).
  assert len(expected_losses) == STEPS and np.ptp(expected_losses) > 1e3 * LOSS_RTOL * expected_losses[0]
  for name, workdir in workdirs.items():
    losses, state = run_results(workdir)
    np.testing.assert_allclose(losses, expected_losses, rtol=LOSS_RTOL, err_msg=name)
    assert_same_params(state['params'], expected['params'], f'{name} vs 1 device')


# --- One step on a data=2 x fsdp=2 x tensor=2 mesh -----------------------------------------


@pytest.fixture(scope='module')
def sharded(shapes_dir):
  """The micro model's train state, created by prepare_train_state on a 2 x 2 x 2 mesh,
  and one global batch of 16 real examples."""
  config = micro_config(shapes_dir, **MESHES['data=2 x fsdp=2 x tensor=2'])
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(rule) for rule in config.sharding_rules)
  data = build_data(config, model_config(config.model))
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract, init = prepare_train_state(config.model, tx, mesh, rules, config.seed)
    state = init()
  batch = parallel.global_batch(next(data.train_iterator(process_index=0, process_count=1)), mesh)
  return types.SimpleNamespace(shapes_dir=shapes_dir, config=config, mesh=mesh, rules=rules,
                               tx=tx, schedule=schedule, graphdef=graphdef, abstract=abstract,
                               state=state, batch=batch, steps={})


def adam_state(opt_state) -> optax.ScaleByAdamState:
  is_adam = lambda s: isinstance(s, optax.ScaleByAdamState)
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
  assert len(found) == 1
  return found[0]


def model_graphdef(s, **model):
  """The graphdef of the model with config.model overrides (remat, dtype): another graph,
  the same parameters."""
  config = micro_config(s.shapes_dir, **{f'model.{k}': v for k, v in model.items()})
  graphdef, abstract, _ = prepare_train_state(config.model, s.tx, s.mesh, s.rules,
                                              config.seed)
  assert jax.tree.structure(abstract) == jax.tree.structure(s.abstract)
  return graphdef


def take_step(s, accumulation_steps=1, **model):
  """One train step from the shared state, jitted as the trainer does (cached):
  -> (new state, metrics, gradients). After one step from zero, Adam's first moment is
  (1 - b1) * gradient, so the gradients are read from it."""
  key = (accumulation_steps, tuple(sorted(model.items())))
  if key not in s.steps:
    shardings = parallel.shardings_of(s.abstract)
    step = jax.jit(
        functools.partial(train_step, graphdef=model_graphdef(s, **model) if model else s.graphdef,
                          tx=s.tx, objective=combine({'infonce': 1.0}), schedule=s.schedule,
                          batch_metrics=get_family('clip').batch_metrics,
                          accumulation_steps=accumulation_steps),
        in_shardings=(shardings, parallel.batch_sharding(s.mesh)),
        out_shardings=(shardings, parallel.replicated(s.mesh)))
    with jax.set_mesh(s.mesh), nnx.logical_axis_rules(s.rules):
      new_state, metrics = step(s.state, s.batch)
    b1 = s.config.optimizer.b1
    grads = jax.tree.map(lambda mu: np.asarray(mu) / (1 - b1), adam_state(new_state.opt_state).mu)
    s.steps[key] = new_state, jax.device_get(metrics), grads
  return s.steps[key]


def forward_jaxpr(s, **model) -> str:
  """The traced (not compiled) forward pass of the model with config.model overrides."""
  graphdef = model_graphdef(s, **model) if model else s.graphdef
  with jax.set_mesh(s.mesh), nnx.logical_axis_rules(s.rules):
    return str(jax.make_jaxpr(functools.partial(forward, graphdef))(s.state.params, s.batch))


def assert_same_grads(actual, expected, context):
  actual, expected = named(actual), named(expected)
  for name in expected:
    scale = np.abs(expected[name]).max()
    np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=GRAD_RTOL * scale,
                               err_msg=f'{context}: {name}')


def test_parameters_and_adam_moments_are_sharded_as_the_rules_say(sharded):
  mesh, params = sharded.mesh, named(sharded.state.params)
  block = 'transformer.resblocks.0'
  expected = {  # name: (spec, shape of one shard)
      'fdt.fdt_tokens': (P('tensor', 'fsdp'), (32, 8)),  # [fdt_tokens 64, fdt_embed 16]
      f'visual.{block}.mlp.c_fc.kernel': (P('fsdp', 'tensor'), (16, 64)),  # [embed 32, mlp 128]
      f'text.{block}.mlp.c_proj.kernel': (P('tensor', 'fsdp'), (64, 16)),  # [mlp, embed]
      f'visual.{block}.attn.in_proj.kernel':  # [width 32, 3, heads 2, head_dim 16]
          (P('fsdp', None, 'tensor', None), (16, 3, 1, 16)),
      f'text.{block}.attn.out_proj.kernel': (P('tensor', None, 'fsdp'), (1, 16, 16)),
      'text.token_embedding.embedding': (P('tensor', 'fsdp'), (64, 16)),  # [vocab 128, embed 32]
      'visual.ln_post.scale': (P(), (32,)),
      f'text.{block}.ln_1.bias': (P(), (32,)),
      'logit_scale': (P(), ()),
  }
  for name, (spec, shard_shape) in expected.items():
    x = params[name]
    assert x.sharding.is_equivalent_to(NamedSharding(mesh, spec), x.ndim), (name, x.sharding.spec)
    assert x.sharding.shard_shape(x.shape) == shard_shape, name

  # Every parameter: the rules applied to the logical names the model gave it.
  rules = dict(sharded.rules)
  is_variable = lambda v: isinstance(v, nnx.Variable)
  variables = jax.tree_util.tree_flatten_with_path(sharded.abstract.params, is_leaf=is_variable)[0]
  for path, variable in variables:
    name, logical = path_name(path), variable.get_metadata()['out_sharding']
    spec = P(*(rules[axis] if axis else None for axis in logical))
    assert params[name].sharding.is_equivalent_to(NamedSharding(mesh, spec), len(logical)), name

  # Adam's moments are laid out like their parameters; its step count is replicated.
  adam = adam_state(sharded.state.opt_state)
  for moments in (named(adam.mu), named(adam.nu)):
    assert moments.keys() == params.keys()
    for name, x in params.items():
      assert moments[name].sharding.is_equivalent_to(x.sharding, x.ndim), name
  assert adam.count.sharding.is_fully_replicated

  # Each device holds its shard only, and the shards are the parameter's pieces.
  for name, x in params.items():
    assert len(x.addressable_shards) == 8
    full = np.asarray(x)
    for shard in x.addressable_shards:
      assert shard.data.shape == x.sharding.shard_shape(x.shape), name
      np.testing.assert_array_equal(shard.data, full[shard.index])
  devices_per_piece = {}
  for shard in params['fdt.fdt_tokens'].addressable_shards:
    devices_per_piece.setdefault(str(shard.index), set()).add(shard.device)
  assert sorted(map(len, devices_per_piece.values())) == [2, 2, 2, 2]  # 4 pieces x 2 data replicas
  # One device holds a third of the model (the matrices are split 4 ways, norms replicated).
  per_device = sum(x.addressable_shards[0].data.nbytes for x in params.values())
  assert per_device < 0.4 * sum(x.nbytes for x in params.values())


@pytest.mark.parametrize('k', [2, 4])
def test_gradient_accumulation_equals_one_step_on_the_whole_batch(sharded, k):
  state, metrics, grads = take_step(sharded, accumulation_steps=k)
  expected_state, expected_metrics, expected_grads = take_step(sharded, accumulation_steps=1)
  assert_same_grads(grads, expected_grads, f'k={k}')
  assert_same_params(state.params, expected_state.params, f'k={k}')
  for name, value in expected_metrics.items():
    np.testing.assert_allclose(metrics[name], value, rtol=LOSS_RTOL, atol=1e-6, err_msg=name)

  # Every example is a negative for every other, not only within its microbatch.
  with jax.set_mesh(sharded.mesh), nnx.logical_axis_rules(sharded.rules):
    batch = {**sharded.batch, 'images': normalize_images(sharded.batch['images'])}  # as the step does
    outputs = jax.jit(functools.partial(forward, sharded.graphdef))(sharded.state.params, batch)
  image, text = (np.asarray(outputs[f'{x}_embedding']) for x in ('image', 'text'))
  loss = lambda rows: float(infonce(image[rows], text[rows], outputs['logit_scale'])[0])
  batch_size = sharded.config.batch_size
  whole_batch = loss(np.arange(batch_size))
  per_microbatch = np.mean([loss(np.arange(j, batch_size, k)) for j in range(k)])
  np.testing.assert_allclose(metrics['loss'], whole_batch, rtol=LOSS_RTOL)
  assert abs(per_microbatch - whole_batch) > 0.1, (per_microbatch, whole_batch)


# config.model.remat_policy -> how the traced checkpoint names its policy
REMAT_POLICY_IN_JAXPR = {'nothing_saveable': 'policy=<function nothing_saveable',
                         'dots_with_no_batch_dims_saveable': 'only_if_no_batch_dims=True',
                         'dots_saveable': 'only_if_no_batch_dims=False'}


@pytest.mark.parametrize('policy', list(REMAT_POLICY_IN_JAXPR))
def test_remat_gives_the_same_loss_and_gradients(sharded, policy):
  state, metrics, grads = take_step(sharded, remat=True, remat_policy=policy)
  expected_state, expected_metrics, expected_grads = take_step(sharded)
  np.testing.assert_allclose(metrics['loss'], expected_metrics['loss'], rtol=LOSS_RTOL)
  assert_same_grads(grads, expected_grads, 'remat')
  assert_same_params(state.params, expected_state.params, 'remat')
  jaxpr = forward_jaxpr(sharded, remat=True, remat_policy=policy)
  assert 'remat' in jaxpr and REMAT_POLICY_IN_JAXPR[policy] in jaxpr  # it is really on, with the policy
  assert 'remat' not in forward_jaxpr(sharded)


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match="unknown remat_policy 'dots'.*--config.model.remat_policy"):
    model_config(micro_config('', **{'model.remat_policy': 'dots'}).model)


def test_bfloat16_compute_trains_float32_parameters(sharded):
  state, metrics, grads = take_step(sharded, dtype='bfloat16')
  _, expected_metrics, _ = take_step(sharded)
  adam = adam_state(state.opt_state)
  for x in jax.tree.leaves((state.params, adam.mu, adam.nu)):
    assert x.dtype == jnp.float32
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  assert np.isfinite(metrics['grad_norm']) and metrics['grad_norm'] > 0
  # bfloat16 keeps 8 bits of mantissa: the loss is the float32 loss to about a percent.
  np.testing.assert_allclose(metrics['loss'], expected_metrics['loss'], rtol=2e-2)
  assert 'bf16[' in forward_jaxpr(sharded, dtype='bfloat16')  # it is really used
  assert 'bf16[' not in forward_jaxpr(sharded)


# --- InfoNCE ---------------------------------------------------------------------------


def test_infonce_sees_the_whole_global_batch_however_it_is_sharded():
  rng = np.random.default_rng(0)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  image = unit(rng.normal(size=(32, 16)))
  text = unit(image + 0.7 * rng.normal(size=(32, 16)))  # matching pairs are closer than others
  logit_scale = np.float32(np.log(1 / 0.07))
  loss_and_grads = jax.jit(jax.value_and_grad(lambda i, t: infonce(i, t, logit_scale)[0],
                                              argnums=(0, 1)))

  one_device = jax.devices()[0]
  single_loss, single_grads = loss_and_grads(jax.device_put(image, one_device),
                                             jax.device_put(text, one_device))
  mesh = parallel.make_mesh(dict(data=8, fsdp=1, tensor=1))
  image8, text8 = (jax.device_put(x, parallel.batch_sharding(mesh)) for x in (image, text))
  assert image8.sharding.shard_shape(image8.shape) == (4, 16)  # 4 of the 32 examples per device
  sharded_loss, sharded_grads = loss_and_grads(image8, text8)
  np.testing.assert_allclose(sharded_loss, single_loss, rtol=1e-6)
  for a, b in zip(sharded_grads, single_grads):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # measured 9e-8; largest 0.38

  def reference(i, t):  # float64, NumPy
    logits = np.exp(np.float64(logit_scale)) * i.astype(np.float64) @ t.astype(np.float64).T
    def xent(l):
      return np.mean(np.log(np.exp(l).sum(1)) - np.diag(l))
    return (xent(logits) + xent(logits.T)) / 2

  whole_batch = reference(image, text)
  per_device = np.mean([reference(image[j:j + 4], text[j:j + 4]) for j in range(0, 32, 4)])
  np.testing.assert_allclose(sharded_loss, whole_batch, rtol=1e-6)
  assert abs(per_device - whole_batch) > 0.5, (per_device, whole_batch)


# --- Several processes (last: it gives the background processes the most time) ----------


def test_two_processes_train_the_same_run_as_one_process(shapes_dir, cli_runs, mesh_runs):
  run = cli_runs['2 processes']
  workdir = run.finished()
  for i in range(2):
    assert f'process {i} of 2, 4 local / 8 global devices' in run.log(i)
  assert_ran(workdir, run_config(shapes_dir))

  # Each host reads its half of the global batch; the numbers are those of one process.
  expected_losses, expected = run_results(mesh_runs['data=8'])
  losses, state = run_results(workdir)
  np.testing.assert_allclose(losses, expected_losses, rtol=LOSS_RTOL)
  assert_same_params(state['params'], expected['params'], '2 processes vs 1 process')

  # Only process 0 writes metrics (one record per step, not two) and TensorBoard events.
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in records if 'train/loss' in r] == list(range(1, STEPS + 1))
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  assert len(events) == 1 and f'.{run.processes[0].pid}.' in events[0], events

  # The checkpoint is complete: both hosts' array shards and data iterators, and the
  # whole train state (step, params, optimizer state) restores.
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert os.listdir(checkpoints) == [str(STEPS)]
  listing = lambda item: set(os.listdir(os.path.join(checkpoints, str(STEPS), item)))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= listing('data')
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= listing('state')
  assert int(state['step']) == STEPS
  assert jax.tree.structure(state) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    assert a.shape == b.shape and a.dtype == b.dtype and np.isfinite(a).all()
