"""python -m fdt_jax.bench on the micro config: every arm compiled and stepped, the numbers it
reports consistent with each other. (Speed itself lives in the benchmark, not in tests.)"""

import json
import statistics
import subprocess
import sys

import pytest

from conftest import ROOT, micro_config
from fdt_jax import bench

pytestmark = pytest.mark.slow  # compiles three train steps and imports PyTorch: ~45 s here


@pytest.fixture(scope='module')
def results():
  return bench.run(micro_config(''), batch_size=8, steps=2, warmup=0)


def test_every_jax_arm_reports_time_flops_and_memory(results):
  arms = results['arms']
  assert {'fdt', 'fdt_plain', 'clip'} <= set(arms)
  for name in ('fdt', 'fdt_plain', 'clip'):
    row = arms[name]
    assert len(row['step_times_s']) == 2 and row['step_s'] == statistics.median(row['step_times_s'])
    assert row['flops'] > 0 and row['temp_bytes'] > 0 and row['compile_s'] > 0
    assert row['achieved_flops_per_s'] == pytest.approx(row['flops'] / row['step_s'])
    assert row['fraction_of_peak'] == pytest.approx(
        row['achieved_flops_per_s'] / results['matmul_peak_flops_per_s'])
  # The FDT head adds parameters and work to the same towers; both FDT arms have the same model.
  assert arms['fdt']['params'] == arms['fdt_plain']['params'] > arms['clip']['params']
  # Model FLOPs: the lean grounding is counted in its plain form (XLA counts a loop body once).
  assert arms['fdt']['flops'] == arms['fdt_plain']['flops'] > arms['clip']['flops']
  assert results['ratios']['fdt/clip step time'] == pytest.approx(arms['fdt']['step_s'] / arms['clip']['step_s'])


def test_roofline_of_every_arm(results):
  assert results['machine_balance_flop_per_byte'] == pytest.approx(
      results['matmul_peak_flops_per_s'] / results['memory_bytes_per_s'])
  for name in ('fdt', 'fdt_plain', 'clip'):
    row = results['arms'][name]
    assert row['matmul_bytes'] > 0 and row['other_bytes'] > 0
    assert row['intensity_flop_per_byte'] == pytest.approx(row['xla_flops'] / row['xla_bytes_accessed'])
    assert 0 < row['roofline_fraction'] <= 1
    # The train state is donated: the new state's buffers are the old one's.
    assert row['alias_bytes'] >= 4 * row['params']


def test_compile_only_reports_memory_and_flops_without_running():
  results = bench.run(micro_config(''), batch_size=8, steps=0, warmup=0, compile_only=True, donate=False)
  assert set(results['arms']) == {'fdt', 'fdt_plain', 'clip'} and results['steps'] == 0
  assert 'compile_only' in results['skipped']['open_clip']
  for row in results['arms'].values():
    assert 'step_s' not in row and row['temp_bytes'] > 0 and row['flops'] > 0
    assert row['alias_bytes'] == 0  # --nodonate
  assert set(results['ratios']) == {'fdt/clip temp memory', 'fdt_plain/clip temp memory'}
  assert '| fdt | - |' in bench.table(results)


def test_open_clip_arm_runs_the_same_architecture_or_says_why_not(results):
  if 'open_clip' in results['skipped']:
    assert 'not installed' in results['skipped']['open_clip']
    return
  row = results['arms']['open_clip']
  # open_clip's CLIP of the same shapes has exactly the CLIP arm's parameters.
  assert row['params'] == results['arms']['clip']['params']
  assert row['step_s'] > 0 and 'clip/open_clip step time' in results['ratios']


def test_table_lists_every_arm_and_ratio(results):
  text = bench.table(results)
  for arm in results['arms']:
    assert f'| {arm} |' in text
  for name in results['ratios']:
    assert name in text
  json.dumps(results)  # what --json writes


def test_unknown_arm_and_zero_steps_are_refused():
  with pytest.raises(ValueError, match='unknown bench arms'):
    bench.run(micro_config(''), batch_size=8, steps=1, warmup=0, arms=('fdt', 'tpu'))
  with pytest.raises(ValueError, match='batch'):
    bench.run(micro_config(''), batch_size=3, steps=1, warmup=0)  # 8 devices here
  with pytest.raises(ValueError, match='at least one timed step'):
    bench.run(micro_config(''), batch_size=8, steps=0, warmup=0)


def test_command_line_writes_json(tmp_path):
  out = tmp_path / 'bench.json'
  subprocess.run([sys.executable, '-m', 'fdt_jax.bench', '--config=configs/tiny.py', '--batch_size=8',
                  '--steps=1', '--warmup=0', '--arms=fdt,clip', '--config.model.variant=micro',
                  '--config.model.vision.image_size=32', f'--json={out}'],
                 cwd=ROOT, check=True, capture_output=True, timeout=300)
  assert set(json.loads(out.read_text())['arms']) == {'fdt', 'clip'}


def test_ops_timings_report_both_forms_of_both_operations():
  ops = bench.ops_timings(rows=4, tokens=256, batch=2, positions=5, dim=8)
  assert set(ops) == {'sparsemax_bisect_s', 'sparsemax_autodiff_sort_s', 'max_pool_lean_s',
                      'max_pool_plain_s', 'max_pool_lean_temp_bytes', 'max_pool_plain_temp_bytes'}
  assert all(v > 0 for v in ops.values())
