"""Every `python -m fdt_jax...` command in the README's code blocks and tables, launch/README.md
and the docstrings of configs/ and fdt_jax/ is accepted as written: its module parses the
flags, loads the config file and applies every --config.* override (each command in its own
process, with absl's app.run stopping after the parsing). Optional parts in [] are checked too,
with N -> 1; templates (`configs/X.py`, `--flag=...`, a trailing `...`) are left out."""

import ast
import json
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
    for block in re.findall(r'```(?:bash|sh)?\n(.*?)```', text, re.S):
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
