"""Pairs of sentences to token ids: the tokenizers' batched calls in chunks
(SentencePiece's native threads) into ragged arrays (all ids flat, and each sentence's
length), then packed into padded `[n, width]` arrays (`EncodedPairs`).

Two layouts:
- the book's (`num_steps > 0`): every sentence trimmed or padded to `num_steps`;
- length buckets (`num_steps == 0`): pairs longer than `max_len` are dropped (counted in
  the log); `Lengths.max_len_of` picks `max_len` (`data.max_len`, or the length that keeps
  `data.length_quantile` of the pairs whole).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from absl import logging

from seq2seq_jax.data.tokenizers import Tokenizer


@dataclasses.dataclass
class EncodedPairs:
  """Token ids of a split: `src`/`tgt` are `[n, width]` (0-padded, ending in `<eos>`;
  uint16 when the vocabularies allow, possibly memory-mapped from the prepared files)."""

  src: np.ndarray
  src_len: np.ndarray
  tgt: np.ndarray
  tgt_len: np.ndarray
  sources: list[str] = dataclasses.field(default_factory=list)  # raw text (validation only:
  targets: list[str] = dataclasses.field(default_factory=list)  # BLEU and samples)

  def __len__(self) -> int:
    return len(self.src_len)


_ENCODE_CHUNK = 65536  # sentences per batched tokenizer call (bounds the Python lists)


def id_dtype(*vocab_sizes: int) -> np.dtype:
  """The smallest id dtype for the vocabularies: uint16 up to 65,536 tokens, else int32."""
  return np.dtype(np.uint16 if max(vocab_sizes) <= 65536 else np.int32)


def encode_ragged(
  tok: Tokenizer, sentences: Sequence[str], dtype: type | np.dtype = np.int32
) -> tuple[np.ndarray, np.ndarray]:
  """All sentences' ids concatenated, and each one's length: batched tokenizer calls
  (`encode_batch`: SentencePiece's native threads) of `_ENCODE_CHUNK` sentences."""
  flats, lengths = [], []
  encode = getattr(tok, 'encode_batch', None) or (lambda batch: [tok.encode(s) for s in batch])
  for start in range(0, len(sentences), _ENCODE_CHUNK):
    ids = encode(list(sentences[start : start + _ENCODE_CHUNK]))
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    flats.append(np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lens.sum())))
    lengths.append(lens)
  if not flats:
    return np.zeros(0, dtype), np.zeros(0, np.int64)
  return np.concatenate(flats), np.concatenate(lengths)


