"""Writing a file so that a reader (or a crash) sees the old content or the new, never half.

Local paths: a temporary file in the same folder, renamed over the target. Object
stores (gs://, through etils.epath) replace an object atomically by themselves.
"""

import json
import os
import tempfile

from etils import epath


def write_atomically(path, content: bytes | str) -> None:
  data = content.encode('utf-8') if isinstance(content, str) else content
  path = os.fspath(path)
  if '://' in path:
    epath.Path(path).write_bytes(data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, prefix='.tmp-', delete=False) as f:
    f.write(data)
  os.chmod(f.name, 0o644)  # readable like any written file, not 0600 like a temporary one
  os.replace(f.name, path)


def write_json_atomically(path, value, indent: int = 1) -> None:
  write_atomically(path, json.dumps(value, indent=indent) + '\n')
