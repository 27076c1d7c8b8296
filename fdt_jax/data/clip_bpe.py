"""CLIP's BPE tokenizer (OpenAI's 49408-id vocabulary), as `data.tokenizer=clip`, so that a
text tower imported from open_clip / OpenAI weights (`model.init_from`) reads the ids it was
trained with. The vocabulary and the BPE are open_clip's own (`SimpleTokenizer`):

    data.tokenizer = 'clip'                    # open_clip's bpe_simple_vocab_16e6.txt.gz
    data.tokenizer = 'clip:/path/vocab.txt.gz' # the same format, another file

Ids as open_clip gives them: start-of-text 49406, the pieces, end-of-text 49407 (the largest
id, where the text tower pools), then 0-padding; a long text is cut to keep end-of-text.
"""

from collections.abc import Sequence
import sys
import warnings

import numpy as np

PREFIX = 'clip'


def is_clip_bpe(name: str) -> bool:
  return name == PREFIX or name.startswith(PREFIX + ':')


def simple_tokenizer_class():
  if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
    # As in fdt_jax.export.torch_fdt: open_clip imports torchvision, which imports triton,
    # whose library crashes a process that loaded tensorflow-cpu's; nothing here needs it.
    warnings.warn('tensorflow is already imported: open_clip is imported without triton')
    sys.modules['triton'] = None
  try:
    from open_clip.tokenizer import SimpleTokenizer
  except ImportError as e:
    raise ValueError(f'data.tokenizer=clip needs open_clip ({e}): pip install -e .[torch]') from None
  return SimpleTokenizer


class ClipBpeTokenizer:
  """Texts -> int32 [n, context_length], with the same methods as data.tokenizer.Tokenizer."""

  def __init__(self, name: str, context_length: int):
    if not is_clip_bpe(name):
      raise ValueError(f'{name!r} is not clip or clip:PATH')
    self.model_path = name  # what the config says; not a file to copy into the workdir
    self.context_length = context_length
    simple_tokenizer = simple_tokenizer_class()
    path = name[len(PREFIX) + 1:]
    try:
      self._bpe = simple_tokenizer(path) if path else simple_tokenizer()
    except OSError as e:
      raise FileNotFoundError(f'no CLIP BPE vocabulary at {path} ({e.strerror}): give a '
                              'bpe_simple_vocab_16e6.txt.gz, or data.tokenizer=clip for open_clip\'s') from None
    self.start_of_text_id = self._bpe.sot_token_id

  def __reduce__(self):  # grain workers get a fresh one
    return ClipBpeTokenizer, (self.model_path, self.context_length)

  @property
  def vocab_size(self) -> int:
    return self._bpe.vocab_size

  @property
  def end_of_text_id(self) -> int:
    return self._bpe.eot_token_id

  def encode(self, texts: str | Sequence[str]) -> np.ndarray:
    """int32 [len(texts), context_length]; a single string gives one row."""
    if isinstance(texts, str):
      texts = [texts]
    tokens = np.zeros((len(texts), self.context_length), np.int32)
    for row, text in zip(tokens, texts):
      ids = [self.start_of_text_id, *self._bpe.encode(text)][:self.context_length - 1]
      row[:len(ids)] = ids
      row[len(ids)] = self.end_of_text_id
    return tokens

  def _ids(self, tokens) -> list[int]:
    """Up to end-of-text, without start-of-text and padding."""
    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == self.end_of_text_id)
    tokens = tokens[:ends[0]] if ends.size else tokens
    return [int(t) for t in tokens if t not in (0, self.start_of_text_id)]

  def decode(self, tokens) -> str | list[str]:
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
      return [self.decode(row) for row in tokens]
    return self._bpe.decode(self._ids(tokens)).strip()

  def pieces(self, tokens, end_of_text: str = '<end>') -> list[str]:
    """The BPE piece at each position ('<start_of_text>', 'red</w>', ...), up to and including
    end-of-text (shown as `end_of_text`); padding is left out."""
    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == self.end_of_text_id)
    pieces = [self._bpe.decoder[int(t)] for t in (tokens[:ends[0]] if ends.size else tokens) if t]
    return pieces + [end_of_text] if ends.size else pieces


def make_tokenizer(name: str, context_length: int):
  """`data.tokenizer` -> a tokenizer: clip[:PATH] is CLIP's BPE, anything else a sentencepiece
  .model file (local or gs://)."""
  if is_clip_bpe(name):
    return ClipBpeTokenizer(name, context_length)
  from fdt_jax.data.tokenizer import Tokenizer
  return Tokenizer(name, context_length)
