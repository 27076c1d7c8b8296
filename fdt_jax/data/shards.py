"""Reading the image-caption shards users already have: webdataset / img2dataset tars
and CSV / TSV files of image paths and captions. fdt_jax.data.convert turns them into
a TFDS dataset; this module only finds the inputs and yields their raw records."""

import csv
import dataclasses
import glob
import itertools
import json
import os
import re
import tarfile
import zlib

FORMATS = ('webdataset', 'csv')
EXTENSIONS = {'.tar': 'webdataset', '.tar.gz': 'webdataset', '.tgz': 'webdataset',
              '.csv': 'csv', '.tsv': 'csv'}
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'gif', 'tif', 'tiff')
DEFAULT_IMAGE_COLUMNS = ('filepath', 'image')
DEFAULT_CAPTION_COLUMNS = ('caption', 'title')


class ConversionError(ValueError):
  """Bad usage, reported by the command line in one line."""


def expand_braces(pattern: str) -> list[str]:
  """Shell-style: 'a{00..02}.tar' -> a00.tar a01.tar a02.tar; '{x,y}' -> x y; nestable.

  Not the braceexpand package, which does the same: it has had no release since 2021 and
  raises on an unbalanced brace, which a shell (and this) keeps literal."""
  start, depth = pattern.find('{'), 0
  if start < 0:
    return [pattern]
  for end in range(start, len(pattern)):
    depth += {'{': 1, '}': -1}.get(pattern[end], 0)
    if depth == 0:
      break
  if depth:  # unbalanced: literal
    return [pattern]
  head, body, tails = pattern[:start], pattern[start + 1:end], expand_braces(pattern[end + 1:])
  if numbers := re.fullmatch(r'(\d+)\.\.(\d+)', body):
    first, last = numbers.groups()
    width = max(len(first), len(last)) if first[0] == '0' or last[0] == '0' else 1
    step = 1 if int(last) >= int(first) else -1
    choices = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
  else:
    choices, depth, piece = [], 0, ''
    for char in body:  # split at the commas outside inner braces
      depth += {'{': 1, '}': -1}.get(char, 0)
      if char == ',' and depth == 0:
        choices, piece = choices + [piece], ''
      else:
        piece += char
    if not choices:  # '{x}' is no alternative: keep it as it is
      return [head + '{' + body + '}' + tail for tail in tails]
    choices = [c for choice in choices + [piece] for c in expand_braces(choice)]
  return [head + choice + tail for choice in choices for tail in tails]


def resolve_inputs(inputs: str | list[str]) -> list[str]:
  """Absolute paths, in order, without repeats: braces expanded, globs ('*.tar') matched.
  Paths that do not exist stay (they are counted as missing shards)."""
  paths = []
  for pattern in [inputs] if isinstance(inputs, str) else inputs:
    for path in expand_braces(os.path.expanduser(pattern)):
      paths += sorted(glob.glob(path)) if glob.has_magic(path) else [path]
  return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def infer_format(paths: list[str]) -> str:
  kinds = {next((kind for ext, kind in EXTENSIONS.items() if p.lower().endswith(ext)), None)
           for p in paths}
  if len(kinds) != 1 or None in kinds:
    endings = ', '.join(sorted({os.path.splitext(p)[1] or os.path.basename(p) for p in paths}))
    raise ConversionError(f'cannot tell the input format from the file names ({endings}): '
                          'pass --format=webdataset or --format=csv')
  return kinds.pop()


# --- Reading ----------------------------------------------------------------------

class BrokenShard(Exception):
  """The input ended early or cannot be parsed; `pending`: a record was being read."""

  def __init__(self, message: str, pending: bool):
    super().__init__(message)
    self.pending = pending


_MEMBER = re.compile(r'((?:.*/)?[^./]+)\.([^/]+)')  # webdataset: the key ends at the name's first dot


def tar_records(path: str):
  """(key, image bytes | None, caption | None) per record, in tar order; raises BrokenShard.

  Members of a record are consecutive and share a key (as webdataset and img2dataset write
  them); members of other types are ignored. The caption comes from .txt, else .json. A
  member whose kind the record already has starts a new record with the same key, so a
  key repeated back to back yields two records (the caller counts the second as a
  duplicate) instead of one member silently overwriting or dropping another.
  Not webdataset's tar iteration, which groups members the same way: its error handlers
  skip or raise, while the converter must tell a truncated shard (and whether a record
  was cut off) from a corrupt one, to count them by reason and redo only what is missing.
  """
  complete = _has_end_of_archive(path)
  key, members = None, {}
  try:
    with tarfile.open(path, 'r|*') as tar:
      for member in tar:
        match = _MEMBER.fullmatch(member.name) if member.isfile() else None
        kind = match and match[2].lower()
        if kind not in IMAGE_EXTENSIONS + ('txt', 'json'):
          continue
        if match[1] != key or kind in members:
          if key is not None:
            yield key, *_tar_record(members)
          key, members = match[1], {}
        members[kind] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise BrokenShard(f'{type(e).__name__}: {e}', pending=key is not None) from None
  if key is not None and not complete:
    raise BrokenShard('no end-of-archive blocks: cut at a member boundary', pending=True)
  if key is not None:
    yield key, *_tar_record(members)


