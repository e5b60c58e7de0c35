"""Tokenizers by config (`data.tokenizer`): the book's words, or SentencePiece subwords.

Both map a raw sentence to ids ending in `<eos>` and ids back to text, with the reserved
ids of `text` (`<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3). SentencePiece output is
cased, detokenised text a person can read, and is scored as such (`form_for`, which
`scoring` uses); word output is scored on the book's normal form. `Settings` is what
training them reads from the config; 'auto' is made concrete by the source
(`resolve_kind`).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from seq2seq_jax import errors
from seq2seq_jax.data import manythings, text

if TYPE_CHECKING:  # imported where used: an exported model loads tokenizers without them
  from seq2seq_jax.data import sources


class Tokenizer(Protocol):
  kind: str

  @property
  def vocab_size(self) -> int: ...

  def encode(self, sentence: str) -> list[int]: ...

  def decode(self, ids: Iterable[int]) -> str: ...

  def reference(self, sentence: str) -> str: ...


class SentencePieceTokenizer:
  """A SentencePiece (unigram) model trained on the training split, cased text."""

  kind = 'sentencepiece'

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm

    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @classmethod
  def train(cls, sentences: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
    """Trains on the sentences (`prepared.sample_pairs` samples a large split first)."""
    import sentencepiece as spm

    sentences = [s for s in sentences if not text.is_blank(s)]
    if not sentences:
      raise errors.DataError('cannot train SentencePiece on an empty split')
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=buffer,
      vocab_size=vocab_size,
      model_type='unigram',
      character_coverage=1.0,
      pad_id=text.PAD_ID,
      bos_id=text.BOS_ID,
      eos_id=text.EOS_ID,
      unk_id=text.UNK_ID,
      hard_vocab_limit=False,  # small corpora (tests) may not support vocab_size pieces
      minloglevel=2,
      num_threads=os.cpu_count() or 1,
    )
    return cls(buffer.getvalue())

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, sentence: str) -> list[int]:
    return self.sp.encode(text.clean(sentence).strip()) + [text.EOS_ID]

  def encode_batch(self, sentences: list[str], num_threads: int = 0) -> list[list[int]]:
    """`encode` of many sentences in one native call on `num_threads` threads (0: all
    cores)."""
    normalised = [text.clean(s).strip() for s in sentences]
    threads = num_threads or os.cpu_count() or 1
    ids = self.sp.encode(normalised, num_threads=threads)
    for row in ids:
      row.append(text.EOS_ID)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    out = []
    for i in ids:
      i = int(i)
      if i == text.EOS_ID:
        break
      if i not in (text.PAD_ID, text.BOS_ID):
        out.append(i)
    return self.sp.decode(out)

  def reference(self, sentence: str) -> str:
    return text.normal_form(sentence)

  def save(self, path: str | Path) -> None:
    Path(path).write_bytes(self.model_proto)

  @classmethod
  def load(cls, path: str | Path) -> SentencePieceTokenizer:
    return cls(Path(path).read_bytes())


KINDS = ('word', 'sentencepiece')
FILES = {
  'word': ('vocab_src.json', 'vocab_tgt.json'),
  'sentencepiece': ('spm_src.model', 'spm_tgt.model'),
}


def check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise errors.ConfigError(f'data.tokenizer must be one of {KINDS}, got {kind!r}')


def kind_for(requested: str, source: sources.Source) -> str:
  """`requested` (`data.tokenizer`), with 'auto' made concrete: the book's word tokens
  for the book's corpus (a Tatoeba file of English and French, either direction),
  SentencePiece (cased, detokenised output) for every other corpus (README, "Choosing
  the defaults")."""
  if requested != 'auto':
    if requested not in KINDS:
      raise errors.ConfigError(
        f"data.tokenizer must be 'auto' or one of {KINDS}, got {requested!r}"
      )
    return requested
  return 'word' if source.book_corpus else 'sentencepiece'


def resolve_kind(data_cfg: Any) -> str:  # noqa: ANN401
  """`kind_for` the tokenizer and source a whole data config names."""
  from seq2seq_jax.data import sources

  return kind_for(data_cfg.tokenizer, sources.from_config(data_cfg))


@dataclasses.dataclass(frozen=True)
class TokenizerSettings:
  """What the tokenizers are trained with (`data.tokenizer`, ...; the kind concrete)."""

  kind: str  # 'word' or 'sentencepiece'
  vocab_size: int  # sentencepiece: pieces per language
  sample: int  # sentencepiece: trained on a sample of this many pairs (0: all)
  min_freq: int  # word: the vocabulary threshold
  num_steps: int  # word: > 0, only the first num_steps tokens count (the book)
  with_validation: bool  # the validation pairs count too (the book)

  @classmethod
  def from_config(cls, data_cfg: Any, source: sources.Source) -> TokenizerSettings:  # noqa: ANN401
    return cls(
      kind=kind_for(data_cfg.tokenizer, source),
      vocab_size=int(data_cfg.vocab_size),
      sample=int(data_cfg.tokenizer_sentences),
      min_freq=int(data_cfg.min_freq),
      num_steps=int(data_cfg.num_steps),
      with_validation=bool(data_cfg.vocab_includes_validation),
    )


def paths(workdir: str | Path, kind: str) -> tuple[Path, Path]:
  check_kind(kind)
  src, tgt = FILES[kind]
  return Path(workdir) / src, Path(workdir) / tgt


def load(workdir: str | Path, kind: str) -> tuple[Tokenizer, Tokenizer]:
  """The (source, target) tokenizers saved in a workdir."""
  src_path, tgt_path = paths(workdir, kind)
  for p in (src_path, tgt_path):
    if not p.exists():
      raise errors.MissingFileError(f'{workdir} has no {kind} tokenizer ({p.name} is missing)')
  cls = text.WordTokenizer if kind == 'word' else SentencePieceTokenizer
  return cls.load(src_path), cls.load(tgt_path)


def train(
  kind: str,
  pairs: list[tuple[str, str]],
  *,
  min_freq: int = 2,
  num_steps: int | None = None,
  vocab_size: int = 8000,
) -> tuple[Tokenizer, Tokenizer]:
  """Trains (source, target) tokenizers on (source, target) pairs (`prepared.py` passes
  the `Settings`; the defaults here are the book's, for tests and notebooks)."""
  check_kind(kind)
  if kind == 'word':
    return (
      text.WordTokenizer.train((en for en, _ in pairs), min_freq, num_steps),
      text.WordTokenizer.train((fr for _, fr in pairs), min_freq, num_steps),
    )
  return (
    SentencePieceTokenizer.train((s for s, _ in pairs), vocab_size),
    SentencePieceTokenizer.train((t for _, t in pairs), vocab_size),
  )


# ---------------------------------------------------------------------------------------
# How a tokenizer's output is scored (`scoring` computes the scores).

# Languages written without spaces between words: sacreBLEU's tokenizer for them.
_SACREBLEU_TOKENIZE = {
  'zh': 'zh',
  'ja': 'char',
  'th': 'char',
  'lo': 'char',
  'km': 'char',
  'my': 'char',
}


@dataclasses.dataclass(frozen=True)
class Form:
  """What hypotheses and references look like when scored."""

  name: str  # 'book normal form' or 'detokenised'
  tokenize: str  # sacreBLEU's tokenizer
  normalise: bool  # the book's normal form first

  def __call__(self, sentence: str) -> str:
    return text.normal_form(sentence) if self.normalise else sentence.strip()


BOOK_FORM = Form('book normal form', 'none', normalise=True)


def form_for(tokenizer_kind: str, lang: str) -> Form:
  """The book's normal form for word tokens; detokenised text with sacreBLEU's standard
  tokenizer for the target language otherwise."""
  if tokenizer_kind == 'word':
    return BOOK_FORM
  tokenize = _SACREBLEU_TOKENIZE.get(manythings.language(lang), '13a')
  return Form('detokenised', tokenize, normalise=False)
