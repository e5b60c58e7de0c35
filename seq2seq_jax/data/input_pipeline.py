"""Input pipeline: pairs (`sources.py`) -> tokenizers -> id arrays, prepared once
(`prepared.py`: reused by later runs, memory-mapped) -> shuffled, padded NumPy batches.

Encoding goes through the tokenizers' batched calls in chunks (SentencePiece's native
threads) into ragged arrays, then packed at once; no corpus text is kept for training.

Two layouts:
- the book's (`num_steps > 0`): every sentence trimmed or padded to `num_steps`;
- length buckets (`num_steps == 0`): pairs longer than `max_len` are dropped (counted),
  each batch holds pairs of similar length padded to one of a few bucket lengths, so
  little compute goes to padding and XLA compiles one program per bucket.

Batches are a pure function of (seed, epoch, index): a `Batcher` resumes at any position.
Nothing after this module imports TFDS or the tokenizers' libraries.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from seq2seq_jax.data import text

Batch = dict[str, np.ndarray]


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
  tok: text.WordTokenizer, sentences: Sequence[str], dtype: type | np.dtype = np.int32
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


def _pack(seqs: Sequence[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
  out = np.zeros((len(seqs), width), np.int32)
  lengths = np.zeros(len(seqs), np.int32)
  for i, s in enumerate(seqs):
    s = s[:width]
    out[i, : len(s)] = s
    lengths[i] = len(s)
  return out, lengths


def encode_pairs(
  pairs: Sequence[tuple[str, str]],
  src_tok: text.WordTokenizer,
  tgt_tok: text.WordTokenizer,
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
  return select_pairs(src, tgt, pairs if keep_text else None, num_steps=num_steps, max_len=max_len)


def select_pairs(
  src: tuple[np.ndarray, np.ndarray],
  tgt: tuple[np.ndarray, np.ndarray],
  pairs: Sequence[tuple[str, str]] | None,
  *,
  num_steps: int = 0,
  max_len: int = 0,
) -> EncodedPairs:
  """`EncodedPairs` from ragged ids: trimmed to `num_steps` (the book), or the pairs of at
  most `max_len` tokens a side, the dropped ones counted in the log."""
  keep, width = selection(src[1], tgt[1], num_steps=num_steps, max_len=max_len)
  src_ids, src_len = pack_ragged(*src, keep, width)
  tgt_ids, tgt_len = pack_ragged(*tgt, keep, width)
  sources = [pairs[i][0] for i in keep] if pairs is not None else []
  targets = [pairs[i][1] for i in keep] if pairs is not None else []
  return EncodedPairs(src_ids, src_len, tgt_ids, tgt_len, sources, targets)


def selection(
  src_len: np.ndarray, tgt_len: np.ndarray, *, num_steps: int = 0, max_len: int = 0
) -> tuple[np.ndarray, int]:
  """Which pairs `select_pairs` keeps, and the width they are padded to: all of them
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


def quantile_length(lengths: np.ndarray, q: float) -> int:
  """The smallest length that keeps a fraction `q` of `lengths` whole."""
  return int(np.quantile(np.asarray(lengths), q, method='higher'))


