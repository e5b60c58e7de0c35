"""Tests for the input pipeline on made-up pairs: encoding (`encoding.py`), batches and the
`Batcher` (`batching.py`), and `input_pipeline.prepare`."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest

from seq2seq_jax.data import batching, encoding, text
from seq2seq_jax.data import input_pipeline as ip

WORDS_EN = ['i', 'you', 'see', 'like', 'the', 'cat', 'dog', 'a', 'big', 'red', 'house', 'now']
WORDS_FR = ['je', 'tu', 'vois', 'aime', 'le', 'chat', 'chien', 'un', 'grand', 'rouge', 'maison']


def _pairs(n: int = 57, seed: int = 0) -> list[tuple[str, str]]:
  """Unique English sentences of 1-8 words (+ '.'), French ones of 1-9 words."""
  rng = np.random.default_rng(seed)
  pairs, seen = [], set()
  while len(pairs) < n:
    en = ' '.join(rng.choice(WORDS_EN, rng.integers(1, 9))).capitalize() + '.'
    if en in seen:
      continue
    seen.add(en)
    fr = ' '.join(rng.choice(WORDS_FR, rng.integers(1, 10))).capitalize() + ' !'
    pairs.append((en, fr))
  return pairs


PAIRS = _pairs()
SRC_TOK = text.WordTokenizer.train((en for en, _ in PAIRS), min_freq=1)
TGT_TOK = text.WordTokenizer.train((fr for _, fr in PAIRS), min_freq=1)
MAX_LEN = 9


def _lengths(pairs: list[tuple[str, str]]) -> list[tuple[int, int]]:
  return [(len(SRC_TOK.encode(en)), len(TGT_TOK.encode(fr))) for en, fr in pairs]


def test_encode_pairs_book_mode_trims_and_pads() -> None:
  data = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, num_steps=4)
  assert len(data) == len(PAIRS)  # nothing dropped
  assert data.src.shape == data.tgt.shape == (len(PAIRS), 4)
  assert data.sources == [en for en, _ in PAIRS] and data.targets == [fr for _, fr in PAIRS]
  for i, (en, fr) in enumerate(PAIRS):
    for ids, row, length in [
      (SRC_TOK.encode(en), data.src[i], data.src_len[i]),
      (TGT_TOK.encode(fr), data.tgt[i], data.tgt_len[i]),
    ]:
      kept = ids[:4]  # the book trims (losing <eos>) or pads with 0
      assert length == len(kept)
      np.testing.assert_array_equal(row, kept + [text.PAD_ID] * (4 - len(kept)))
  assert (data.src_len == 4).any() and (data.src_len < 4).any()  # both cases happen


def test_encode_pairs_bucket_mode_drops_only_long_pairs() -> None:
  max_len = 6
  data = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, max_len=max_len)
  keep = [i for i, (s, t) in enumerate(_lengths(PAIRS)) if max(s, t) <= max_len]
  assert 0 < len(keep) < len(PAIRS)
  assert len(data) == len(keep)
  assert data.src.shape == (len(keep), max_len)
  assert data.sources == [PAIRS[i][0] for i in keep]
  assert data.targets == [PAIRS[i][1] for i in keep]
  for j, i in enumerate(keep):  # kept pairs are whole, <eos> included
    src = SRC_TOK.encode(PAIRS[i][0])
    assert data.src_len[j] == len(src)
    np.testing.assert_array_equal(data.src[j, : len(src)], src)
    assert data.src[j, len(src) - 1] == text.EOS_ID and not data.src[j, len(src) :].any()
    assert data.tgt[j, data.tgt_len[j] - 1] == text.EOS_ID
  everything = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, max_len=100)
  assert len(everything) == len(PAIRS)


def test_make_batch_shifts_targets_and_empties_rows() -> None:
  data = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, max_len=MAX_LEN)
  rows = np.array([3, -1, 0, 5])
  batch = ip.make_batch(data, rows, MAX_LEN)
  assert set(batch) == {'src', 'src_len', 'tgt_in', 'tgt_out'}
  for v in batch.values():
    assert v.dtype == np.int32 and v.shape[0] == 4
  for j, i in enumerate(rows):
    if i < 0:
      for v in batch.values():
        assert not v[j].any()  # an empty row: no source, no target tokens
      continue
    np.testing.assert_array_equal(batch['src'][j], data.src[i])
    assert batch['src_len'][j] == data.src_len[i]
    np.testing.assert_array_equal(batch['tgt_out'][j], data.tgt[i])
    # Teacher forcing: <bos>, then the target shifted by one (past the target's end the
    # labels are padding, so whatever tgt_in holds there is never scored).
    np.testing.assert_array_equal(batch['tgt_in'][j], [text.BOS_ID, *data.tgt[i][:-1]])
  # A narrower width (a smaller bucket) cuts the padding columns.
  narrow = ip.make_batch(data, np.array([0]), int(data.src_len[0]))
  assert narrow['src'].shape == (1, data.src_len[0])
  np.testing.assert_array_equal(narrow['src'][0], data.src[0, : data.src_len[0]])


def _data() -> ip.EncodedPairs:
  return ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, max_len=MAX_LEN)


def _take(batcher: ip.Batcher, n: int) -> list[dict[str, np.ndarray]]:
  it = iter(batcher)
  return [next(it) for _ in range(n)]


def _real_rows(batches: list[dict[str, np.ndarray]]) -> collections.Counter:
  rows = collections.Counter()
  for b in batches:
    for src, n in zip(b['src'], b['src_len'], strict=True):
      if n:
        rows[tuple(src[:n])] += 1
  return rows


def _same(a: list[dict], b: list[dict]) -> bool:
  return len(a) == len(b) and all(
    x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    for x, y in zip(a, b, strict=True)
  )


BUCKETS = (4, 6, MAX_LEN)


def test_batcher_sees_every_pair_once_per_epoch() -> None:
  data = _data()
  batcher = ip.Batcher(data, 8, seed=0, buckets=BUCKETS)
  n = batcher.batches_per_epoch
  expected = collections.Counter(tuple(s[:k]) for s, k in zip(data.src, data.src_len, strict=True))
  assert len(expected) == len(data)  # unique sources: rows can be recognised
  epoch0, epoch1 = _take(batcher, n), _take(batcher, n)
  position = batcher.position
  assert position['epoch'] * n + position['index'] == 2 * n  # (1, n) or (2, 0)
  for epoch in (epoch0, epoch1):
    assert _real_rows(epoch) == expected
    tokens = sum(int((b['tgt_out'] != 0).sum()) for b in epoch)
    assert tokens == int(data.tgt_len.sum())
  bounds = dict(zip(BUCKETS, (0, *BUCKETS[:-1]), strict=True))
  for b in epoch0:
    width = b['src'].shape[1]
    assert width in BUCKETS
    for v in b.values():
      assert v.shape[0] == 8 and (v.ndim == 1 or v.shape == (8, width))
    real = b['src_len'] > 0
    lengths = np.maximum(b['src_len'], (b['tgt_out'] != 0).sum(1))[real]
    assert np.all(lengths <= width) and np.all(lengths > bounds[width])  # the right bucket
  # The last batch of each bucket is filled with empty rows: one per bucket at most.
  counts = collections.Counter(b['src'].shape[1] for b in epoch0)
  assert n == sum(counts.values())
  per_bucket = collections.Counter(
    int(b['src'].shape[1]) for b in epoch0 if (b['src_len'] == 0).any()
  )
  assert all(v == 1 for v in per_bucket.values())


def test_batcher_order_is_a_function_of_seed_and_epoch() -> None:
  data = _data()
  a, b, c = (ip.Batcher(data, 8, seed=s, buckets=BUCKETS) for s in (0, 0, 1))
  n = a.batches_per_epoch
  a0, a1 = _take(a, n), _take(a, n)
  assert _same(a0 + a1, _take(b, 2 * n))
  assert not _same(a0, _take(c, n))
  assert not _same(a0, a1)
  assert _real_rows(a0) == _real_rows(a1)  # the same pairs, in another order
  # Restored at an epoch's end, a batcher goes on with the next epoch.
  d = ip.Batcher(data, 8, seed=0, buckets=BUCKETS)
  d.restore({'epoch': 0, 'index': n})
  assert _same(_take(d, n), a1)


def test_batcher_resumes_mid_epoch() -> None:
  data = _data()
  uninterrupted = ip.Batcher(data, 8, seed=3, buckets=BUCKETS)
  n = uninterrupted.batches_per_epoch
  first = _take(uninterrupted, n + 2)  # into the second epoch
  stop = n // 2
  interrupted = ip.Batcher(data, 8, seed=3, buckets=BUCKETS)
  _take(interrupted, n + stop)
  position = dict(interrupted.position)
  assert position == {'epoch': 1, 'index': stop}
  resumed = ip.Batcher(data, 8, seed=3, buckets=BUCKETS)
  resumed.restore(position)
  rest = _take(resumed, n)  # the rest of epoch 1 and part of epoch 2
  more = _take(uninterrupted, n + stop - 2)
  assert _same(rest, (first + more)[n + stop :])
  assert resumed.position == uninterrupted.position == {'epoch': 2, 'index': stop}


def test_batcher_shards_split_each_global_batch() -> None:
  data = _data()
  whole = _take(ip.Batcher(data, 8, seed=5, buckets=BUCKETS), 10)
  halves = [_take(ip.Batcher(data, 8, seed=5, buckets=BUCKETS, shard=(i, 2)), 10) for i in (0, 1)]
  for g, h0, h1 in zip(whole, *halves, strict=True):
    for k in g:
      assert h0[k].shape[0] == h1[k].shape[0] == 4
      np.testing.assert_array_equal(np.concatenate([h0[k], h1[k]]), g[k])


def test_batcher_book_mode_and_one_pass() -> None:
  data = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, num_steps=5)
  batcher = ip.Batcher(data, 16, seed=0, num_steps=5, shuffle=False)
  assert batcher.buckets == (5,)
  batches = list(batcher.one_pass())
  assert len(batches) == batcher.batches_per_epoch == -(-len(PAIRS) // 16)
  assert batcher.position == {'epoch': 0, 'index': 0}  # one_pass leaves it alone
  src = np.concatenate([b['src'] for b in batches])[: len(PAIRS)]
  np.testing.assert_array_equal(src, data.src)  # in order without shuffling
  assert all(b['src'].shape == (16, 5) for b in batches)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(batch_size=6, shard=(0, 4)), 'does not divide'),
    (dict(batch_size=0), 'positive'),
    (dict(batch_size=8, buckets=(4, 6)), 'exceeds the largest bucket'),
  ],
)
def test_batcher_rejects_bad_arguments(kwargs: dict, match: str) -> None:
  with pytest.raises(ValueError, match=match):
    ip.Batcher(_data(), seed=0, **kwargs)


def test_batcher_rejects_empty_data() -> None:
  empty = ip.encode_pairs(PAIRS, SRC_TOK, TGT_TOK, max_len=1)
  assert len(empty) == 0
  with pytest.raises(ValueError, match='empty'):
    ip.Batcher(empty, 8, seed=0)


def test_auto_buckets_and_covering_length() -> None:
  lengths = np.array([2, 3, 3, 4, 5, 5, 6, 7, 8, 9])
  buckets = batching.auto_buckets(lengths, 9, num_buckets=4)
  assert buckets[-1] == 9 and list(buckets) == sorted(set(buckets))
  assert all(0 < b <= 9 for b in buckets) and len(buckets) <= 4
  assert batching.auto_buckets(np.array([], int), 7) == (7,)
  pair_lengths = np.array([max(s, t) for s, t in _lengths(PAIRS)])
  assert encoding.covering_length(pair_lengths, 1.0) == pair_lengths.max()
  q = encoding.covering_length(pair_lengths, 0.5)
  kept = sum(max(s, t) <= q for s, t in _lengths(PAIRS))
  assert kept >= len(PAIRS) / 2 > sum(max(s, t) <= q - 1 for s, t in _lengths(PAIRS))


def test_make_source_batch_trims_and_pads() -> None:
  src, lengths = ip.make_source_batch([[5, 6, 2], [7, 8, 9, 10, 11, 2], [2]], 4)
  np.testing.assert_array_equal(src, [[5, 6, 2, 0], [7, 8, 9, 10], [2, 0, 0, 0]])
  np.testing.assert_array_equal(lengths, [3, 4, 1])


def _padded_positions(lengths: np.ndarray, buckets: tuple[int, ...]) -> int:
  return int(np.asarray(buckets)[np.searchsorted(np.asarray(buckets), lengths)].sum())


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_auto_buckets_pad_least(seed: int) -> None:
  """The chosen buckets pad no more than any other choice of as many (brute force)."""
  rng = np.random.default_rng(seed)
  max_len = 10
  lengths = np.minimum(rng.geometric(0.25, size=200), max_len)
  for k in (1, 2, 3, 4):
    buckets = batching.auto_buckets(lengths, max_len, num_buckets=k)
    assert buckets[-1] == max_len and len(buckets) <= k
    assert list(buckets) == sorted(set(buckets))
    best = min(
      _padded_positions(lengths, inner + (max_len,))
      for inner in itertools.combinations(range(1, max_len), k - 1)
    )
    assert _padded_positions(lengths, buckets) == best
  with pytest.raises(ValueError, match='num_buckets'):
    batching.auto_buckets(lengths, max_len, num_buckets=0)


def test_prepare_french_to_english(tmp_path: Path) -> None:
  from configs import tiny
  from tests import synthetic

  config = tiny.get_config()
  config.data.manual_dir = str(synthetic.write_fra_txt(tmp_path / 'data', n=80))
  config.data.data_dir = str(tmp_path / 'tfds')
  forward = ip.prepare(config.data, None)
  config.data.src_lang, config.data.tgt_lang = 'fr', 'en'
  reverse = ip.prepare(config.data, None)
  pairs = dict(synthetic.make_pairs(80))
  assert reverse.train.sources[:64] == forward.train.targets[:64]  # 'full[:64]': file order
  assert all(
    pairs[en] == fr for fr, en in zip(reverse.train.sources, reverse.train.targets, strict=True)
  )
  assert reverse.src_tok.vocab.idx_to_token == forward.tgt_tok.vocab.idx_to_token
  assert (
    'chat' in reverse.src_tok.vocab.token_to_idx and 'cat' in reverse.tgt_tok.vocab.token_to_idx
  )
