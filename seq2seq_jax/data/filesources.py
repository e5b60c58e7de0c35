"""Data sources read from plain files: parallel text files (`data.train_prefix`, with
optional `data.validation_prefix` and `data.test_prefix`) and a TSV file (`data.tsv_file`
with `data.tsv_columns`), streamed line by line (`textfiles.py`).

Splits are named as in TFDS, with slices (`train`, `full[:512]`, `validation[10:20]`):
`full` is every pair of the training files in order; a split without files of its own
(`validation`, `test`) is carved from the training files by source sentence
(`heldout.carve`: `data.heldout_share` of the sources each, up to
`data.heldout_max_sources` each), and `train` is what is left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from absl import logging

from seq2seq_jax.data import heldout, manythings, textfiles
from seq2seq_jax.data.textfiles import SourceError

_SPLITS = ('train', 'validation', 'test')  # the codes of `held_out_splits`'s labels
_NAMES = ('full', *_SPLITS)
# The carving of each training file(s) and settings, by (sizes, times), layout, settings.
_CARVED: dict[tuple, tuple[heldout.Carving, bytearray | None]] = {}


@dataclasses.dataclass(frozen=True)
class CarvedFiles:
  """What parallel text files and a TSV file share: the direction, the held-out settings,
  the split names and the carving of validation and test out of the training files. A
  new file format subclasses it with `read`, `training_files`, `content_key`, `describe`
  and `from_config` (and `own_files` when a split can have files of its own)."""

  src_lang: str
  tgt_lang: str
  held_out: tuple[float, int]  # `heldout.carve`'s share and most sources

  book_corpus = False

  def own_files(self) -> dict[str, str]:
    """The splits ('validation', 'test') that have files of their own: split -> prefix."""
    return {}

  def read(self, split: str) -> Iterator[tuple[str, str]]:
    """Every pair of the files of `split` ('train': the training files)."""
    raise NotImplementedError

  def training_files(self) -> tuple[list[Path], tuple]:
    """The training files, and how pairs are taken from them (for the carving's key)."""
    raise NotImplementedError

  def build(self) -> None:
    """Nothing to make: the files are read as they are."""

  def iter_pairs(self, split: str, chunk: int = 0) -> Iterator[list[tuple[str, str]]]:
    """(source, target) pairs of a split, in file order, in lists of at most `chunk`,
    read line by line (a pass over a corpus of any size holds one chunk of its text)."""
    if manythings.language(self.src_lang) == manythings.language(self.tgt_lang):
      raise SourceError(f'data.src_lang and data.tgt_lang are both {self.src_lang!r}')
    name, bounds = textfiles.parse_split(split)
    if name not in _NAMES:
      raise SourceError(f'unknown split {split!r}; expected full, train, validation or test')
    own = self.own_files()
    if name in own:
      pairs = self.read(name)
    else:
      pairs = self.read('train')
      carved = {s for s in ('validation', 'test') if s not in own}  # held out of train
      if name != 'full' and carved:
        pairs = self._carve(pairs, name, carved)  # after `read`: the files are there
    yield from textfiles.chunked(textfiles.window(pairs, bounds), chunk or textfiles.CHUNK)

  def _carve(
    self, pairs: Iterator[tuple[str, str]], name: str, carved: set[str]
  ) -> Iterator[tuple[str, str]]:
    """The pairs of split `name` among the training files' `pairs`."""
    found, labels = self.held_out_splits()
    wanted: Callable[[str], bool] = (
      (lambda s: s not in carved) if name == 'train' else (lambda s: s == name)
    )
    if labels is None:
      return (p for p in pairs if wanted(found.split(p[0])))
    # The split of each pair, from the pass that carved them: no hashing again.
    return (p for p, code in zip(pairs, labels, strict=True) if wanted(_SPLITS[code]))

  def held_out_splits(self) -> tuple[heldout.Carving, bytearray | None]:
    """The carved splits: a `heldout.Carving` and, when it took a pass over the training
    files, the split of every pair (an index into `_SPLITS`, a byte a pair), so that later
    passes need not hash the sources again. The pass is needed when the cap can bind (the
    training files have more lines than the cap); without it the carving is the uncapped
    one. Once per process for the same files and settings."""
    share, max_sources = self.held_out
    paths, layout = self.training_files()
    stats = tuple((str(p.absolute()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    key = (stats, layout, share, max_sources)
    if key not in _CARVED:
      uncapped = heldout.carve(share, 0)  # (checks the settings)
      if not max_sources or textfiles.count_lines(paths[0]) <= max_sources:
        _CARVED[key] = (uncapped, None)  # no split can exceed the cap
      else:
        _CARVED[key] = self._carve_pass(uncapped)
    return _CARVED[key]

  def _carve_pass(self, uncapped: heldout.Carving) -> tuple[heldout.Carving, bytearray]:
    """`heldout.carve` over the sources of every training pair, and each pair's split."""
    share, max_sources = self.held_out
    t0 = time.perf_counter()
    labels = bytearray()  # 0: train, for every pair until its range says otherwise
    inside: list[tuple[int, int]] = []  # (pair, position) of the pairs in a held-out range

    def positions() -> Iterator[int]:
      for block in self.iter_pairs('full'):
        start = len(labels)
        labels.extend(bytes(len(block)))
        for i, (source, _) in enumerate(block, start):
          position = heldout.split_position(source)
          if position < 2 * uncapped.width:
            inside.append((i, position))
            yield position

    found = heldout.carve(share, max_sources, positions())
    for i, position in inside:
      labels[i] = _SPLITS.index(found.split_at(position))
    capped = [
      name
      for name, end, full in (
        ('validation', found.validation_end, 2 * found.width),
        ('test', found.test_end, found.width),
      )
      if end < full
    ]
    logging.info(
      'data: validation and test are %g%% of the sources%s (data.heldout_share, '
      'data.heldout_max_sources; a pass over the training files in %.1f s)',
      100 * share,
      f', {" and ".join(capped)} capped at {max_sources:,}' if capped else '',
      time.perf_counter() - t0,
    )
    return found, labels

  def count(self, split: str) -> int:
    """How many pairs a split holds (the files read, streamed)."""
    return sum(len(chunk) for chunk in self.iter_pairs(split))

  def heldout_settings(self) -> dict[str, Any]:
    """The held-out settings when a split is carved from the training files, else {}."""
    if len(self.own_files()) == 2:
      return {}
    share, max_sources = self.held_out
    return {'heldout_share': share, 'heldout_max_sources': max_sources}


@dataclasses.dataclass(frozen=True)
class TextFilesSource(CarvedFiles):
  """Parallel text files `PREFIX.<src_lang>` and `PREFIX.<tgt_lang>`, one sentence a line
  (the prefix convention of fairseq and others)."""

  train_prefix: str
  validation_prefix: str  # '': carved from the training files
  test_prefix: str  # '': carved from the training files

  field = 'train_prefix'

  @classmethod
  def from_config(cls, data_cfg: Any) -> TextFilesSource:  # noqa: ANN401
    held_out = (float(data_cfg.heldout_share), int(data_cfg.heldout_max_sources))
    prefixes = (data_cfg.train_prefix, data_cfg.validation_prefix, data_cfg.test_prefix)
    return cls(data_cfg.src_lang, data_cfg.tgt_lang, held_out, *prefixes)

  def own_files(self) -> dict[str, str]:
    own = {'validation': self.validation_prefix, 'test': self.test_prefix}
    return {split: prefix for split, prefix in own.items() if prefix}

  def read(self, split: str) -> Iterator[tuple[str, str]]:
    prefix = self.train_prefix if split == 'train' else self.own_files()[split]
    return textfiles.stream_parallel(prefix, self.src_lang, self.tgt_lang, f'{split}_prefix')

  def training_files(self) -> tuple[list[Path], tuple]:
    langs = (self.src_lang, self.tgt_lang)
    return [Path(f'{self.train_prefix}.{lang}').expanduser() for lang in langs], langs

  def content_key(self) -> str:
    """The sha1 of every file's bytes, by the field that names it."""
    parts = []
    for split, prefix in (('train', self.train_prefix), *self.own_files().items()):
      field = f'{split}_prefix'
      paths = textfiles.parallel_files(prefix, self.src_lang, self.tgt_lang, field)
      parts.append(f'{field}={textfiles.file_digest(*paths)}')
    return 'text:' + ','.join(parts)

  def describe(self) -> str:
    return f'{self.train_prefix}.{{{self.src_lang},{self.tgt_lang}}}'


@dataclasses.dataclass(frozen=True)
class TsvSource(CarvedFiles):
  """Two columns (source, target; 0-based) of a tab-separated file."""

  tsv_file: str
  columns: tuple[int, ...]

  field = 'tsv_file'

  @classmethod
  def from_config(cls, data_cfg: Any) -> TsvSource:  # noqa: ANN401
    held_out = (float(data_cfg.heldout_share), int(data_cfg.heldout_max_sources))
    columns = tuple(data_cfg.tsv_columns)
    return cls(data_cfg.src_lang, data_cfg.tgt_lang, held_out, data_cfg.tsv_file, columns)

  def read(self, split: str) -> Iterator[tuple[str, str]]:
    return textfiles.stream_tsv(self.tsv_file, self.columns)

  def training_files(self) -> tuple[list[Path], tuple]:
    return [Path(self.tsv_file).expanduser()], self.columns

  def content_key(self) -> str:
    path = textfiles.existing_file(self.tsv_file, 'data.tsv_file')
    return f'tsv:{self.columns}:{textfiles.file_digest(path)}'

  def describe(self) -> str:
    return str(self.tsv_file)
