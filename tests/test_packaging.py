"""How the project installs: every library fdt_jax imports is declared in pyproject.toml (the
PyTorch ones in the `torch` extra), pinned in the requirements files, and the Python version
is the same in pyproject.toml and the README."""

import ast
import importlib.metadata
import re
import sys
import tomllib

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())


def distribution(requirement: str) -> str:
  """'etils[epath]==1.15.0' -> 'etils'; 'open_clip_torch>=3' -> 'open-clip-torch'."""
  return re.sub(r'[-_.]+', '-', re.split(r'[\s<>=!~;\[]', requirement.strip(), maxsplit=1)[0]).lower()


def imported_libraries() -> dict[str, str]:
  """{top-level module: a file importing it} over fdt_jax, standard library left out."""
  found = {}
  for path in sorted((ROOT / 'fdt_jax').rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split('.')[0]
        if top != 'fdt_jax' and top not in sys.stdlib_module_names:
          found.setdefault(top, str(path.relative_to(ROOT)))
  return found


def test_every_imported_library_is_declared_and_pinned():
  declared = {distribution(r) for r in PYPROJECT['project']['dependencies']}
  torch_extra = {distribution(r) for r in PYPROJECT['project']['optional-dependencies']['torch']}
  pinned = {distribution(line) for name in ('requirements.txt', 'requirements-export.txt')
            for line in (ROOT / name).read_text().splitlines() if line.strip() and line[0] != '#'}
  providers = importlib.metadata.packages_distributions()  # module -> installed distributions
  for module, where in imported_libraries().items():
    dists = {distribution(d) for d in providers.get(module, [])}
    assert dists, f'{module} (imported by {where}) is not installed'
    assert dists & (declared | torch_extra), f'{module} (imported by {where}) is not in pyproject.toml'
    assert dists & pinned, f'{module} (imported by {where}) is not pinned in requirements*.txt'


def test_the_torch_extra_is_what_requirements_export_pins():
  torch_extra = {distribution(r) for r in PYPROJECT['project']['optional-dependencies']['torch']}
  pinned = {distribution(line) for line in (ROOT / 'requirements-export.txt').read_text().splitlines()
            if line.strip() and line[0] != '#'}
  assert torch_extra <= pinned, torch_extra - pinned


def test_python_version_is_the_same_in_pyproject_and_readme():
  minimum = re.fullmatch(r'>=\s*3\.(\d+)', PYPROJECT['project']['requires-python'].strip())
  readme = set(re.findall(r'Python 3\.(\d+)', (ROOT / 'README.md').read_text()))
  assert minimum and readme == {minimum.group(1)}, (PYPROJECT['project']['requires-python'], readme)
