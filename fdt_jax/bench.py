r"""Benchmarks the train step of a config: FDT on and off side by side, and open_clip.

  python -m fdt_jax.bench --config=configs/vitb16.py --batch_size=32 [--steps=5 --json=bench.json]
  python -m fdt_jax.bench --config=configs/vitb16.py --batch_size=128 --compile_only

--compile_only compiles the JAX arms without running them: memory and FLOPs need only XLA's
analyses of the compiled step, not the machine's (shared, noisy) time. --nodonate compiles the
step without donating the train state, to see what donation saves.

For each arm (FDT as configured; FDT with the plain einsum-then-max grounding; CLIP, the
same config with FDT off; open_clip's model of the same shapes in PyTorch, when torch and
open_clip are importable) it reports:
  - compile time (seconds) and XLA temp memory (compiled memory_analysis, bytes);
  - steady-state step time: the median over --steps timed steps after --warmup + 1 steps,
    the JAX arms taking turns step by step so that all see the same machine load (with a
    short pause between steps, SETTLE_S), then open_clip's steps;
  - FLOPs per step from XLA's cost analysis of the step with the FDT grounding in its plain
    form (model FLOPs: see plain_form_flops), the achieved FLOP/s, against the FLOP/s of
    a large matmul measured in the same run (the best of one measurement before and one
    after the steps);
  - the roofline (fdt_jax/roofline.py): this machine's memory bandwidth and balance, measured
    in the same run, and per arm XLA's bytes accessed, the bytes its matmuls and its other
    operations move, and the best fraction of peak those allow.
The batch is synthetic (uniform random pixels and token ids with end-of-text at a random
length): step time does not depend on the data. Prints a table and writes JSON.
"""

import dataclasses
import json
import logging
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags

from fdt_jax import cli, roofline

_FLAGS = cli.define_flags('config', 'multihost')
_BATCH = flags.DEFINE_integer('batch_size', None, 'The global batch; default: the config\'s.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per arm (after the warm-up).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps per arm after compiling.')
_JSON = flags.DEFINE_string('json', '', 'Also write the results here.')
_ARMS = flags.DEFINE_list('arms', 'fdt,fdt_plain,clip,open_clip',
                          'Which arms to run: fdt, fdt_plain, clip, open_clip.')
_OPS = flags.DEFINE_bool('ops', False, 'Also time the FDT head\'s operations alone (ops_timings).')
_THREADS = flags.DEFINE_integer('threads', 0, 'PyTorch threads for open_clip; 0: os.cpu_count().')
_COMPILE_ONLY = flags.DEFINE_bool('compile_only', False,
                                  'Compile the JAX arms and report memory and FLOPs; run nothing.')
_DONATE = flags.DEFINE_bool('donate', True, 'Donate the train state to the step, as training does.')

ARMS = ('fdt', 'fdt_plain', 'clip', 'open_clip')
# A pause before each timed step: PyTorch's and XLA's worker threads spin for a while after
# their work ends, and slowed the next arm's step by up to 4x (measured at the tiny config).
SETTLE_S = 0.3


def synthetic_batch(model_cfg, batch_size: int, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  size, length, vocab = model_cfg.image_size, model_cfg.context_length, model_cfg.vocab_size
  images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
  tokens = rng.integers(1, vocab - 1, (batch_size, length)).astype(np.int32)
  ends = rng.integers(1, length, batch_size)
  tokens[np.arange(batch_size), ends] = vocab - 1  # end-of-text, then padding with 0
  tokens[np.arange(length)[None, :] > ends[:, None]] = 0
  return {'images': images, 'tokens': tokens}


def arm_model_configs(config):
  """{arm: CLIPConfig} for the JAX arms; the config's FDT settings are the 'fdt' arm."""
  from fdt_jax.models import model_config
  base = model_config(config.model)
  fdt = base.fdt
  if fdt is None:  # a CLIP config: FDT arms with the default head
    from fdt_jax.models.fdt import FDTConfig
    fdt = FDTConfig()
  return {'fdt': dataclasses.replace(base, fdt=dataclasses.replace(fdt, max_pool='lean')),
          'fdt_plain': dataclasses.replace(base, fdt=dataclasses.replace(fdt, max_pool='plain')),
          'clip': dataclasses.replace(base, fdt=None)}


def _train_step(config, model_cfg, donate: bool = True):
  """(jitted train step, abstract state, init, mesh) for model_cfg, as train/loop.py builds them."""
  import functools

  import jax

  from fdt_jax import parallel
  from fdt_jax.models import get_family
  from fdt_jax.objectives import combine
  from fdt_jax.train.optimizer import make_optimizer
  from fdt_jax.train.state import prepare_train_state
  from fdt_jax.train.step import train_step

  family = get_family(config.model.name)
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  with jax.set_mesh(mesh):
    graphdef, abstract, init = prepare_train_state(model_cfg, tx, mesh, rules, config.seed,
                                                   teacher=family.teacher)
  shardings = parallel.shardings_of(abstract)
  step = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, objective=combine(dict(config.objectives)),
                        schedule=schedule, seed=config.seed, prepare_batch=family.prepare_batch,
                        batch_metrics=family.batch_metrics, model_cfg=model_cfg,
                        ema_decay=float(config.model.get('ema_decay', 0.0)),
                        accumulation_steps=config.accumulation_steps),
      in_shardings=(shardings, parallel.batch_sharding(mesh)),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=(0,) if donate else ())
  return step, abstract, init, mesh


