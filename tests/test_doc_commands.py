"""Every `python -m fdt_jax...` command in the README's code blocks and tables, launch/README.md
and the docstrings of configs/ and fdt_jax/ is accepted as written: its module parses the
flags, loads the config file and applies every --config.* override (each command in its own
process, with absl's app.run stopping after the parsing). Optional parts in [] are checked too,
with N -> 1; templates (`configs/X.py`, `--flag=...`, a trailing `...`) are left out. The
commands that read the tiny run (evaluate, export, inspect) also run to the end, on a micro run."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # a process per command

COMMAND = re.compile(r'python3? -m (fdt_jax[\w.]*)([^\n`#&;|]*)')

# Runs the module as `python -m` does, with absl's app.run replaced by: parse, load the config.
PARSE = '''
import json, runpy, sys
from absl import app, flags
name, args = sys.argv[1], json.loads(sys.argv[2])

def parse_only(main, argv=None, flags_parser=None):
  (flags_parser or flags.FLAGS)(['prog', *args])
  if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
    flags.FLAGS.config.seed  # the file and its overrides are applied on first access
  sys.exit(0)

app.run = parse_only
sys.argv = ['prog', *args]
runpy.run_module(name, run_name='__main__', alter_sys=True)
sys.exit('the module did not call absl.app.run')
'''


def documented_texts():
  """(where, text) of the README's code blocks and table rows and of the docstrings."""
  for readme in (ROOT / 'README.md', ROOT / 'launch' / 'README.md'):
    text = readme.read_text()
    for language, block in re.findall(r'```(\w*)\n(.*?)```', text, re.S):
      if language in ('', 'bash', 'sh'):  # not the Python examples
        yield readme.name, block
    yield readme.name, '\n'.join(line for line in text.splitlines() if line.startswith('|'))
  for path in sorted([*(ROOT / 'configs').glob('*.py'), *(ROOT / 'fdt_jax').rglob('*.py')]):
    if docstring := ast.get_docstring(ast.parse(path.read_text())):
      yield str(path.relative_to(ROOT)), docstring


def documented_commands():
  found = {}
  for where, text in documented_texts():
    for module, rest in COMMAND.findall(text.replace('\\\n', ' ')):
      required = shlex.split(re.sub(r'\[[^\]]*\]', ' ', rest))
      if not required or any(a == '...' or a.endswith('=...') or 'configs/X.py' in a
                             for a in required):
        continue  # a mention in prose, or a template for the reader to fill in
      args = [a for a in shlex.split(rest.replace('[', ' ').replace(']', ' '))
              if a != '...' and 'KEY=VALUE' not in a]
      args = [re.sub(r'=N$', '=1', a) for a in args]
      found.setdefault((module, tuple(args)), where)
  return [pytest.param(module, list(args), id=f'{where}: {module} {" ".join(args)}'[:120])
          for (module, args), where in found.items()]


def test_the_commands_are_found():
  modules = {param.values[0] for param in documented_commands()}
  assert {'fdt_jax.main', 'fdt_jax.evaluate', 'fdt_jax.export', 'fdt_jax.data.convert'} <= modules


@pytest.mark.parametrize('module, args', documented_commands())
def test_documented_command_is_accepted(module, args):
  result = subprocess.run([sys.executable, '-c', PARSE, module, json.dumps(args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr.strip().splitlines()[-3:]


def commands_on(workdir: str) -> list[tuple[str, list[str]]]:
  """The documented commands that read the finished run `workdir` (the tiny run: evaluate,
  export, inspect), as (module, args), optional parts included."""
  return [(module, args) for module, args in (p.values for p in documented_commands())
          if f'--workdir={workdir}' in args and module != 'fdt_jax.main']


def test_the_commands_on_the_tiny_run_run_as_written(shapes_dir, tmp_path):
  """evaluate, export and inspect as the README gives them for runs/tiny, run to the end on
  a micro run made by fdt_jax.main: only the workdir (and --out) moves into tmp_path, and
  the micro model's overrides are appended where a --config is given."""
  from conftest import load_config, micro_config
  from test_parallel import config_flags
  micro = micro_config(shapes_dir, total_steps=2, checkpoint_every_steps=1)  # --step=N -> 1
  micro.evals.test.max_examples = 32
  micro.evals.test_compositional.max_examples = 32
  micro_flags = config_flags(micro, load_config('configs/tiny.py'))
  workdir = tmp_path / 'tiny'
  run = lambda module, args: subprocess.run(
      [sys.executable, '-m', module, *args], cwd=tmp_path, capture_output=True, text=True,
      timeout=600, env={**os.environ, 'PYTHONPATH': str(ROOT)})
  result = run('fdt_jax.main', [f'--config={ROOT}/configs/tiny.py', f'--workdir={workdir}',
                                *micro_flags])
  assert result.returncode == 0, result.stderr[-2000:]
  commands = commands_on('runs/tiny')
  assert {module for module, _ in commands} >= {'fdt_jax.evaluate', 'fdt_jax.export',
                                                'fdt_jax.inspect'}, commands
  for module, args in commands:
    args = [a.replace('runs/tiny', str(workdir)).replace('configs/', f'{ROOT}/configs/')
            .replace('exported/tiny', str(tmp_path / 'exported')) for a in args]
    # N was read as 1 (documented_commands); a sample of 1 is refused: the micro test split.
    args = ['--max_examples=32' if a == '--max_examples=1' else a for a in args]
    if any(a.startswith('--config=') for a in args):
      args += micro_flags
    result = run(module, args)
    assert result.returncode == 0, (module, args[:3], result.stderr[-2000:])
    if module == 'fdt_jax.evaluate':
      assert 'test/rsum' in result.stdout
  assert (tmp_path / 'exported' / 'open_clip_model.safetensors').exists()
  assert (workdir / 'inspect').is_dir()
