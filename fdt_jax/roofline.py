"""What this machine can do and what a compiled step asks of it: the roofline the bench reports.

  peak       FLOP/s of a large float32 matmul            (matmul_peak_flops)
  bandwidth  bytes/s of a large elementwise add           (memory_bandwidth)
  balance    peak / bandwidth, FLOP per byte: a piece of work with fewer FLOPs per byte
             moved than this is bound by memory, not by arithmetic

and, from a compiled executable (compiled_analysis): XLA's memory analysis (temp, argument,
output and donated-alias bytes) and cost analysis (FLOPs, bytes accessed), and the bytes
its top-level operations move split into matmuls (dot / convolution and the fusions around
them) and everything else (layer norms, softmax, GELU, transposes, the optimizer's update).
`roofline_fraction` bounds the step's fraction of peak from those numbers.

XLA's cost analysis counts the body of a loop once, whatever its trip count; the split of
bytes reads the entry computation only (a while loop counts its carried state). Steps with
loops (the lean grounding's chunks, sparsemax's iterations) are undercounted there.
"""

import re
import statistics
import time

PEAK_SIZE = 2048  # the matmul measuring peak FLOP/s: [n, n] @ [n, n]
BANDWIDTH_ELEMENTS = 1 << 26  # 256 MiB of float32 per array: far beyond any cache


def median_time(fn, *args, repeats: int = 5) -> float:
  import jax
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_flops() -> float:
  """FLOP/s of a float32 [n, n] @ [n, n] on the default device, median of 5."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (PEAK_SIZE, PEAK_SIZE), jnp.float32)
  return 2 * PEAK_SIZE**3 / median_time(jax.jit(lambda x: x @ x), a)


def memory_bandwidth() -> float:
  """Bytes/s of x <- x + 1 over BANDWIDTH_ELEMENTS float32 (one read, one write), in place
  (the buffer is donated: a fresh output would time the page faults of new memory too),
  median of 5."""
  import jax
  import jax.numpy as jnp
  add = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  x = jax.block_until_ready(add(jnp.zeros((BANDWIDTH_ELEMENTS,), jnp.float32)))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    x = jax.block_until_ready(add(x))
    times.append(time.perf_counter() - start)
  return 2 * 4 * BANDWIDTH_ELEMENTS / statistics.median(times)


_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
                'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_SHAPE = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([\d,]*)\]')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\S+)\s+([\w\-]+)\((.*)$')
_FREE = {'parameter', 'constant', 'bitcast', 'get-tuple-element', 'tuple', 'after-all',
         'partition-id', 'replica-id', 'iota'}
_MATMUL = re.compile(r'\s(dot|convolution)\(|custom_call_target="[^"]*(matmul|onednn|conv)', re.I)


def _bytes_of(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    n = 1
    for d in filter(None, dims.split(',')):
      n *= int(d)
    total += n * _DTYPE_BYTES[dtype]
  return total


def _operands(rest: str) -> str:
  """The operand list of an instruction: `rest` up to the parenthesis that closes it."""
  depth = 1
  for i, ch in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth == 0:
      return rest[:i]
  return rest


def traffic_by_kind(hlo_text: str) -> dict:
  """{'matmul_bytes', 'other_bytes'}: bytes read and written by the entry computation's
  operations (operands + results), matmuls and the fusions that contain one apart."""
  computations, name, body, entry = {}, None, [], None
  for line in hlo_text.splitlines():
    if line.endswith('{') and ('->' in line or line.startswith('ENTRY')):
      name = line.split()[1 if line.startswith('ENTRY') else 0].lstrip('%')
      entry = name if line.startswith('ENTRY') else entry
      body = []
    elif line.startswith('}') and name:
      computations[name], name = body, None
    elif name:
      body.append(line)
  has_matmul = {n: any(_MATMUL.search(l) for l in lines) for n, lines in computations.items()}
  out = {'matmul_bytes': 0, 'other_bytes': 0}
  result_bytes = {}  # instruction -> the bytes of its result: operands are printed by name
  for line in computations.get(entry, []):
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode, rest = match.groups()
    result_bytes[name] = _bytes_of(shape)
    if opcode in _FREE:
      continue
    operands = re.findall(r'%([\w.\-]+)', _operands(rest))
    called = re.findall(r'calls=%?([\w.\-]+)', rest)
    matmul = opcode in ('dot', 'convolution') or bool(_MATMUL.search(line)) or any(
        has_matmul.get(c, False) for c in called)
    moved = result_bytes[name] + sum(result_bytes.get(o, 0) for o in operands)
    out['matmul_bytes' if matmul else 'other_bytes'] += moved
  return out


def compiled_analysis(compiled) -> dict:
  """XLA's memory and cost analysis of a compiled executable, and its traffic by kind."""
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {'temp_bytes': int(memory.temp_size_in_bytes),
          'argument_bytes': int(memory.argument_size_in_bytes),
          'output_bytes': int(memory.output_size_in_bytes),
          'alias_bytes': int(memory.alias_size_in_bytes),
          'xla_flops': float(cost.get('flops', 0.0)),
          'xla_bytes_accessed': float(cost.get('bytes accessed', 0.0)),
          **traffic_by_kind(compiled.as_text())}


def roofline_fraction(flops: float, matmul_bytes: float, other_bytes: float, peak: float,
                      bandwidth: float) -> float:
  """The best fraction of peak a step can reach if its matmuls ran at the matmul peak (or at
  memory speed, whichever is slower) and everything else at memory speed:
  (flops / peak) / (max(flops / peak, matmul_bytes / bandwidth) + other_bytes / bandwidth)."""
  compute = flops / peak
  return compute / (max(compute, matmul_bytes / bandwidth) + other_bytes / bandwidth)