def plain_form_flops(config, model_cfg, batch) -> float:
  """XLA's FLOPs of the step with the FDT grounding in its plain form, lowered, not compiled.
  XLA counts a loop body once, so the lean grounding's chunk loop would be counted 1/chunks
  times; the plain form's count is the step's model FLOPs (as MFU counts them)."""
  import jax
  from flax import nnx

  from fdt_jax import parallel
  if model_cfg.fdt is not None:
    model_cfg = dataclasses.replace(model_cfg, fdt=dataclasses.replace(model_cfg.fdt, max_pool='plain'))
  rules = tuple(tuple(r) for r in config.sharding_rules)
  with nnx.logical_axis_rules(rules):
    step, abstract, _, mesh = _train_step(config, model_cfg)
    with jax.set_mesh(mesh):
      batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.batch_sharding(mesh)),
                           batch)
      return _flops(step.lower(abstract, batch))


class JaxArm:
  """A compiled train step of one model and its state, stepped on one batch; with
  compile_only, compiled for abstract arrays and never run."""

  def __init__(self, config, model_cfg, batch, compile_only: bool = False, donate: bool = True):
    import jax
    from flax import nnx

    from fdt_jax import parallel

    rules = tuple(tuple(r) for r in config.sharding_rules)
    with nnx.logical_axis_rules(rules):
      step, abstract, init, mesh = _train_step(config, model_cfg, donate)
      with jax.set_mesh(mesh):
        if compile_only:
          self.state = abstract
          self.batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
              x.shape, x.dtype, sharding=parallel.batch_sharding(mesh)), batch)
        else:
          self.state = init()
          self.batch = parallel.global_batch(batch, mesh)
        start = time.perf_counter()
        self.compiled = step.lower(self.state, self.batch).compile()
        self.compile_seconds = time.perf_counter() - start
    self.flops = plain_form_flops(config, model_cfg, batch)
    self.analysis = roofline.compiled_analysis(self.compiled)
    self.params = sum(x.size for x in jax.tree.leaves(self.state.params))

  def step(self) -> float:
    import jax
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start

  def summary(self) -> dict:
    return {'compile_s': self.compile_seconds, 'flops': self.flops, 'params': int(self.params),
            **self.analysis}


def _flops(lowered_or_compiled) -> float:
  analysis = lowered_or_compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


