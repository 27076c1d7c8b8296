"""Sentencepiece tokenizer with CLIP's id convention.

The text tower pools at `argmax(tokens)` like OpenAI CLIP, so the ids must follow
CLIP's convention: padding is 0, end-of-text is `vocab_size - 1` (the largest id)
and ends every text, also a truncated or empty one. Models trained here place pad
and end-of-text there themselves; a user's .model file with sentencepiece's
default layout (unk 0, bos 1, eos 2, no pad) is remapped by `Tokenizer`.
"""

from collections.abc import Iterable, Sequence
import io
import re

from etils import epath
import numpy as np
import sentencepiece as spm

from fdt_jax.atomic_write import write_atomically

UNKNOWN_ID = 1


def train_tokenizer(texts: Iterable[str], model_path: str, vocab_size: int) -> str:
  """Trains a lowercasing BPE model of exactly `vocab_size` ids; returns `model_path`.

  Deterministic: the same texts in the same order give the same file. The model is
  trained in memory and written atomically, so a reader never sees half a file.
  """
  texts = list(texts)
  options = dict(
      model_type='bpe', vocab_size=vocab_size, character_coverage=1.0,
      normalization_rule_name='nmt_nfkc_cf',  # NFKC and lowercase
      pad_id=0, unk_id=UNKNOWN_ID, bos_id=-1, eos_id=vocab_size - 1,
      num_threads=1, minloglevel=2)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, **options)
  except RuntimeError as e:
    raise ValueError(_vocabulary_too_large(texts, options) or f'sentencepiece failed: {e}') from e
  write_atomically(model_path, model.getvalue())
  return model_path


def _vocabulary_too_large(texts: list[str], options: dict) -> str | None:
  """With end-of-text at the last id, sentencepiece hides why it failed; ask it again."""
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=io.BytesIO(),
                                   **{**options, 'eos_id': 2})
  except RuntimeError as e:
    if bound := re.search(r'value <= (\d+)', str(e)):
      return (f'vocab_size={options["vocab_size"]} is more pieces than these {len(texts)} texts '
              f'hold: use vocab_size <= {bound.group(1)}')
  return None


class Tokenizer:
  """Texts -> int32 [n, context_length]: pieces, then end-of-text, then 0-padding."""

  def __init__(self, model_path: str, context_length: int):
    self.model_path = model_path
    self.context_length = context_length
    fix = ('train one with fdt_jax.data.tokenizer.train_tokenizer (prepare_shapes does it '
           'for the shapes data) or point the config at an existing sentencepiece .model file')
    path = epath.Path(model_path)  # local or gs://
    if not path.is_file():
      raise FileNotFoundError(f'no sentencepiece model at {model_path}: {fix}')
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(path.read_bytes())
    except (OSError, RuntimeError) as e:
      raise ValueError(f'{model_path} is not a readable sentencepiece model ({e}): {fix}') from None
    if self._sp.eos_id() < 0:
      raise ValueError(f'{model_path} has no end-of-text (eos) piece: {fix}')
    self._to_ids, self._from_ids = _clip_layout(self._sp)

  @property
  def vocab_size(self) -> int:
    return len(self._from_ids)

  @property
  def end_of_text_id(self) -> int:
    return self.vocab_size - 1

  def encode(self, texts: str | Sequence[str]) -> np.ndarray:
    """int32 [len(texts), context_length]; a single string gives one row."""
    if isinstance(texts, str):
      texts = [texts]
    pieces = self._sp.Encode(list(texts), out_type=int)  # one C++ call for the batch
    pad, end_of_text = len(self._to_ids) - 2, len(self._to_ids) - 1  # placeholders, mapped below
    tokens = np.full((len(pieces), self.context_length), pad, np.int32)
    for row, ids in zip(tokens, pieces):
      ids = ids[:self.context_length - 1]  # truncation keeps room for end-of-text
      row[:len(ids)] = ids
      row[len(ids)] = end_of_text
    return self._to_ids[tokens]

  def decode(self, tokens: np.ndarray | Sequence[int]) -> str | list[str]:
    """Ids back to (lowercased) text, up to end-of-text; a 2-d array gives a list."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
      return [self.decode(row) for row in tokens]
    ends = np.flatnonzero(tokens == self.end_of_text_id)
    tokens = tokens[:ends[0]] if ends.size else tokens
    return self._sp.Decode(self._from_ids[tokens[tokens != 0]].tolist())

  def pieces(self, tokens: np.ndarray | Sequence[int], end_of_text: str = '<end>') -> list[str]:
    """The sentencepiece piece at each position of one encoded text ('▁red', 'angle'), up to
    and including end-of-text (shown as `end_of_text`); padding is left out."""
    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == self.end_of_text_id)
    tokens = tokens[:ends[0]] if ends.size else tokens
    pieces = [self._sp.IdToPiece(int(self._from_ids[t])) for t in tokens]
    return pieces + [end_of_text] if ends.size else pieces


def _clip_layout(sp: spm.SentencePieceProcessor) -> tuple[np.ndarray, np.ndarray]:
  """Lookup tables from sentencepiece ids to CLIP-convention ids and back.

  `to_ids` has two extra entries at the end, for pad and end-of-text. Identity for
  models trained by `train_tokenizer`; otherwise pad goes to 0 (every id shifts up
  by one if the model has no pad piece) and end-of-text swaps with the last id.
  """
  layout = np.arange(sp.GetPieceSize())  # layout[clip_id] = sentencepiece id; -1: the added pad
  if sp.pad_id() < 0:
    layout = np.concatenate([[-1], layout])
  else:
    layout[[0, sp.pad_id()]] = layout[[sp.pad_id(), 0]]
  eos = int(np.flatnonzero(layout == sp.eos_id())[0])
  layout[[eos, -1]] = layout[[-1, eos]]
  to_ids = np.zeros(sp.GetPieceSize() + 2, np.int32)
  to_ids[layout[layout >= 0]] = np.flatnonzero(layout >= 0)
  to_ids[-2:] = 0, len(layout) - 1
  from_ids = np.maximum(layout, 0).astype(np.int32)  # pad and end-of-text are never looked up
  return to_ids, from_ids
