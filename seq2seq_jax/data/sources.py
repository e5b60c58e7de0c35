"""Where the pairs come from: exactly one data source per run (README.md, "Architecture"),
chosen by the config field that names it (`SOURCES`):

- `data.manual_dir` (or nothing: the book's download): a manythings/Tatoeba file of any
  language pair (`tatoeba.TatoebaSource`, a TFDS builder);
- `data.train_prefix` (+ `data.validation_prefix`, `data.test_prefix`): parallel text
  files `PREFIX.<src_lang>` and `PREFIX.<tgt_lang>`, one sentence a line
  (`filesources.TextFilesSource`);
- `data.tsv_file` with `data.tsv_columns` (source, target; 0-based; `filesources.TsvSource`);
- `data.tfds_name`: a TFDS translation dataset prepared in `data.data_dir` (array_record),
  read by random access without TensorFlow; its features are named by language
  (`tfds_source.TfdsSource`).

A source is a frozen description made from the config once (`from_config`); what reads
the pairs takes it, never the config. Splits are named as in TFDS, with slices (`train`,
`full[:512]`, `validation[10:20]`); carved splits: `heldout.py`. Bad input is a one-line
error naming the file (and line), or a counted skip (a line empty on one side).
`Source.iter_pairs` gives a split in chunks, so the preparation of a corpus of any size
(`prepared.py`) holds one chunk of its text, never the whole of it.

A new kind of source is a class with the members of `Source` and one entry in `SOURCES`
(plus its config fields in configs/default.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from absl import logging

from seq2seq_jax.data import textfiles
from seq2seq_jax.data.filesources import TextFilesSource, TsvSource
from seq2seq_jax.data.tatoeba import TatoebaSource
from seq2seq_jax.data.textfiles import SourceError
from seq2seq_jax.data.tfds_source import TfdsSource

__all__ = ['SOURCES', 'Source', 'SourceError', 'from_config', 'report_slice']


class Source(Protocol):
  """What the pipeline asks of a data source (a frozen dataclass made by `from_config`)."""

  field: str  # the config field that names the source ('manual_dir', 'tsv_file', ...)
  src_lang: str
  tgt_lang: str

  @property
  def book_corpus(self) -> bool:
    """Whether this is the book's corpus (a Tatoeba file of English and French)."""
    ...

  def build(self) -> Any:  # noqa: ANN401
    """Makes what reading needs where that is a step of its own (a Tatoeba file becomes
    TFDS's array_record files), so that what follows is timed without it."""
    ...

  def iter_pairs(self, split: str, chunk: int = 0) -> Iterator[list[tuple[str, str]]]:
    """(source, target) pairs of a split (slices allowed), in lists of at most `chunk`
    (0: `textfiles.CHUNK`)."""
    ...

  def count(self, split: str) -> int:
    """How many pairs a split holds."""
    ...

  def content_key(self) -> str:
    """What identifies the pairs (the sha1 of the files' text, a dataset's version): the
    prepared data of another key is never read for this source."""
    ...

  def heldout_settings(self) -> dict[str, Any]:
    """The held-out share and cap when splits are carved from the training pairs, else {}."""
    ...

  def describe(self) -> str:
    """The source in a few words, for the log: its file(s) or the dataset's name."""
    ...


# The config field that names each kind of source -> its class (no field set: DEFAULT's).
DEFAULT = 'manual_dir'
SOURCES: dict[str, type] = {
  'manual_dir': TatoebaSource,
  'train_prefix': TextFilesSource,
  'tsv_file': TsvSource,
  'tfds_name': TfdsSource,
}


def from_config(data_cfg: Any) -> Source:  # noqa: ANN401
  """The data source a data config names; a one-line error when it names several."""
  given = [field for field in SOURCES if data_cfg[field]]
  if len(given) > 1:
    fields = ' and '.join(f'data.{k}' for k in given)
    raise SourceError(f'{fields} are both set: give exactly one data source')
  if not given and (data_cfg.validation_prefix or data_cfg.test_prefix):
    raise SourceError('data.validation_prefix / data.test_prefix need data.train_prefix')
  return SOURCES[given[0] if given else DEFAULT].from_config(data_cfg)


def report_slice(source: Source, split: str) -> None:
  """Says in the log what a sliced training split (`full[:64]`) keeps of the source: at
  info level for the book's corpus, which the small configs' slices were written for; as
  a warning for any other corpus, with the flags that train on all of it (README,
  "Configs"). A split without a slice logs nothing."""
  name, bounds = textfiles.parse_split(split)
  if bounds == slice(None):
    return
  kept, total = source.count(split), source.count(name)
  of = f'{total:,} pairs of {source.describe()}' + ('' if name == 'full' else f' ({name!r})')
  if kept >= total:
    logging.info('data: data.train_split=%r keeps all the %s', split, of)
  elif source.book_corpus:
    logging.info('data: data.train_split=%r keeps %s of the %s', split, f'{kept:,}', of)
  else:
    logging.warning(
      "data: data.train_split=%r keeps %s of the %s, a slice sized for the book's corpus "
      '(configs/tiny.py and configs/d2l.py set one); to train on all of yours pass '
      '--config.data.train_split=train --config.data.val_split=validation',
      split,
      f'{kept:,}',
      of,
    )
