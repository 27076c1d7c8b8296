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


@pytest.mark.parametrize('name', CONFIGS)
def test_config_names_known_objectives_and_evaluators(name):
  from fdt_jax.eval import EVALUATORS
  from fdt_jax.models import get_family
  from fdt_jax.objectives import check_objectives
  config = load_config(f'configs/{name}')
  check_objectives(config.objectives, get_family(config.model.name))
  assert all(e.type in EVALUATORS for e in config.evals.values())


@pytest.mark.parametrize('name', ['vitb32.py', 'vitb16.py'])
def test_imagenet_zero_shot_runs_less_often_than_retrieval(name):
  from fdt_jax.eval import due_evaluators, every_steps
  config = load_config(f'configs/{name}')
  epoch = config.eval_every_steps
  assert every_steps(config, 'coco') == epoch and every_steps(config, 'imagenet') == 8 * epoch
  evaluators = {'coco': 'c', 'imagenet': 'i'}
  assert due_evaluators(config, evaluators, epoch, is_last=False) == {'coco': 'c'}
  assert due_evaluators(config, evaluators, 8 * epoch, is_last=False) == evaluators
  assert due_evaluators(config, evaluators, 8 * epoch + 1, is_last=True) == evaluators


def parse_config(*overrides):
  """The config as `--config=... --config.KEY=VALUE` gives it (ml_collections' flag parser)."""
  from absl import flags
  from ml_collections import config_flags
  argv = ['prog', f'--config={ROOT / "configs/tiny.py"}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize('max_pool', ['lean', 'plain'])
def test_max_pool_is_a_config_key(max_pool):
  config = parse_config(f'--config.model.fdt.max_pool={max_pool}')
  assert model_config(config.model).fdt.max_pool == max_pool


def test_unknown_max_pool_is_refused_in_one_line():
  config = parse_config('--config.model.fdt.max_pool=fast')
  with pytest.raises(ValueError, match=r"^unknown FDT max_pool 'fast': use one of \('lean', 'plain'\)$"):
    model_config(config.model)


def test_changing_max_pool_continues_the_run():
  from fdt_jax.config import base_config
  from fdt_jax.run.workdir import config_changes, is_safe_change
  old, new = base_config(), base_config()
  new.model.fdt.max_pool = 'plain'
  assert list(config_changes(old, new)) == ['model.fdt.max_pool']
  assert is_safe_change('model.fdt.max_pool')