def auto_buckets(lengths: np.ndarray, max_len: int, num_buckets: int = 8) -> tuple[int, ...]:
  """At most `num_buckets` bucket lengths, the last being `max_len`, that minimise the
  padded positions of `lengths` (each pair padded to the smallest bucket that holds it).

  Exact, by dynamic programming over the length histogram. On the full data 8 buckets pad
  ~7% of the target positions where 4 quantile buckets padded ~20%."""
  if num_buckets < 1:
    raise ValueError(f'data.num_buckets must be at least 1, got {num_buckets}')
  counts = np.bincount(np.minimum(np.asarray(lengths, np.int64), max_len), minlength=max_len + 1)
  below = np.concatenate([[0], np.cumsum(counts)])  # below[l] = pairs of length < l
  # best[k][b]: fewest positions for the pairs of length <= b with k buckets, the last b.
  best = {1: {b: below[b + 1] * b for b in range(1, max_len + 1)}}
  choice: dict[tuple[int, int], int] = {}
  for k in range(2, num_buckets + 1):
    best[k] = {}
    for b in range(1, max_len + 1):
      options = [(best[k - 1][a] + (below[b + 1] - below[a + 1]) * b, a) for a in range(1, b)]
      best[k][b], choice[k, b] = min(options) if options else (best[1][b], 0)
  k = min(best, key=lambda k: (best[k][max_len], k))  # fewest buckets among the best
  buckets, b = [], max_len
  while k >= 1 and b > 0:
    buckets.append(b)
    b = choice.get((k, b), 0) if k > 1 else 0
    k -= 1
  return tuple(sorted(buckets))


class Batcher:
  """Deterministic, resumable batches over `EncodedPairs`.

  An epoch's batch order is a pure function of (seed, epoch): within each bucket the
  pairs are permuted, cut into batches of `batch_size` (the last one filled with empty
  rows that carry no target tokens), and all batches are shuffled together. `position`
  is `(epoch, index)`; a batcher built with the same arguments and restored to a
  position yields exactly the batches an uninterrupted one would.

  For multi-host training each process passes its `shard=(index, count)` and gets its
  rows of every global batch.
  """

  def __init__(
    self,
    data: EncodedPairs,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    num_steps: int = 0,
    buckets: Sequence[int] = (),
    num_buckets: int = 8,
    shard: tuple[int, int] = (0, 1),
  ):
    if batch_size < 1:
      raise ValueError(f'batch_size must be positive, got {batch_size}')
    index, count = shard
    if batch_size % count:
      raise ValueError(f'the global batch size {batch_size} does not divide over {count} processes')
    if len(data) == 0:
      raise ValueError('no pairs to batch: the split is empty after filtering')
    self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle
    self.shard = shard
    lengths = np.maximum(data.src_len, data.tgt_len)
    if num_steps > 0:
      self.buckets = (num_steps,)
      bucket_of = np.zeros(len(data), np.int64)
    else:
      self.buckets = tuple(buckets) or auto_buckets(lengths, data.src.shape[1], num_buckets)
      bucket_of = np.searchsorted(np.asarray(self.buckets), lengths)
      if bucket_of.max() >= len(self.buckets):
        raise ValueError(
          f'a pair of length {lengths.max()} exceeds the largest bucket {self.buckets[-1]}'
        )
    self.members = [np.flatnonzero(bucket_of == b) for b in range(len(self.buckets))]
    self.epoch, self.index = 0, 0
    self._plan_epoch = -1
    self._plan: list[tuple[int, np.ndarray]] = []

  @property
  def batches_per_epoch(self) -> int:
    return sum(math.ceil(len(m) / self.batch_size) for m in self.members)

  @property
  def position(self) -> dict[str, int]:
    return {'epoch': self.epoch, 'index': self.index}

  def restore(self, position: dict[str, int]) -> None:
    self.epoch, self.index = int(position['epoch']), int(position['index'])

  def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      plan = []
      for b, members in enumerate(self.members):
        order = rng.permutation(members) if self.shuffle else members
        for start in range(0, len(order), self.batch_size):
          rows = order[start : start + self.batch_size]
          rows = np.pad(rows, (0, self.batch_size - len(rows)), constant_values=-1)
          plan.append((b, rows))
      if self.shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
      self._plan, self._plan_epoch = plan, epoch
    return self._plan

  def make_batch(self, bucket: int, rows: np.ndarray) -> Batch:
    """Pads the pairs `rows` (-1: an empty row) to the bucket's length."""
    index, count = self.shard
    per = len(rows) // count
    rows = rows[index * per : (index + 1) * per]
    return make_batch(self.data, rows, self.buckets[bucket])

  def __iter__(self) -> Iterator[Batch]:
    while True:
      plan = self._epoch_plan(self.epoch)
      if self.index >= len(plan):
        self.epoch, self.index = self.epoch + 1, 0
        continue
      bucket, rows = plan[self.index]
      self.index += 1
      yield self.make_batch(bucket, rows)

  def one_pass(self) -> Iterator[Batch]:
    """One epoch from its start, leaving the position alone (evaluation: build the
    batcher with `shuffle=False` to see every pair once, in bucket order)."""
    for bucket, rows in self._epoch_plan(0):
      yield self.make_batch(bucket, rows)


