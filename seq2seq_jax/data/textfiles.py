"""Streams of pairs: parallel text files and TSV files read line by line (a pass over a
corpus of any size holds one block of `CHUNK` lines of its text), split names with
slices (`parse_split`), streams cut into chunks (`chunked`) and the digest of files'
bytes (`file_digest`). Line counts are checked before the first pair, a line that is
not UTF-8 is a one-line error naming the file and line, and a line empty on one side
only is skipped and counted (`filesources.py` chooses what to read)."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from absl import logging

from seq2seq_jax import errors
from seq2seq_jax.data import text

CHUNK = 65536  # pairs per chunk of a stream (lines per block read)
_SPLIT = re.compile(r'^(?P<name>[A-Za-z_][\w-]*)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$')


class SourceError(errors.UserError):
  """A data source that cannot be read as asked; the message says why."""


def _line_blocks(path: Path, size: int = 0) -> Iterator[list[str]]:
  """A UTF-8 file's lines (without line ends) in blocks of `size`; a line that is not
  UTF-8 is a one-line error naming the file and the line."""
  number, size = 0, size or CHUNK
  with open(path, 'rb') as f:
    while raw := list(itertools.islice(f, size)):
      try:
        lines = [line.decode('utf-8') for line in raw]
      except UnicodeDecodeError:
        for i, line in enumerate(raw):
          try:
            line.decode('utf-8')
          except UnicodeDecodeError as e:
            bad = f'line {number + i + 1} is not valid UTF-8 ({e.reason})'
            raise SourceError(f'{path}: {bad}') from None
      if number == 0:
        lines[0] = lines[0].removeprefix('\ufeff')
      number += len(lines)
      yield [line.removesuffix('\n').removesuffix('\r') for line in lines]


def count_lines(path: Path) -> int:
  """Lines of a file, as `_line_blocks` reads them (a last line without a newline counts)."""
  count, last = 0, b'\n'
  with open(path, 'rb') as f:
    while block := f.read(1 << 24):
      count += block.count(b'\n')
      last = block[-1:]
  return count + (last != b'\n')


def parse_split(split: str) -> tuple[str, slice]:
  """'train[10:20]' -> ('train', slice(10, 20)); a one-line error for other forms."""
  match = _SPLIT.match(split.strip())
  if not match:
    raise SourceError(f'cannot read the split {split!r}: expected NAME or NAME[START:STOP]')
  start, stop = match['start'], match['stop']
  return match['name'], slice(int(start) if start else None, int(stop) if stop else None)


def window(pairs: Iterator[tuple[str, str]], bounds: slice) -> Iterator[tuple[str, str]]:
  """`pairs[bounds]`, streamed where the bounds allow (non-negative)."""
  if bounds == slice(None):
    return pairs
  if (bounds.start or 0) < 0 or (bounds.stop or 0) < 0:
    return iter(list(pairs)[bounds])
  return itertools.islice(pairs, bounds.start, bounds.stop)


def chunked(pairs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
  """`pairs` in lists of at most `size`."""
  pairs = iter(pairs)
  while block := list(itertools.islice(pairs, size)):
    yield block


def capped(chunks: Iterable[list[tuple[str, str]]], most: int) -> Iterator[list[tuple[str, str]]]:
  """The chunks of a stream up to its first `most` pairs in all (0: all of them)."""
  left = most or None
  for chunk in chunks:
    if left is not None:
      chunk = chunk[:left]
      left -= len(chunk)
    if chunk:
      yield chunk
    if left == 0:
      return


def file_digest(*paths: Path) -> str:
  """The sha1 of the files' bytes, in order."""
  h = hashlib.sha1()
  for path in paths:
    with open(path, 'rb') as f:
      while block := f.read(1 << 22):
        h.update(block)
  return h.hexdigest()


def existing_file(path: str | Path, what: str) -> Path:
  """`path` (`~` expanded); a one-line error naming `what` (the config field) when it is
  not a file."""
  path = Path(path).expanduser()
  if not path.is_file():
    raise SourceError(f'{what} {path} does not exist')
  return path


