"""The book's text processing: normalisation, word tokens and the vocabulary; the bottom
of `data/` (it imports nothing of the package but `errors`).

Exactly as in the seed chapter (d2l `MTFraEng`): narrow and non-breaking spaces become
spaces (`clean`, which every tokenizer applies), text is lowercased, a space is put
before `, . ! ?` that lack one, tokens are split on spaces and `<eos>` ends every
sentence. The vocabulary keeps tokens seen at
least `min_freq` times; the four reserved tokens have fixed ids so that padding is 0.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from seq2seq_jax import errors

PAD, BOS, EOS, UNK = '<pad>', '<bos>', '<eos>', '<unk>'
RESERVED = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


_PUNCT_AFTER_NON_SPACE = re.compile(r'(?<=[^ ])([,.!?])')
_PLAIN_SPACES = str.maketrans({'\u202f': ' ', '\xa0': ' '})


def clean(sentence: str) -> str:
  """Narrow and non-breaking spaces (French typography puts them before `! ? ;`) made
  plain spaces: the first step of every tokenizer."""
  return sentence.translate(_PLAIN_SPACES)


def is_blank(line: str) -> bool:
  """Whether a line holds no sentence (nothing but white space): the one blank-line rule
  (skipped when reading files and training tokenizers; an empty translation)."""
  return not line.strip()


def preprocess(text: str) -> str:
  """Normalises spaces, lowercases and separates punctuation (the book's rules: a space
  before each `,.!?` that follows anything but a space)."""
  return _PUNCT_AFTER_NON_SPACE.sub(r' \1', clean(text).lower())


def tokenize(text: str) -> list[str]:
  """Splits a preprocessed sentence on spaces and appends `<eos>`."""
  return [t for t in text.split(' ') if t] + [EOS]


def detokenize(tokens: Iterable[str]) -> str:
  """Joins word tokens with spaces (the book's output format)."""
  return ' '.join(tokens)


def normal_form(sentence: str) -> str:
  """The form hypotheses and references take for BLEU and chrF, whatever the tokenizer:
  the book's preprocessing with single spaces (word output is already in it)."""
  return detokenize(t for t in preprocess(sentence).split(' ') if t)


class Vocab:
  """Token <-> id map: reserved tokens first, then the kept tokens sorted."""

  def __init__(self, idx_to_token: Sequence[str]):
    if tuple(idx_to_token[: len(RESERVED)]) != RESERVED:
      raise errors.DataError(f'a vocabulary must start with {RESERVED}, got {idx_to_token[:4]}')
    self.idx_to_token = list(idx_to_token)
    self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
    if len(self.token_to_idx) != len(self.idx_to_token):
      raise errors.DataError('a vocabulary holds each token once')

  @classmethod
  def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 2) -> Vocab:
    """Keeps the tokens that occur at least `min_freq` times (sorted, as the book)."""
    counter = collections.Counter(t for s in sentences for t in s)
    kept = sorted(t for t, f in counter.items() if f >= min_freq and t not in RESERVED)
    return cls(list(RESERVED) + kept)

  def __len__(self) -> int:
    return len(self.idx_to_token)

  def encode(self, tokens: Iterable[str]) -> list[int]:
    return [self.token_to_idx.get(t, UNK_ID) for t in tokens]

  def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> list[str]:
    """Ids to tokens; stops at the first `<eos>` and drops padding."""
    tokens = []
    for i in ids:
      i = int(i)
      if i == EOS_ID and stop_at_eos:
        break
      if i in (PAD_ID, BOS_ID):
        continue
      tokens.append(self.idx_to_token[i])
    return tokens

  def save(self, path: str | Path) -> None:
    Path(path).write_text(json.dumps(self.idx_to_token, ensure_ascii=False), encoding='utf-8')

  @classmethod
  def load(cls, path: str | Path) -> Vocab:
    return cls(json.loads(Path(path).read_text(encoding='utf-8')))


class WordTokenizer:
  """The book's word-level tokenizer: `preprocess`, split on spaces, one vocabulary."""

  kind = 'word'

  def __init__(self, vocab: Vocab):
    self.vocab = vocab

  @classmethod
  def train(
    cls, sentences: Iterable[str], min_freq: int = 2, num_steps: int | None = None
  ) -> WordTokenizer:
    """Builds the vocabulary; with `num_steps` only the tokens the model sees count
    (the book builds its vocabulary after trimming to `num_steps`)."""
    token_lists = (tokenize(preprocess(s))[:num_steps] for s in sentences)
    return cls(Vocab.build(token_lists, min_freq))

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, sentence: str) -> list[int]:
    """Raw sentence -> ids ending in `<eos>`."""
    return self.vocab.encode(tokenize(preprocess(sentence)))

  def decode(self, ids: Iterable[int]) -> str:
    """Ids -> the book's output text (tokens joined by spaces), stopping at `<eos>`."""
    return detokenize(self.vocab.decode(ids))

  def reference(self, sentence: str) -> str:
    """A reference translation in the same form as `decode` output, for BLEU."""
    return normal_form(sentence)

  def save(self, path: str | Path) -> None:
    self.vocab.save(path)

  @classmethod
  def load(cls, path: str | Path) -> WordTokenizer:
    return cls(Vocab.load(path))