def _has_end_of_archive(path: str) -> bool:
  """Python's tarfile takes a tar cut between two members for a whole, shorter one."""
  with open(path, 'rb') as f:
    if f.read(2) == b'\x1f\x8b':
      return True  # gzip: truncation raises EOFError
    size = f.seek(0, os.SEEK_END)
    f.seek(max(size - 1024, 0))
    return size >= 1024 and f.read() == bytes(1024)


def _tar_record(members: dict[str, bytes]):
  image = next((data for kind, data in members.items() if kind in IMAGE_EXTENSIONS), None)
  if 'txt' in members:
    return image, members['txt'].decode('utf-8', 'surrogateescape')
  try:
    fields = json.loads(members.get('json', b'null'))
  except ValueError:
    fields = None
  caption = fields.get('caption', fields.get('text')) if isinstance(fields, dict) else None
  return image, None if caption is None else str(caption)


@dataclasses.dataclass(frozen=True)
class CsvChunk:
  """`num_rows` rows of a CSV file, from byte `offset` (where row `first_row` starts)."""
  offset: int
  first_row: int  # 1 is the row after the header
  num_rows: int
  fieldnames: tuple[str, ...]
  delimiter: str
  image_column: str
  caption_column: str


def _csv_rows(f, fieldnames, delimiter, position: list[int]):
  """A DictReader over the binary file `f`; position[0] is the byte offset after the last row."""
  csv.field_size_limit(1 << 24)  # not 128 KiB: a long caption is truncated, not an error

  def lines():
    for line in f:  # whole lines, so no UTF-8 sequence is cut
      position[0] += len(line)
      yield line.decode('utf-8', 'surrogateescape')
  return csv.DictReader(lines(), fieldnames=fieldnames, delimiter=delimiter)


def csv_chunks(path: str, *, rows_per_shard: int, delimiter: str = 'auto',
               image_column: str | None = None, caption_column: str | None = None) -> list[CsvChunk]:
  """Reads the file once to find where each chunk starts, so workers seek, not re-read."""
  with open(path, 'rb') as f:
    header = f.readline().decode('utf-8', 'surrogateescape').lstrip('\ufeff')
    if delimiter == 'auto':
      delimiter = '\t' if path.lower().endswith('.tsv') or '\t' in header else ','
    fieldnames = tuple(next(csv.reader([header], delimiter=delimiter), []))
    columns = []
    for given, defaults, what in ((image_column, DEFAULT_IMAGE_COLUMNS, 'image'),
                                  (caption_column, DEFAULT_CAPTION_COLUMNS, 'caption')):
      found = [c for c in ((given,) if given else defaults) if c in fieldnames]
      if not found:
        raise ConversionError(
            f'{path} has no {what} column {" or ".join(map(repr, (given,) if given else defaults))}; '
            f'its columns are {", ".join(map(repr, fieldnames))} (pass --{what}_column=...)')
      columns.append(found[0])
    position = [f.tell()]
    reader = _csv_rows(f, fieldnames, delimiter, position)
    chunks, start, count = [], position[0], 0
    try:
      for count, _ in enumerate(reader, 1):
        if count % rows_per_shard == 0:
          chunks.append(CsvChunk(start, count - rows_per_shard + 1, rows_per_shard,
                                 fieldnames, delimiter, *columns))
          start = position[0]
    except csv.Error as e:
      raise ConversionError(f'{path}, row {count + 1}: {e}') from None
  if count % rows_per_shard:
    first = count - count % rows_per_shard + 1
    chunks.append(CsvChunk(start, first, count - first + 1, fieldnames, delimiter, *columns))
  return chunks


def csv_records(path: str, chunk: CsvChunk):
  """(image path | None, caption | None) per row of the chunk."""
  folder = os.path.dirname(path)
  with open(path, 'rb') as f:
    f.seek(chunk.offset)
    for row in itertools.islice(_csv_rows(f, chunk.fieldnames, chunk.delimiter, [0]), chunk.num_rows):
      image = (row.get(chunk.image_column) or '').strip()
      yield (os.path.join(folder, os.path.expanduser(image)) if image else None,
             row.get(chunk.caption_column))