class OpenClipArm:
  """open_clip's CLIP of the same shapes: AdamW, ClipLoss, float32, on the CPU."""

  def __init__(self, model_cfg, batch, threads: int):
    import numpy as np
    import open_clip
    import torch

    from fdt_jax.data.transforms import CLIP_MEAN, CLIP_STD
    from fdt_jax.export.open_clip import open_clip_config

    torch.set_num_threads(threads)
    self.torch = torch
    self.model = open_clip.model.CLIP(**open_clip_config(model_cfg)['model_cfg'], output_dict=True)
    self.model.train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1)
    self.loss = open_clip.loss.ClipLoss()
    images = (batch['images'].astype(np.float32) / 255 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    self.images = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    self.tokens = torch.from_numpy(batch['tokens'].astype(np.int64))
    self.params = sum(p.numel() for p in self.model.parameters())
    self.threads = threads

  def step(self) -> float:
    start = time.perf_counter()
    self.optimizer.zero_grad(set_to_none=True)
    out = self.model(self.images, self.tokens)
    loss = self.loss(out['image_features'], out['text_features'], out['logit_scale'])
    loss.backward()
    self.optimizer.step()
    return time.perf_counter() - start

  def summary(self) -> dict:
    return {'params': int(self.params), 'torch_threads': self.threads}


def ops_timings(rows: int = 256, tokens: int = 16384, batch: int = 32, positions: int = 197,
                dim: int = 512) -> dict:
  """Forward + backward of the FDT head's two operations, new form against old, in seconds:
  sparsemax over [rows, tokens] (bisection vs autodiff through optax's sort-based projection)
  and score + max-pool of [batch, positions, dim] queries against [tokens, dim] (lean vs plain,
  with XLA temp memory)."""
  import jax
  import jax.numpy as jnp
  import optax

  from fdt_jax.ops import max_pooled_scores, sparsemax
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (rows, tokens)) * 0.05
  g = jax.random.normal(keys[1], (rows, tokens))

  def vjp_of(fn):
    return jax.jit(lambda v: jax.vjp(fn, v)[1](g)[0])

  out = {'sparsemax_bisect_s': roofline.median_time(vjp_of(sparsemax), x),
         'sparsemax_autodiff_sort_s': roofline.median_time(vjp_of(jax.vmap(optax.projections.projection_simplex)), x)}
  q = jax.random.normal(keys[2], (batch, positions, dim)) / 700
  table = jax.random.normal(keys[3], (tokens, dim))
  valid = jnp.ones((batch, positions), bool)
  cotangent = jax.random.normal(keys[1], (batch, tokens))

  def plain(q, t, v):
    return jnp.max(jnp.where(v[:, :, None], jnp.einsum('bnd,cd->bnc', q, t), -jnp.inf), axis=1)

  for name, fn in (('max_pool_lean', max_pooled_scores), ('max_pool_plain', plain)):
    step = jax.jit(lambda q, t, fn=fn: jax.vjp(lambda a, b: fn(a, b, valid), q, t)[1](cotangent))
    out[f'{name}_s'] = roofline.median_time(step, q, table, repeats=3)
    out[f'{name}_temp_bytes'] = int(step.lower(q, table).compile().memory_analysis().temp_size_in_bytes)
  return out


def open_clip_available() -> bool:
  try:
    import open_clip  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def run(config, batch_size: int, steps: int, warmup: int, arms=ARMS, threads: int = 0,
        compile_only: bool = False, donate: bool = True) -> dict:
  """Builds the arms, times them in turns and returns the results (see the module docstring).
  compile_only: compile the JAX arms and report their analyses, run no step."""
  unknown = set(arms) - set(ARMS)
  if unknown:
    raise ValueError(f'unknown bench arms {sorted(unknown)}: use some of {ARMS}')
  if (steps < 1 and not compile_only) or warmup < 0:
    raise ValueError(f'--steps={steps} --warmup={warmup}: need at least one timed step')
  from fdt_jax import parallel
  parallel.check_batch_size(batch_size, parallel.make_mesh(config.mesh), config.accumulation_steps)
  # PyTorch first: imported after TensorFlow (which clu brings in) it can crash the process.
  has_open_clip = 'open_clip' in arms and not compile_only and open_clip_available()
  model_cfgs = arm_model_configs(config)
  batch = synthetic_batch(model_cfgs['clip'], batch_size, config.seed)
  threads = threads or os.cpu_count()
  peak, bandwidth = [roofline.matmul_peak_flops()], [roofline.memory_bandwidth()]
  built, skipped = {}, {}
  for arm in arms:
    if arm == 'open_clip':
      if has_open_clip:
        built[arm] = OpenClipArm(model_cfgs['clip'], batch, threads)
      else:
        skipped[arm] = 'not run with --compile_only' if compile_only else 'torch or open_clip is not installed'
      continue
    logging.info('compiling %s', arm)
    built[arm] = JaxArm(config, model_cfgs[arm], batch, compile_only, donate)
  # The JAX arms take turns step by step; open_clip runs its steps in a block of its own
  # after them: interleaved with XLA's, its steps took 2x longer (measured at the tiny config).
  times = {arm: [] for arm in built}
  for group in ([a for a in built if a != 'open_clip'], [a for a in built if a == 'open_clip']):
    for i in range(0 if compile_only else warmup + 1 + steps):  # + 1: torch's first step is slower too
      for arm in group:
        time.sleep(SETTLE_S)
        seconds = built[arm].step()
        if i > warmup:
          times[arm].append(seconds)
  peak.append(roofline.matmul_peak_flops())
  bandwidth.append(roofline.memory_bandwidth())
  peak, bandwidth = max(peak), max(bandwidth)
  results = {'batch_size': batch_size, 'steps': 0 if compile_only else steps, 'warmup': warmup,
             'variant': config.model.get('variant'), 'dtype': model_cfgs['clip'].dtype,
             'remat': model_cfgs['clip'].remat, 'remat_policy': model_cfgs['clip'].remat_policy,
             'donate': donate, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
             'cpu_count': os.cpu_count(), 'matmul_peak_flops_per_s': peak,
             'memory_bytes_per_s': bandwidth, 'machine_balance_flop_per_byte': peak / bandwidth,
             'arms': {}, 'skipped': skipped}
  for arm, a in built.items():
    row = a.summary()
    if times[arm]:
      row.update(step_s=statistics.median(times[arm]), step_times_s=times[arm])
    if row.get('flops') and 'step_s' in row:
      row['achieved_flops_per_s'] = row['flops'] / row['step_s']
      row['fraction_of_peak'] = row['achieved_flops_per_s'] / peak
    if row.get('xla_bytes_accessed'):
      row['intensity_flop_per_byte'] = row['xla_flops'] / row['xla_bytes_accessed']
      row['roofline_fraction'] = roofline.roofline_fraction(
          row['xla_flops'], row['matmul_bytes'], row['other_bytes'], peak, bandwidth)
    results['arms'][arm] = row
  results['ratios'] = ratios(results['arms'])
  return results


