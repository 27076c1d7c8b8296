"""One input record (image bytes or path, caption) -> the record written, or the reason it
is skipped, and what was changed on the way. See fdt_jax.data.convert."""

import dataclasses
import io

from PIL import Image

from fdt_jax.data.transforms import to_rgb

JPEG_QUALITY = 95  # img2dataset's default

SKIP_REASONS = {  # in the order they are checked
    'duplicate_key': 'a tar record whose key an earlier record of the same tar had',
    'missing_image': 'a caption without an image (or an empty path cell)',
    'missing_caption': 'an image without a caption',
    'empty_caption': 'a caption that is empty or only whitespace',
    'image_not_found': 'a CSV path that does not exist or cannot be read',
    'image_too_large': "more pixels than PIL's decompression-bomb limit",
    'image_too_small': 'shorter side below min_size',
    'corrupt_image': 'bytes that do not decode (truncated, not an image)',
    'shard_truncated': 'the record being read when a tar ended early',
}
MODIFICATIONS = {  # of written records
    'converted_to_rgb': 'grayscale, CMYK, palette, alpha (matted on white) or 16-bit',
    'reencoded': 'stored as a new JPEG: not a JPEG, not RGB, or resized',
    'resized': 'shorter side brought down to resize_max',
    'caption_truncated': 'cut at a word boundary to max_caption_chars',
    'caption_not_utf8': 'undecodable bytes replaced by U+FFFD',
}



@dataclasses.dataclass(frozen=True)
class Options:
  """What decides the records written: a rerun with other options is another conversion."""
  resize_max: int = 0  # downscale when the shorter side is larger; 0 keeps the size
  min_size: int = 8
  max_caption_chars: int = 1000
  concepts: str = ''  # the phrase extractor's name (data/phrases.py) with --concepts, else ''


def clean_caption(text: str, max_chars: int) -> tuple[str, list[str]]:
  """Stripped, undecodable bytes replaced, cut at the last word boundary within max_chars."""
  modified = []
  try:
    text.encode('utf-8')
  except UnicodeEncodeError:
    text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
    modified.append('caption_not_utf8')
  text = text.strip()
  if len(text) > max_chars:
    head = text[:max_chars + 1]  # one more: a space there means the cut is between words
    boundary = max((i for i, char in enumerate(head) if char.isspace()), default=0)
    text = (head[:boundary] if boundary else text[:max_chars]).rstrip()
    modified.append('caption_truncated')
  return text, modified


def to_jpeg(data: bytes, options: Options) -> tuple[str | None, bytes | None, list[str]]:
  """(skip reason, JPEG bytes, modifications): the bytes as they are for a clean RGB JPEG."""
  try:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if min(width, height) < options.min_size:
      return 'image_too_small', None, []
    target = None
    if options.resize_max and min(width, height) > options.resize_max:
      scale = options.resize_max / min(width, height)
      target = (max(options.resize_max, round(width * scale)),
                max(options.resize_max, round(height * scale)))
    # MPO: a camera JPEG with more frames appended; JPEG decoders read the first.
    keep = image.format in ('JPEG', 'MPO') and image.mode == 'RGB' and target is None
    # A JPEG decoded at 1/8 scale (or nearer the target size) still reads every byte,
    # so truncation shows, at less than half the cost: most of the inverse DCT is skipped.
    if keep or target:
      image.draft('RGB', (max(width // 8, 1), max(height // 8, 1)) if keep else target)
    image.load()
  except Image.DecompressionBombError:
    return 'image_too_large', None, []
  except Exception:  # PIL raises many types for bytes it cannot decode
    return 'corrupt_image', None, []
  if keep:
    return None, data, []
  modified = ['reencoded']
  if image.mode != 'RGB':
    image = to_rgb(image)
    modified.append('converted_to_rgb')
  if target is not None:
    image = image.resize(target, Image.Resampling.BICUBIC)  # as transforms.py; Lanczos: 30% slower
    modified.append('resized')
  out = io.BytesIO()
  image.save(out, format='JPEG', quality=JPEG_QUALITY)
  return None, out.getvalue(), modified


def convert_record(image: bytes | str | None, caption: str | None, options: Options
                   ) -> tuple[str | None, dict | None, list[str]]:
  """(skip reason, example, modifications); `image` is bytes or a file path. With
  `options.concepts`, the example also holds the caption's tuples (converted_concepts.py)."""
  if image is None:
    return 'missing_image', None, []
  if caption is None:
    return 'missing_caption', None, []
  caption, modified = clean_caption(caption, options.max_caption_chars)
  if not caption:
    return 'empty_caption', None, []
  if isinstance(image, str):
    try:
      with open(image, 'rb') as f:
        image = f.read()
    except OSError:
      return 'image_not_found', None, []
  reason, jpeg, image_modified = to_jpeg(image, options)
  if reason:
    return reason, None, []
  example = {'image': jpeg, 'captions': [caption]}
  if options.concepts:
    from fdt_jax.data.converted_concepts import caption_concepts_field
    example['concepts'] = [caption_concepts_field(caption)]
  return None, example, image_modified + modified

