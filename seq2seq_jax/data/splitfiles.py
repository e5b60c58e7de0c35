"""The files of prepared data: folders written whole or not at all (`write_atomically`),
splits of token ids saved as `.npy` files (padded a chunk of rows at a time) and read
back memory-mapped, and the heap given back after a preparation (`prepared.py` decides
what to write where)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seq2seq_jax.data import encoding, textfiles

_ARRAYS = ('src', 'src_len', 'tgt', 'tgt_len')


def complete(directory: Path) -> bool:
  """Whether a prepared folder was written to the end (its `meta.json` is last)."""
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


def save_split(directory: Path, name: str, enc: encoding.EncodedPairs, with_text: bool) -> None:
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
  """The arrays `save_split` writes for `encoding.pack_pairs(src, tgt, ...)`, padded and
  written a chunk of rows at a time, so the padded arrays are never all in memory. The
  row count."""
  keep, width = encoding.kept_rows(src[1], tgt[1], num_steps=num_steps, max_len=max_len)
  for side, (flat, lengths) in (('src', src), ('tgt', tgt)):
    starts = encoding.ragged_starts(lengths)
    with open(directory / f'{name}_{side}.npy', 'wb') as f:
      header = {
        'descr': np.lib.format.dtype_to_descr(flat.dtype),
        'fortran_order': False,
        'shape': (len(keep), width),
      }
      np.lib.format.write_array_header_2_0(f, header)
      for lo in range(0, len(keep), textfiles.CHUNK):
        rows = keep[lo : lo + textfiles.CHUNK]
        f.write(encoding.pack_ragged(flat, lengths, rows, width, starts)[0].tobytes())
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


def load_split(directory: Path, name: str) -> encoding.EncodedPairs:
  """The arrays of a split, memory-mapped, and its text where it was saved."""
  out: dict[str, Any] = {f: np.load(directory / f'{name}_{f}.npy', mmap_mode='r') for f in _ARRAYS}
  text_file = directory / f'{name}_text.json'
  if text_file.is_file():
    out |= json.loads(text_file.read_text())
  return encoding.EncodedPairs(**out)