def ratios(arms: dict) -> dict:
  """The comparisons the issue's targets are stated in."""
  out = {}
  for name, (a, b, key) in {
      'fdt/clip step time': ('fdt', 'clip', 'step_s'),
      'fdt/clip temp memory': ('fdt', 'clip', 'temp_bytes'),
      'fdt_plain/clip step time': ('fdt_plain', 'clip', 'step_s'),
      'fdt_plain/clip temp memory': ('fdt_plain', 'clip', 'temp_bytes'),
      'clip/open_clip step time': ('clip', 'open_clip', 'step_s'),
  }.items():
    if a in arms and b in arms and arms[b].get(key):
      out[name] = arms[a][key] / arms[b][key]
  return out


def table(results: dict) -> str:
  lines = [f"batch {results['batch_size']}, {results['variant']}, {results['dtype']}, "
           f"remat {results['remat']} ({results['remat_policy']}), donate {results['donate']}, "
           f"XLA_FLAGS '{results['xla_flags']}', "
           f"{results['cpu_count']} CPUs; matmul peak {results['matmul_peak_flops_per_s'] / 1e9:.1f} "
           f"GFLOP/s, memory {results['memory_bytes_per_s'] / 1e9:.1f} GB/s, balance "
           f"{results['machine_balance_flop_per_byte']:.1f} FLOP/byte",
           '| arm | step (s) | compile (s) | GFLOP / step | GFLOP/s | of peak | temp memory (GiB) '
           '| donated (GiB) | FLOP / byte | matmul / other GB | roofline bound |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for arm, row in results['arms'].items():
    def cell(key, scale=1.0, fmt='.2f'):
      return format(row[key] / scale, fmt) if key in row else '-'
    traffic = (f"{cell('matmul_bytes', 1e9)} / {cell('other_bytes', 1e9)}"
               if 'matmul_bytes' in row else '-')
    lines.append(f"| {arm} | {cell('step_s', fmt='.3f')} | {cell('compile_s', fmt='.1f')} | "
                 f"{cell('flops', 1e9, '.1f')} | {cell('achieved_flops_per_s', 1e9, '.1f')} | "
                 f"{cell('fraction_of_peak')} | {cell('temp_bytes', 2**30, '.2f')} | "
                 f"{cell('alias_bytes', 2**30, '.2f')} | {cell('intensity_flop_per_byte', fmt='.1f')} | "
                 f"{traffic} | {cell('roofline_fraction')} |")
  lines += [f'{name}: {value:.3f}' for name, value in results['ratios'].items()]
  lines += [f'{arm}: skipped, {why}' for arm, why in results['skipped'].items()]
  lines += [f'{name}: {value:.4g}' for name, value in results.get('ops', {}).items()]
  return '\n'.join(lines)


def main(argv):
  config = cli.start(argv, _FLAGS.config, _FLAGS.multihost.value)
  try:
    results = run(config, _BATCH.value or config.batch_size, _STEPS.value, _WARMUP.value,
                  tuple(_ARMS.value), _THREADS.value, _COMPILE_ONLY.value, _DONATE.value)
  except ValueError as e:
    cli.fail(str(e))
  if _OPS.value:
    results['ops'] = ops_timings()
  print(table(results))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