_WARNED: set[str] = set()  # skip counts already logged (a corpus is read more than once)


def _keep(pairs: Iterator[tuple[str, str]], name: str) -> Iterator[tuple[str, str]]:
  """The pairs stripped, those with an empty side dropped (counted and logged once)."""
  kept = one_sided = 0
  for s, t in pairs:
    s, t = s.strip(), t.strip()
    if s and t:
      kept += 1
      yield s, t
    elif s or t:
      one_sided += 1
  if not kept:
    raise SourceError(f'{name} holds no pairs')
  if one_sided and name not in _WARNED:
    _WARNED.add(name)
    logging.warning('%s: skipped %d lines empty on one side only', name, one_sided)


def parallel_files(prefix: str, src_lang: str, tgt_lang: str, field: str) -> tuple[Path, Path]:
  """`PREFIX.<src_lang>` and `PREFIX.<tgt_lang>` of the prefix that `data.<field>` gives; a
  missing one is a one-line error naming the field (and, for the optional validation and
  test prefixes, what a run does without them)."""
  found = []
  for side, lang in (('source', src_lang), ('target', tgt_lang)):
    path = Path(f'{prefix}.{lang}').expanduser()
    if not path.is_file():
      message = f'the {side} file {path} does not exist (data.{field}={prefix!r})'
      if field != 'train_prefix':
        split = field.removesuffix('_prefix')
        message += (
          f'; data.{field} is optional: without it the {split} split is carved from the '
          f'training files by source sentence, so drop --config.data.{field} or create '
          f'{prefix}.{src_lang} and {prefix}.{tgt_lang}'
        )
      raise SourceError(message)
    found.append(path)
  return found[0], found[1]


def stream_parallel(
  prefix: str, src_lang: str, tgt_lang: str, field: str = 'train_prefix'
) -> Iterator[tuple[str, str]]:
  """Pairs from `PREFIX.<src_lang>` and `PREFIX.<tgt_lang>` (same line counts, checked
  before the first pair), read line by line; `field` is the config field that named the
  prefix (for the error when a file is missing)."""
  src_path, tgt_path = parallel_files(prefix, src_lang, tgt_lang, field)
  src_count, tgt_count = count_lines(src_path), count_lines(tgt_path)
  if src_count != tgt_count:
    raise SourceError(
      f'{src_path} has {src_count:,} lines but {tgt_path} has {tgt_count:,}: parallel files '
      'hold one sentence a line, line for line'
    )

  def pairs() -> Iterator[tuple[str, str]]:
    for src, tgt in zip(_line_blocks(src_path), _line_blocks(tgt_path), strict=True):
      yield from zip(src, tgt, strict=True)

  return _keep(pairs(), f'{prefix}.{{{src_lang},{tgt_lang}}}')


def stream_tsv(path: str, columns: tuple[int, ...]) -> Iterator[tuple[str, str]]:
  """(source, target) pairs from two columns of a tab-separated file, read line by line."""
  if len(columns) != 2 or any(not isinstance(c, int) or c < 0 for c in columns):
    raise SourceError(f'data.tsv_columns must be two column indices >= 0, got {columns}')
  if columns[0] == columns[1]:
    raise SourceError(f'data.tsv_columns names column {columns[0]} for both sides')
  file = existing_file(path, 'data.tsv_file')
  wanted = max(columns) + 1

  def pairs() -> Iterator[tuple[str, str]]:
    number = 0
    for block in _line_blocks(file):
      for line in block:
        number += 1
        if text.is_blank(line):
          continue  # a blank line: nothing on either side
        fields = line.split('\t')
        if len(fields) < wanted:
          raise SourceError(
            f'{file}: line {number} has {len(fields)} columns, so column {max(columns)} of '
            f'data.tsv_columns={tuple(columns)} does not exist'
          )
        yield fields[columns[0]], fields[columns[1]]

  return _keep(pairs(), str(file))
