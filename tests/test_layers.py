"""The packages are layers that import only downward (README, "Code map"). Walks every
import in fdt_jax with `ast`, including those inside functions."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'fdt_jax'

# Lower ranks are imported by higher ones, never the other way round. Two different
# parts of the same rank may not import each other either (data and models, eval and
# export). A new top-level module or package must be placed here.
RANKS = {
    '__init__': 0, 'ops': 0, 'parallel': 0, 'atomic_write': 0,
    'cli': 1, 'config': 1,
    'models': 2, 'data': 2,
    'objectives': 3, 'formats': 3,
    'run': 4,
    'eval': 5, 'export': 5,
    'train': 6, 'roofline': 6,
    'main': 7, 'evaluate': 7, 'inspect': 7, 'bench': 7,
    'studies': 8,  # experiments that drive the CLIs above in subprocesses
}
NEVER = {  # spelled out although the ranks imply them: the rules the issue names
    'data': {'models', 'objectives', 'formats', 'run', 'train', 'eval', 'export'},
    'eval': {'train', 'export'},
    'export': {'train', 'eval'},
    'train': {'export', 'main', 'evaluate'},
    'evaluate': {'train'},
    'models': {'objectives', 'data'},
    'ops': {'models', 'objectives', 'data'},
}


def part_of(module: str) -> str:
  """'fdt_jax.data.sources' -> 'data'; 'fdt_jax' -> '__init__'."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def module_name(path: pathlib.Path) -> str:
  relative = path.relative_to(PACKAGE.parent).with_suffix('')
  parts = list(relative.parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, imported fdt_jax module) for every import statement, wherever it is."""
  tree = ast.parse(path.read_text(), str(path))
  package = module_name(path) if path.name == '__init__.py' else module_name(path).rpartition('.')[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative
        base = package.split('.')[:len(package.split('.')) - node.level + 1]
        found.append((node.lineno, '.'.join(base + ([node.module] if node.module else []))))
      elif node.module:
        found.append((node.lineno, node.module))
        found += [(node.lineno, f'{node.module}.{alias.name}') for alias in node.names
                  if node.module == 'fdt_jax']  # from fdt_jax import parallel
  return [(line, name) for line, name in found if name == 'fdt_jax' or name.startswith('fdt_jax.')]


def violations(files) -> list[str]:
  found = []
  for path in files:
    importer = part_of(module_name(path))
    if importer not in RANKS:
      found.append(f'{path.relative_to(PACKAGE.parent)}: {importer!r} has no place in RANKS')
      continue
    for line, name in imports(path):
      imported = part_of(name)
      if imported == importer or name == 'fdt_jax':
        continue
      where = f'{path.relative_to(PACKAGE.parent)}:{line} imports {name}'
      if imported not in RANKS:
        found.append(f'{where}: {imported!r} has no place in RANKS')
      elif imported in NEVER.get(importer, ()):
        found.append(f'{where}: {importer} never imports {imported}')
      elif RANKS[imported] >= RANKS[importer]:
        found.append(f'{where}: {imported} (rank {RANKS[imported]}) is not below '
                     f'{importer} (rank {RANKS[importer]})')
  return found


def test_every_import_goes_down_the_layers():
  files = sorted(PACKAGE.rglob('*.py'))
  assert len(files) > 40
  assert violations(files) == []


@pytest.mark.parametrize('importer, statement, complaint', [
    ('data/x.py', 'from fdt_jax.models import build_model', 'data never imports models'),
    ('eval/x.py', '  from fdt_jax.train.state import TrainState', 'eval never imports train'),
    ('export/x.py', 'import fdt_jax.train.loop', 'export never imports train'),
    ('train/x.py', 'from fdt_jax.export import export_open_clip', 'train never imports export'),
    ('models/x.py', 'from fdt_jax.objectives import combine', 'models never imports objectives'),
    ('ops/x.py', 'from fdt_jax import models', 'ops never imports models'),
    ('run/x.py', 'from fdt_jax.eval import build_evaluators', 'eval (rank 5) is not below run (rank 4)'),
    ('formats/x.py', 'from ..run import load_config', 'run (rank 4) is not below formats (rank 3)'),
])
def test_an_upward_import_is_caught(tmp_path, monkeypatch, importer, statement, complaint):
  package = tmp_path / 'fdt_jax'
  path = package / importer
  path.parent.mkdir(parents=True)
  body = f'def f():\n{statement}\n' if statement.startswith(' ') else statement + '\n'
  path.write_text(body)
  monkeypatch.setattr(__import__(__name__), 'PACKAGE', package)
  found = violations([path])
  assert len(found) == 1 and complaint in found[0], found
