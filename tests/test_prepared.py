"""Prepared data: made once per source and settings, reused, never read half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from configs import tiny
from seq2seq_jax.data import (
  encoding,
  input_pipeline,
  prepared,
  splitfiles,
  tatoeba,
  textfiles,
  tokenizers,
)
from tests import synthetic


def _config(tmp_path: Path, **data: object):
  config = tiny.get_config()
  config.data.manual_dir = str(synthetic.write_fra_txt(tmp_path / 'data', n=80))
  config.data.data_dir = str(tmp_path / 'tfds')
  for key, value in data.items():
    config.data[key] = value
  return config


def _same(a: input_pipeline.Data, b: input_pipeline.Data) -> None:
  for split in ('train', 'val'):
    for field in ('src', 'src_len', 'tgt', 'tgt_len'):
      np.testing.assert_array_equal(
        getattr(getattr(a, split), field), getattr(getattr(b, split), field)
      )
  assert a.val.sources == b.val.sources and a.max_len == b.max_len


def test_a_second_start_reads_no_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  config = _config(tmp_path)
  first = input_pipeline.prepare(config.data, str(tmp_path / 'run1'))
  assert first.train.src.dtype == np.uint16 and first.train.sources == []  # no training text
  assert isinstance(first.train.src, np.memmap)
  assert len(first.val.sources) == len(first.val) == 16

  def no_text(*args: object) -> None:
    raise AssertionError('the prepared splits must be reused')

  monkeypatch.setattr(tatoeba.TatoebaSource, 'iter_pairs', no_text)
  second = input_pipeline.prepare(config.data, str(tmp_path / 'run2'))  # a new workdir
  _same(first, second)
  for name in tokenizers.FILES['word']:
    assert (tmp_path / 'run1' / name).read_bytes() == (tmp_path / 'run2' / name).read_bytes()
  root = tmp_path / 'tfds' / prepared.ROOT
  assert len(list((root / 'encoded').iterdir())) == len(list((root / 'tokenizers').iterdir())) == 1


def test_the_encoding_is_the_books(tmp_path: Path) -> None:
  config = _config(tmp_path)
  data = input_pipeline.prepare(config.data, None)
  train_pairs = input_pipeline.load_pairs(config.data, config.data.train_split)
  direct = input_pipeline.encode_pairs(
    train_pairs, data.src_tok, data.tgt_tok, num_steps=config.data.num_steps
  )
  np.testing.assert_array_equal(data.train.src, direct.src)
  np.testing.assert_array_equal(data.train.tgt_len, direct.tgt_len)
  for (en, fr), row, n in zip(train_pairs, direct.tgt, direct.tgt_len, strict=True):
    ids = data.tgt_tok.encode(fr)[: config.data.num_steps]
    assert list(row[:n]) == ids and not row[n:].any()
    assert data.src_tok.encode(en)[:6] == list(direct.src[train_pairs.index((en, fr))][:6])


def test_a_changed_source_or_setting_is_prepared_anew(tmp_path: Path) -> None:
  config = _config(tmp_path)
  first = input_pipeline.prepare(config.data, None)
  synthetic.write_fra_txt(tmp_path / 'data', n=80, seed=1)  # the same file name, new text
  changed = input_pipeline.prepare(config.data, None)
  assert (
    not np.array_equal(first.val.src, changed.val.src) or first.val.sources != changed.val.sources
  )
  config.data.max_pairs = 40
  fewer = input_pipeline.prepare(config.data, None)
  assert len(fewer.train) == 40 and len(changed.train) == 64
  encoded = tmp_path / 'tfds' / prepared.ROOT / 'encoded'
  assert len(list(encoded.iterdir())) == 3


def test_a_preparation_killed_halfway_is_redone(
  tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  config = _config(tmp_path)
  original = encoding.pack_pairs

  def killed(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C halfway through the encoding

  monkeypatch.setattr(encoding, 'pack_pairs', killed)
  with pytest.raises(KeyboardInterrupt):
    input_pipeline.prepare(config.data, None)
  encoded = tmp_path / 'tfds' / prepared.ROOT / 'encoded'
  assert list(encoded.iterdir()) == []  # nothing half-written stays
  stale = encoded / '.tmp-0123456789abcdef-999999999'  # as a SIGKILL leaves it
  stale.mkdir()
  (stale / 'train_src.npy').write_bytes(b'half')
  monkeypatch.setattr(encoding, 'pack_pairs', original)
  data = input_pipeline.prepare(config.data, None)
  assert len(data.train) == 64
  (done,) = [p for p in encoded.iterdir() if not p.name.startswith('.tmp')]
  assert json.loads((done / 'meta.json').read_text())['max_len'] == data.max_len
  splitfiles.write_atomically(encoded / '0123456789abcdef', lambda tmp: {})  # cleans up
  assert not stale.exists()


def test_sentencepiece_batched_encoding() -> None:
  pairs = synthetic.make_pairs(300)
  src_tok, _ = tokenizers.train('sentencepiece', pairs, vocab_size=60)
  sentences = [s for s, _ in pairs[:50]] + ['Il\u202fest là\xa0!', '']
  assert src_tok.encode_batch(sentences) == [src_tok.encode(s) for s in sentences]
  flat, lengths = encoding.encode_ragged(src_tok, sentences, np.uint16)
  assert lengths.tolist() == [len(src_tok.encode(s)) for s in sentences]
  assert flat.tolist() == sum((src_tok.encode(s) for s in sentences), [])


def test_sample_pairs_is_a_seeded_uniform_sample_in_stream_order() -> None:
  stream = [[(str(i), str(-i)) for i in range(lo, lo + 100)] for lo in range(0, 1000, 100)]
  sample = prepared.sample_pairs(stream, 50)
  assert len(sample) == 50 == len(set(sample)) and prepared.sample_pairs(stream, 50) == sample
  index = [int(s) for s, _ in sample]
  assert index == sorted(index) and all(t == str(-int(s)) for s, t in sample)
  assert 250 < np.mean(index) < 750 and max(index) > 900  # not the first 50
  assert prepared.sample_pairs(stream, 5000) == [p for c in stream for p in c]
  counts = np.zeros(1000)
  for seed in range(200):
    counts[[int(s) for s, _ in prepared.sample_pairs(stream, 100, seed)]] += 1
  assert abs(counts[:500].sum() - counts[500:].sum()) < 0.1 * counts.sum()  # uniform


def test_chunked_sentencepiece_preparation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  """A streamed preparation (a chunk of 5 pairs at a time, SentencePiece trained on a
  sample of 30 pairs) gives the arrays that encoding the whole split at once gives."""
  config = _config(tmp_path, tokenizer='sentencepiece', vocab_size=60, tokenizer_sentences=30)
  config.data.vocab_includes_validation = False
  monkeypatch.setattr(textfiles, 'CHUNK', 5)
  trained, train = [], tokenizers.train

  def counted(kind: str, pairs: list, **kwargs: object):  # noqa: ANN202
    trained.append(len(pairs))
    return train(kind, pairs, **kwargs)

  monkeypatch.setattr(tokenizers, 'train', counted)
  data = input_pipeline.prepare(config.data, None)
  assert trained == [30]
  direct = input_pipeline.encode_pairs(
    input_pipeline.load_pairs(config.data, config.data.train_split),
    data.src_tok,
    data.tgt_tok,
    num_steps=config.data.num_steps,
    max_len=data.max_len,
  )
  np.testing.assert_array_equal(data.train.src, direct.src)
  np.testing.assert_array_equal(data.train.tgt, direct.tgt)
  np.testing.assert_array_equal(data.train.tgt_len, direct.tgt_len)


def test_the_tfds_preparation_is_timed_and_logged_on_its_own(
  tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  import sys

  from absl import logging
  from tensorflow_datasets.core.utils import tqdm_utils

  lines = []
  monkeypatch.setattr(logging, 'info', lambda msg, *a, **_: lines.append(msg % a if a else msg))
  input_pipeline.prepare(_config(tmp_path).data, None)
  at = {
    key: next(i for i, line in enumerate(lines) if line.startswith(key))
    for key in (
      'data: prepared the TFDS dataset tatoeba/',
      'data: training the word tokenizers',
      'data: trained the tokenizers in',
    )
  }
  assert list(at.values()) == sorted(at.values()), lines  # the tokenizers' time excludes it
  if not sys.stderr.isatty():  # a log file: no progress bars (their `[A` codes) from TFDS
    assert isinstance(tqdm_utils.tqdm(total=1), tqdm_utils.EmptyTqdm)
