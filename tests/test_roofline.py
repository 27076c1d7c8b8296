"""fdt_jax.roofline: the bytes a compiled step moves, split into matmuls and the rest, and the
bound they put on its fraction of the matmul peak (checked on hand-counted programs)."""

import jax
import jax.numpy as jnp
import pytest

from fdt_jax import roofline


def test_traffic_splits_matmuls_from_elementwise_work():
  a, b, x = jnp.ones((64, 32)), jnp.ones((32, 16)), jnp.ones((1000,))
  compiled = jax.jit(lambda a, b, x: (a @ b, jnp.exp(x))).lower(a, b, x).compile()
  traffic = roofline.traffic_by_kind(compiled.as_text())
  # The matmul reads a and b and writes [64, 16]; exp reads and writes 1000 floats.
  assert traffic == {'matmul_bytes': 4 * (64 * 32 + 32 * 16 + 64 * 16), 'other_bytes': 4 * 2 * 1000}


def test_compiled_analysis_reports_memory_flops_and_donation():
  x = jnp.ones((256, 256))
  step = jax.jit(lambda x: x @ x + 1.0, donate_argnums=0)
  analysis = roofline.compiled_analysis(step.lower(x).compile())
  assert analysis['xla_flops'] >= 2 * 256**3
  assert analysis['argument_bytes'] == analysis['output_bytes'] == 4 * 256**2
  assert analysis['alias_bytes'] == 4 * 256**2  # the output reuses the donated input's buffer
  not_donated = roofline.compiled_analysis(jax.jit(lambda x: x @ x + 1.0).lower(x).compile())
  assert not_donated['alias_bytes'] == 0


def test_roofline_fraction():
  peak, bandwidth = 100e9, 10e9  # balance 10 FLOP / byte
  # Matmuls at peak (1 s), elementwise work moving 10 GB (1 s): at most half of peak.
  assert roofline.roofline_fraction(100e9, 1e9, 10e9, peak, bandwidth) == pytest.approx(0.5)
  # A matmul too thin to be compute-bound (20 GB at 10 GB/s: 2 s for 1 s of arithmetic).
  assert roofline.roofline_fraction(100e9, 20e9, 0.0, peak, bandwidth) == pytest.approx(0.5)
  assert roofline.roofline_fraction(100e9, 1e9, 0.0, peak, bandwidth) == 1.0


def test_machine_measurements_are_positive():
  assert roofline.memory_bandwidth() > 1e8 and roofline.matmul_peak_flops() > 1e8