def make_batch(data: EncodedPairs, rows: np.ndarray, width: int) -> Batch:
  """Rows of `data` (-1: empty) -> `src`, `src_len`, `tgt_in` (`<bos>` + shifted target),
  `tgt_out` (the target; 0 = padding), each `[batch, width]`."""
  valid = rows >= 0
  safe = np.where(valid, rows, 0)
  src = np.where(valid[:, None], data.src[safe, :width], 0).astype(np.int32)
  src_len = np.where(valid, np.minimum(data.src_len[safe], width), 0).astype(np.int32)
  tgt_out = np.where(valid[:, None], data.tgt[safe, :width], 0).astype(np.int32)
  tgt_in = np.concatenate([np.full((len(rows), 1), text.BOS_ID, np.int32), tgt_out[:, :-1]], 1)
  tgt_in = np.where(valid[:, None], tgt_in, 0)
  return {'src': src, 'src_len': src_len, 'tgt_in': tgt_in, 'tgt_out': tgt_out}


def make_source_batch(
  src_ids: Sequence[Sequence[int]], width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Sources only (translation): trimmed to `width`, padded, with their lengths."""
  return _pack(src_ids, width)


# ---------------------------------------------------------------------------------------
# From a config to tokenizers and batches.


@dataclasses.dataclass
class Data:
  """What training needs from the pipeline."""

  src_tok: text.WordTokenizer
  tgt_tok: text.WordTokenizer
  train: EncodedPairs
  val: EncodedPairs
  max_len: int  # the longest sequence (either side, `<eos>` included) the model sees
  tgt_lang: str = 'fr'

  @property
  def score_form(self):  # noqa: ANN201
    """How translations are scored (`scoring.form_for`)."""
    from seq2seq_jax import scoring

    return scoring.form_for(self.tgt_tok.kind, self.tgt_lang)


def languages(data_cfg) -> tuple[str, str]:  # noqa: ANN001
  """The (source, target) language codes of a data config (workdirs from before the
  fields existed: English to French)."""
  return data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')


def load_pairs(data_cfg, split: str) -> list[tuple[str, str]]:  # noqa: ANN001
  """(source, target) pairs of a split of the config's data source (`sources.py`; slices
  like 'full[:512]' allowed), the first `data.max_pairs` when that is set."""
  return [pair for chunk in iter_pairs(data_cfg, split) for pair in chunk]


def iter_pairs(data_cfg, split: str) -> Iterator[list[tuple[str, str]]]:  # noqa: ANN001
  """`load_pairs` in chunks (`sources.iter_pairs`: text files are streamed)."""
  from seq2seq_jax.data import sources  # TFDS is imported there only

  left = data_cfg.max_pairs or None
  for chunk in sources.iter_pairs(data_cfg, split):
    if left is not None:
      chunk = chunk[:left]
      left -= len(chunk)
    if chunk:
      yield chunk
    if left == 0:
      return


def prepare(data_cfg, workdir: str | None) -> Data:  # noqa: ANN001
  """The tokenizers and the encoded training and validation splits (`prepared.prepare`:
  from the prepared files when this source and these settings were prepared before)."""
  from seq2seq_jax.data import prepared

  return prepared.prepare(data_cfg, workdir)
