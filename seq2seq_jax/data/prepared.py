"""Prepared data, made once and reused: the tokenizers and every split's token ids.

Under `<data.data_dir>/seq2seq_jax/`:
- `tokenizers/<key>/`: the two tokenizer files, for a key made from the source files'
  contents (`sources.fingerprint`), the direction, the splits and the tokenizer settings;
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

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = 'seq2seq_jax'
VERSION = 1  # bump when the layout or the encoding changes
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


def load_split(directory: Path, name: str) -> dict[str, Any]:
  """The arrays of a split, memory-mapped, and its text where it was saved."""
  out: dict[str, Any] = {f: np.load(directory / f'{name}_{f}.npy', mmap_mode='r') for f in _ARRAYS}
  text_file = directory / f'{name}_text.json'
  if text_file.is_file():
    out |= json.loads(text_file.read_text())
  return out
