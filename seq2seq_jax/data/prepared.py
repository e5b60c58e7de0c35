"""Prepared data, made once and reused: the tokenizers and every split's token ids
(`prepare`, which `input_pipeline.prepare` calls).

Under `<data.data_dir>/seq2seq_jax/`:
- `tokenizers/<key>/`: the two tokenizer files, for a key made from the source files'
  contents (`sources.fingerprint`), the direction, the splits (with the share and cap of
  the held-out splits carved from the training pairs) and the tokenizer settings;
- `encoded/<key>/`: `train_*.npy` and `val_*.npy` (padded ids and lengths, uint16 when the
  vocabularies allow; read back memory-mapped), `val_text.json` (the validation text, for
  BLEU) and `meta.json`, for a key made from the same plus the tokenizer files' bytes and
  the length settings.

Each is written into a temporary folder renamed into place when complete, so a
preparation killed halfway leaves nothing that is read later (its leftover is removed by
the next preparation). A source file that changed has another fingerprint, hence another
key: it is prepared anew beside the old one. Deleting `<data_dir>/seq2seq_jax` at any
time only costs a new preparation.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from seq2seq_jax.data import input_pipeline, sources, textfiles, tokenizers

ROOT = 'seq2seq_jax'
VERSION = 2  # bump when the layout or the encoding changes
_ARRAYS = ('src', 'src_len', 'tgt', 'tgt_len')


def digest(parts: Any) -> str:
  """16 hex digits of the sha1 of `parts` as sorted JSON."""
  return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(*paths: Path) -> str:
  """The sha1 of the files' bytes, in order."""
  h = hashlib.sha1()
  for path in paths:
    with open(path, 'rb') as f:
      while chunk := f.read(1 << 22):
        h.update(chunk)
  return h.hexdigest()