def pack_ragged(
  flat: np.ndarray,
  lengths: np.ndarray,
  rows: np.ndarray,
  width: int,
  starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Rows `rows` of a ragged array, each trimmed to `width` and 0-padded: `[len(rows), width]`
  (`starts`: each row's offset in `flat`, computed when not given)."""
  if starts is None:
    starts = ragged_starts(lengths)
  kept = np.minimum(lengths[rows], width)
  out = np.zeros((len(rows), width), flat.dtype)
  cols = np.arange(width)
  for lo in range(0, len(rows), _ENCODE_CHUNK):  # index arrays of a bounded size
    hi = min(lo + _ENCODE_CHUNK, len(rows))
    mask = cols[None, :] < kept[lo:hi, None]
    out[lo:hi][mask] = flat[(starts[rows[lo:hi]][:, None] + cols[None, :])[mask]]
  return out, kept.astype(np.int32)


def ragged_starts(lengths: np.ndarray) -> np.ndarray:
  """Each row's offset in the flat ids of a ragged array."""
  return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def encode_pairs(
  pairs: Sequence[tuple[str, str]],
  src_tok: Tokenizer,
  tgt_tok: Tokenizer,
  *,
  num_steps: int = 0,
  max_len: int = 0,
  keep_text: bool = True,
) -> EncodedPairs:
  """Tokenizes pairs. `num_steps > 0`: trim to it (the book); else drop pairs longer than
  `max_len` tokens on either side (`<eos>` included), logging how many."""
  dtype = id_dtype(src_tok.vocab_size, tgt_tok.vocab_size)
  src = encode_ragged(src_tok, [s for s, _ in pairs], dtype)
  tgt = encode_ragged(tgt_tok, [t for _, t in pairs], dtype)
  return pack_pairs(src, tgt, pairs if keep_text else None, num_steps=num_steps, max_len=max_len)


def pack_pairs(
  src: tuple[np.ndarray, np.ndarray],
  tgt: tuple[np.ndarray, np.ndarray],
  pairs: Sequence[tuple[str, str]] | None,
  *,
  num_steps: int = 0,
  max_len: int = 0,
) -> EncodedPairs:
  """`EncodedPairs` from ragged ids: trimmed to `num_steps` (the book), or the pairs of at
  most `max_len` tokens a side, the dropped ones counted in the log."""
  keep, width = kept_rows(src[1], tgt[1], num_steps=num_steps, max_len=max_len)
  src_ids, src_len = pack_ragged(*src, keep, width)
  tgt_ids, tgt_len = pack_ragged(*tgt, keep, width)
  sources = [pairs[i][0] for i in keep] if pairs is not None else []
  targets = [pairs[i][1] for i in keep] if pairs is not None else []
  return EncodedPairs(src_ids, src_len, tgt_ids, tgt_len, sources, targets)


def kept_rows(
  src_len: np.ndarray, tgt_len: np.ndarray, *, num_steps: int = 0, max_len: int = 0
) -> tuple[np.ndarray, int]:
  """Which pairs `pack_pairs` keeps, and the width they are padded to: all of them
  trimmed to `num_steps` (the book), or those of at most `max_len` tokens a side (the
  dropped ones counted in the log)."""
  n = len(src_len)
  if num_steps > 0:
    return np.arange(n), num_steps
  keep = np.flatnonzero(np.maximum(src_len, tgt_len) <= max_len)
  dropped = n - len(keep)
  if dropped:
    logging.info(
      'dropped %d of %d pairs longer than max_len=%d tokens (%.2f%%)',
      dropped,
      n,
      max_len,
      100.0 * dropped / max(n, 1),
    )
  return keep, max_len


def covering_length(lengths: np.ndarray, q: float) -> int:
  """The smallest length that keeps a fraction `q` of `lengths` whole."""
  return int(np.quantile(np.asarray(lengths), q, method='higher'))


@dataclasses.dataclass(frozen=True)
class Lengths:
  """How long the encoded pairs may be (`data.num_steps`, `data.max_len`,
  `data.length_quantile`)."""

  num_steps: int  # > 0: every sentence trimmed or padded to it (the book)
  max_len: int  # > 0: pairs longer than this dropped; 0: from `quantile`
  quantile: float  # max_len 0: the length that keeps this share of the pairs whole

  def max_len_of(self, pair_lengths: np.ndarray) -> int:
    """The longest sequence the model sees, for pairs of these lengths (each pair's
    longer side, `<eos>` included)."""
    if self.num_steps > 0:
      return self.num_steps
    if self.max_len > 0:
      return self.max_len
    return covering_length(pair_lengths, self.quantile)


def encode_stream(
  chunks: Iterable[list[tuple[str, str]]], src_tok: Tokenizer, tgt_tok: Tokenizer, dtype: np.dtype
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Ragged ids (flat ids, lengths) of both sides of a stream of pairs, a chunk at a time
  (one batched tokenizer call a side per chunk)."""
  src, tgt = [], []
  for chunk in chunks:
    src.append(encode_ragged(src_tok, [s for s, _ in chunk], dtype))
    tgt.append(encode_ragged(tgt_tok, [t for _, t in chunk], dtype))
  if not src:
    return (np.zeros(0, dtype), np.zeros(0, np.int64)), (np.zeros(0, dtype), np.zeros(0, np.int64))

  def joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([f for f, _ in parts]), np.concatenate([n for _, n in parts])

  return joined(src), joined(tgt)
