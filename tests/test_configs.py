"""Every recipe in configs/ loads, says how to run it, and builds its model."""


import pytest
from flax import nnx

from conftest import ROOT, load_config
from fdt_jax.models import build_model, count_params, model_config

CONFIGS = sorted(p.name for p in (ROOT / 'configs').glob('*.py'))


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('arg', [None, 'clip'])
def test_config_builds_its_model(name, arg):
  config = load_config(f'configs/{name}', arg)
  cfg = model_config(config.model)
  assert (cfg.fdt is None) == (arg == 'clip')
  params = nnx.state(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  assert count_params(params) > 0
  assert config.batch_size % 8 == 0  # fits the test suite's 8 simulated devices and real hosts


@pytest.mark.parametrize('name', CONFIGS)
def test_docstring_starts_with_the_command(name):
  module = (ROOT / 'configs' / name).read_text()
  docstring = module.split('"""')[1]
  assert f'python -m fdt_jax.main --config=configs/{name}' in docstring.split('\n\n')[1]


def test_unknown_variant_argument_is_refused():
  with pytest.raises(ValueError, match='configs/tiny.py:clip'):
    load_config('configs/tiny.py', 'clipp')


def test_real_data_configs_ask_for_the_data(tmp_path):
  from fdt_jax.data.sources import open_source
  config = load_config('configs/vitb16.py')
  with pytest.raises(ValueError, match='--config.data.name=dir:PATH'):
    open_source(config.data, 'train', 224)