def tokenizer_settings(data_cfg) -> dict[str, Any]:  # noqa: ANN001
  """What the tokenizers depend on besides the source files."""
  kind = data_cfg.tokenizer
  settings: dict[str, Any] = {
    'version': VERSION,
    'kind': kind,
    'langs': [data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')],
    'train_split': data_cfg.train_split,
    'max_pairs': data_cfg.max_pairs,
    **sources.heldout_settings(data_cfg),  # which pairs the carved splits leave to train
  }
  if kind == 'word':
    settings |= {'min_freq': data_cfg.min_freq, 'num_steps': data_cfg.num_steps}
  else:
    settings |= {
      'vocab_size': data_cfg.get('vocab_size', 8000),
      'sentences': data_cfg.get('tokenizer_sentences', 0),
    }
  if data_cfg.vocab_includes_validation:
    settings['with_validation'] = data_cfg.val_split
  return settings


def encoding_settings(data_cfg, tokenizer_files: str) -> dict[str, Any]:  # noqa: ANN001
  """What the encoded splits depend on besides the source files."""
  return {
    'version': VERSION,
    'langs': [data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')],
    'splits': [data_cfg.train_split, data_cfg.val_split],
    **sources.heldout_settings(data_cfg),
    'max_pairs': data_cfg.max_pairs,
    'tokenizers': tokenizer_files,
    'num_steps': data_cfg.num_steps,
    'max_len': data_cfg.max_len,
    'length_quantile': data_cfg.length_quantile,
  }


class Store:
  """The prepared folders of one data config."""

  def __init__(self, data_cfg, fingerprint: str):  # noqa: ANN001
    self.root = Path(os.path.expanduser(data_cfg.data_dir)) / ROOT
    self.data_cfg = data_cfg
    self.fingerprint = fingerprint

  def tokenizer_dir(self) -> Path:
    key = digest([self.fingerprint, tokenizer_settings(self.data_cfg)])
    return self.root / 'tokenizers' / key

  def encoded_dir(self, tokenizer_files: str) -> Path:
    key = digest([self.fingerprint, encoding_settings(self.data_cfg, tokenizer_files)])
    return self.root / 'encoded' / key


def complete(directory: Path) -> bool:
  return (directory / 'meta.json').is_file()


def write_atomically(directory: Path, write: Callable[[Path], dict[str, Any]]) -> None:
  """`write(tmp)` fills a temporary folder and returns its metadata; then `meta.json`
  and the rename make it `directory` at once. A concurrent writer of the same folder
  (another process) wins or loses the rename harmlessly: the contents are the same."""
  directory.parent.mkdir(parents=True, exist_ok=True)
  for stale in directory.parent.glob(f'.tmp-{directory.name}-*'):
    pid = stale.name.rsplit('-', 1)[-1]
    if not (pid.isdigit() and _alive(int(pid))):
      shutil.rmtree(stale, ignore_errors=True)  # left by a killed preparation
  tmp = directory.parent / f'.tmp-{directory.name}-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    meta = write(tmp)
    (tmp / 'meta.json').write_text(json.dumps(meta, indent=1, sort_keys=True))
    try:
      os.rename(tmp, directory)
    except OSError:
      if not complete(directory):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def save_split(directory: Path, name: str, enc: Any, with_text: bool) -> None:
  """Writes an `EncodedPairs`' arrays (and its text when `with_text`)."""
  for field in _ARRAYS:
    np.save(directory / f'{name}_{field}.npy', getattr(enc, field))
  if with_text:
    text = {'sources': enc.sources, 'targets': enc.targets}
    (directory / f'{name}_text.json').write_text(json.dumps(text, ensure_ascii=False))


def save_ragged_split(
  directory: Path,
  name: str,
  src: tuple[np.ndarray, np.ndarray],
  tgt: tuple[np.ndarray, np.ndarray],
  *,
  num_steps: int,
  max_len: int,
) -> int:
  """The arrays `save_split` writes for `select_pairs(src, tgt, ...)`, padded and written a
  chunk of rows at a time, so the padded arrays are never all in memory. The row count."""
  keep, width = input_pipeline.selection(src[1], tgt[1], num_steps=num_steps, max_len=max_len)
  for side, (flat, lengths) in (('src', src), ('tgt', tgt)):
    starts = input_pipeline.ragged_starts(lengths)
    with open(directory / f'{name}_{side}.npy', 'wb') as f:
      header = {
        'descr': np.lib.format.dtype_to_descr(flat.dtype),
        'fortran_order': False,
        'shape': (len(keep), width),
      }
      np.lib.format.write_array_header_2_0(f, header)
      for lo in range(0, len(keep), textfiles.CHUNK):
        rows = keep[lo : lo + textfiles.CHUNK]
        f.write(input_pipeline.pack_ragged(flat, lengths, rows, width, starts)[0].tobytes())
    np.save(directory / f'{name}_{side}_len.npy', np.minimum(lengths[keep], width).astype(np.int32))
  return len(keep)


def release_memory() -> None:
  """Gives the heap the preparation freed back to the system (glibc's `malloc_trim`), so
  that training's peak does not carry it."""
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass  # not glibc: nothing to trim


def load_split(directory: Path, name: str) -> dict[str, Any]:
  """The arrays of a split, memory-mapped, and its text where it was saved."""
  out: dict[str, Any] = {f: np.load(directory / f'{name}_{f}.npy', mmap_mode='r') for f in _ARRAYS}
  text_file = directory / f'{name}_text.json'
  if text_file.is_file():
    out |= json.loads(text_file.read_text())
  return out


def sample_pairs(
  chunks: Iterable[list[tuple[str, str]]], k: int, seed: int = 0
) -> list[tuple[str, str]]:
  """A uniform random sample of `k` pairs of a stream (all of them when it holds fewer),
  in stream order, holding at most `k` at a time (reservoir sampling, seeded: the same
  on every host and every run)."""
  rng = np.random.default_rng(seed)
  kept: list[tuple[int, tuple[str, str]]] = []
  seen = 0
  for chunk in chunks:
    fill = min(len(chunk), max(k - seen, 0))
    kept += [(seen + i, chunk[i]) for i in range(fill)]
    if fill < len(chunk):  # pair i (0-based, i >= k) replaces slot j when j < k
      index = np.arange(seen + fill, seen + len(chunk))
      slot = rng.integers(0, index + 1)
      for i in np.flatnonzero(slot < k):
        kept[slot[i]] = (int(index[i]), chunk[fill + i])
    seen += len(chunk)
  return [pair for _, pair in sorted(kept, key=lambda item: item[0])]


def _train_tokenizers(data_cfg, train_chunks, val_pairs):  # noqa: ANN001, ANN202
  """SentencePiece on a sample of `data.tokenizer_sentences` training pairs (streamed);
  word tokens on all of them."""
  sample = data_cfg.get('tokenizer_sentences', 0)
  if data_cfg.tokenizer == 'sentencepiece' and sample > 0:
    pairs = sample_pairs(train_chunks(), sample)
  else:
    pairs = [pair for chunk in train_chunks() for pair in chunk]
  if not pairs:
    raise ValueError(f'the training split {data_cfg.train_split!r} is empty')
  if data_cfg.vocab_includes_validation:
    pairs += val_pairs()
  return tokenizers.train(
    data_cfg.tokenizer,
    pairs,
    min_freq=data_cfg.min_freq,
    num_steps=data_cfg.num_steps or None,
    vocab_size=data_cfg.get('vocab_size', 8000),
  )


def encode_stream(
  chunks: Iterable[list[tuple[str, str]]], src_tok: Any, tgt_tok: Any, dtype: np.dtype
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Ragged ids (flat ids, lengths) of both sides of a stream of pairs, a chunk at a time
  (one batched tokenizer call a side per chunk)."""
  src, tgt = [], []
  for chunk in chunks:
    src.append(input_pipeline.encode_ragged(src_tok, [s for s, _ in chunk], dtype))
    tgt.append(input_pipeline.encode_ragged(tgt_tok, [t for _, t in chunk], dtype))
  if not src:
    return (np.zeros(0, dtype), np.zeros(0, np.int64)), (np.zeros(0, dtype), np.zeros(0, np.int64))

  def joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([f for f, _ in parts]), np.concatenate([n for _, n in parts])

  return joined(src), joined(tgt)


def _save_tokenizers(src_tok, tgt_tok, directory, kind: str) -> None:  # noqa: ANN001
  src_path, tgt_path = tokenizers.paths(directory, kind)
  src_tok.save(src_path)
  tgt_tok.save(tgt_path)


def prepare(data_cfg, workdir: str | None) -> input_pipeline.Data:  # noqa: ANN001
  """The tokenizers and the encoded training and validation splits, from the prepared
  files (this module) when this source and these settings were prepared before, else
  prepared now (and saved there). Tokenizers saved in `workdir` (a resumed run) win."""
  if data_cfg.tokenizer == 'auto':
    data_cfg = data_cfg.copy_and_resolve_references()
    data_cfg.tokenizer = tokenizers.resolve_kind(data_cfg)
  kind = data_cfg.tokenizer
  tokenizers.check_kind(kind)
  store = Store(data_cfg, sources.fingerprint(data_cfg))

  def train_chunks() -> Iterator[list[tuple[str, str]]]:
    """The training pairs, streamed anew on each call (never all held as text)."""
    return input_pipeline.iter_pairs(data_cfg, data_cfg.train_split)

  @functools.cache
  def val_pairs() -> list[tuple[str, str]]:
    return input_pipeline.load_pairs(data_cfg, data_cfg.val_split)

  if workdir and all(p.exists() for p in tokenizers.paths(workdir, kind)):
    tok_dir = Path(workdir)
  else:
    tok_dir = store.tokenizer_dir()
    if not complete(tok_dir):

      def write_tokenizers(tmp: Path) -> dict:
        src, tgt = _train_tokenizers(data_cfg, train_chunks, val_pairs)
        _save_tokenizers(src, tgt, tmp, kind)
        return {'settings': tokenizer_settings(data_cfg), 'source': store.fingerprint}

      sources.prepare(data_cfg)  # TFDS's preparation, timed and logged on its own
      t0 = time.perf_counter()
      logging.info('data: training the %s tokenizers (once for this source)', kind)
      write_atomically(tok_dir, write_tokenizers)
      logging.info('data: trained the tokenizers in %.1f s', time.perf_counter() - t0)
    if workdir:
      Path(workdir).mkdir(parents=True, exist_ok=True)
      for path in tokenizers.paths(tok_dir, kind):
        shutil.copyfile(path, Path(workdir) / path.name)
  src_tok, tgt_tok = tokenizers.load(tok_dir, kind)
  tok_files = file_digest(*tokenizers.paths(tok_dir, kind))
  enc_dir = store.encoded_dir(tok_files)
  if complete(enc_dir):
    logging.info('data: reusing the prepared splits in %s', enc_dir)
  else:

    def write_splits(tmp: Path) -> dict:
      dtype = input_pipeline.id_dtype(src_tok.vocab_size, tgt_tok.vocab_size)
      src, tgt = encode_stream(train_chunks(), src_tok, tgt_tok, dtype)
      if not len(src[1]):
        raise ValueError(f'the training split {data_cfg.train_split!r} is empty')
      if data_cfg.num_steps > 0:
        max_len = data_cfg.num_steps
      elif data_cfg.max_len > 0:
        max_len = data_cfg.max_len
      else:
        max_len = input_pipeline.quantile_length(
          np.maximum(src[1], tgt[1]), data_cfg.length_quantile
        )
      enc = dict(num_steps=data_cfg.num_steps, max_len=max_len)
      save_ragged_split(tmp, 'train', src, tgt, **enc)
      del src, tgt
      val = input_pipeline.encode_pairs(val_pairs(), src_tok, tgt_tok, **enc)
      save_split(tmp, 'val', val, with_text=True)
      return {
        'max_len': max_len,
        'settings': encoding_settings(data_cfg, tok_files),
        'source': store.fingerprint,
      }

    t0 = time.perf_counter()
    logging.info('data: encoding the training and validation splits (once for these settings)')
    write_atomically(enc_dir, write_splits)
    logging.info('data: prepared the splits in %s in %.1f s', enc_dir, time.perf_counter() - t0)
  val_pairs.cache_clear()  # no corpus text is kept beyond this point
  release_memory()
  meta = json.loads((enc_dir / 'meta.json').read_text())
  train = input_pipeline.EncodedPairs(**load_split(enc_dir, 'train'))
  val = input_pipeline.EncodedPairs(**load_split(enc_dir, 'val'))
  max_len = int(meta['max_len'])
  src_lang, tgt_lang = input_pipeline.languages(data_cfg)
  sources.report_slice(data_cfg)  # a slice of the small configs on another corpus: warned
  logging.info(
    'data: %d training pairs, %d validation pairs, max length %d, vocabularies %d (%s) / %d (%s)',
    len(train),
    len(val),
    max_len,
    src_tok.vocab_size,
    src_lang,
    tgt_tok.vocab_size,
    tgt_lang,
  )
  return input_pipeline.Data(src_tok, tgt_tok, train, val, max_len, tgt_lang)
