"""The Tatoeba pairs of manythings.org (the book's data) as a data source: a TensorFlow
Datasets builder, and `TatoebaSource`, the source a config's `data.manual_dir` names.

A manythings file (`fra.txt`, `deu.txt`, ... or its zip `fra-eng.zip`) pairs English with
one other language: `English<TAB>Other[<TAB>attribution]`. The builder `Tatoeba`
('tatoeba') reads one such file and writes four splits that keep file order: `full` (every
valid pair) and `train`/`validation`/`test`, a deterministic partition keyed on the
preprocessed *source* sentence (`heldout.carve`: 2% of the sources each for validation
and test, up to 5,000 sources each), so that all translations of one source land in the
same split. Each source file and direction is its own builder config, named by the
language, the source side and the sha1 of the file's text
(`<data_dir>/tatoeba/fr_from_en_94646ad1522d915e/`; other held-out settings than the
defaults add them: `..._held0p01_max1000`), so different files live side by side
in one cache and a file that changed is prepared anew, never read stale. Only TFDS is
needed, not TensorFlow: `TatoebaSource.load` prepares it as array_record and reads it
back by random access.

TFDS is imported on first use (`Tatoeba` and `TatoebaConfig` are made then), so that
importing the data pipeline (translation, evaluation) does not load it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from seq2seq_jax import errors
from seq2seq_jax.data import heldout, manythings, textfiles
from seq2seq_jax.data.manythings import DataUnavailableError, PairsFile

SPLITS = ('full', 'train', 'validation', 'test')
_CHUNK = 8192  # Records read per batch when iterating a `PairSource`.
_DEFAULT_HELDOUT = (heldout.SHARE, heldout.MAX_SOURCES)  # settings left out of config names
_RELEASE_NOTES = {
  '1.0.0': "'fra_eng': full split plus a train/validation/test split by English source.",
  '2.0.0': 'Any manythings language and either direction; a config per source file.',
  '3.0.0': 'Validation and test capped (5,000 sources each by default; the book unchanged).',
}
_MANUAL_DOWNLOAD_INSTRUCTIONS = (
  f'Optional: put a file such as fra.txt (from {manythings.ANKI_URL}) or fra-eng.zip (from '
  f'{manythings.URL}) in the manual directory; otherwise the book zip is downloaded (French '
  'only).'
)


def __getattr__(name: str) -> Any:  # noqa: ANN401 (the TFDS classes, made on first use)
  if name in ('Tatoeba', 'TatoebaConfig'):
    return _tfds_classes()[name]
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@functools.cache
def _tfds_classes() -> dict[str, type]:
  """The builder and its config, subclasses of TFDS's (imported here, once)."""
  import tensorflow_datasets as tfds

  class TatoebaConfig(tfds.core.BuilderConfig):
    """One source file (by the sha1 of its text) and direction; see `config_name`."""

    def __init__(self, *, name: str, file: PairsFile, held_out: tuple[float, int]):
      super().__init__(name=name)
      self.file = file
      self.held_out = held_out

  class Tatoeba(tfds.core.GeneratorBasedBuilder):
    """Tatoeba pairs of English and one other language (manythings.org/anki; the book's
    `MTFraEng` for French)."""

    VERSION = tfds.core.Version('3.0.0')
    RELEASE_NOTES = _RELEASE_NOTES
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
      lang = self.builder_config.file.lang
      return tfds.core.DatasetInfo(
        builder=self,
        description=f'English-{lang} sentence pairs from Tatoeba (manythings.org/anki).',
        features=tfds.features.FeaturesDict(
          {'en': tfds.features.Text(), lang: tfds.features.Text(), 'index': np.int64}
        ),
        homepage=manythings.ANKI_URL,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
      )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:  # noqa: ANN401
      by_split = _read_splits(self, _source_path(self.builder_config.file, dl_manager))
      return {name: self._generate_examples(v) for name, v in by_split.items()}

    def _generate_examples(
      self, items: Sequence[tuple[int, tuple[str, str]]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
      lang = self.builder_config.file.lang
      for index, (en, other) in items:
        yield index, {'en': en, lang: other, 'index': index}

  classes = {'Tatoeba': Tatoeba, 'TatoebaConfig': TatoebaConfig}
  for name, cls in classes.items():
    cls.__qualname__ = name  # as if defined at the top of the module (logs, reprs)
  return classes


def config_name(file: PairsFile, held_out: tuple[float, int]) -> str:
  """`<lang>_from_<source language>_<sha1 of the text, 16 digits>`; `..._d2l` for the
  downloaded book zip; held-out settings (share, most sources) other than the defaults
  are added (`..._held0p01_max1000`). Bad held-out settings: a one-line error."""
  digest = manythings.source_sha1(file.path, file.lang)[:16] if file.path else 'd2l'
  name = f'{file.lang}_from_{file.keys[0]}_{digest}'
  share, max_sources = float(held_out[0]), int(held_out[1])
  heldout.share_width(share, max_sources)  # checked before anything is prepared
  if (share, max_sources) != _DEFAULT_HELDOUT:
    name += f'_held{share:g}_max{max_sources}'.replace('.', 'p')
  return name


def _source_path(file: PairsFile, dl_manager: Any) -> Path:  # noqa: ANN401
  """The manual file if there is one, else the downloaded (and checked) book zip."""
  if file.path is not None:
    return file.path
  if not manythings.host_reachable():
    message = manythings.unavailable_message(f'{manythings.URL_HOST} cannot be reached')
    raise DataUnavailableError(message)
  path = Path(dl_manager.download(manythings.URL))
  digest = hashlib.sha1(path.read_bytes()).hexdigest()
  if digest != manythings.ZIP_SHA1:
    raise DataUnavailableError(
      manythings.unavailable_message(
        f'{path} has sha1 {digest}, expected {manythings.ZIP_SHA1}; delete it'
      )
    )
  return path


def _read_splits(builder: Any, path: Path) -> dict[str, list[tuple[int, tuple[str, str]]]]:  # noqa: ANN401
  """The indexed pairs of each split of the file at `path` (the empty splits left out:
  TFDS cannot write one; `load` reads a missing split as empty), with the counts in the
  builder's metadata and the log."""
  file, held_out = builder.builder_config.file, builder.builder_config.held_out
  data, name = manythings.read_named(path, file.lang)
  parsed = manythings.parse_pairs(data, name)
  if not parsed.pairs:
    raise errors.DataError(f'{name}: no valid English<TAB>{file.lang} lines')
  first = f' (first at line {parsed.first_skipped})' if parsed.skipped else ''
  logging.info(
    'tatoeba: kept %s pairs, skipped %s malformed lines%s',
    f'{len(parsed.pairs):,}',
    f'{parsed.skipped:,}',
    first,
  )
  builder.info.metadata.update(
    source=str(path),
    source_sha1=hashlib.sha1(data).hexdigest(),
    lang=file.lang,
    split_by=file.keys[0],
    kept=len(parsed.pairs),
    skipped=parsed.skipped,
    first_skipped=parsed.first_skipped,
  )
  side = 0 if file.english_source else 1
  positions = [heldout.split_position(pair[side]) for pair in parsed.pairs]
  carving = heldout.carve(*held_out, positions=positions)
  by_split: dict[str, list[tuple[int, tuple[str, str]]]] = {name: [] for name in SPLITS[1:]}
  for item, position in zip(enumerate(parsed.pairs), positions, strict=True):
    by_split[carving.split_at(position)].append(item)
  by_split['full'] = list(enumerate(parsed.pairs))
  empty = [name for name in SPLITS if not by_split[name]]
  if empty:
    logging.warning('tatoeba: no pairs fall in split(s) %s', ', '.join(empty))
  return {name: items for name, items in by_split.items() if items}


class PairSource(Sequence[dict[str, Any]]):
  """Random access to one (possibly sliced) split; items are `{'en': str, <lang>: str,
  'index': int}`, and `pairs()` gives (source, target) in the direction of the file.

  Wraps TFDS's array_record data source read as raw bytes: decoding the `tf.train.Example`
  protos here is several times faster than TFDS's NumPy decoder and yields `str`, not bytes.
  """

  def __init__(self, records: Sequence[bytes], keys: tuple[str, str]):
    self._records = records
    self.keys = keys

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, key: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
    if isinstance(key, slice):
      return self.__getitems__(range(len(self))[key])
    return self._decode(self._records[range(len(self))[key]])  # IndexError past the end.

  def __iter__(self) -> Iterator[dict[str, Any]]:
    for start in range(0, len(self), _CHUNK):
      yield from self.__getitems__(range(start, min(start + _CHUNK, len(self))))

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    keys = list(keys)
    if not keys:
      return []
    return [self._decode(r) for r in self._records.__getitems__(keys)]

  def pairs(self, chunk: int = _CHUNK) -> Iterator[list[tuple[str, str]]]:
    """All (source, target) pairs, in file order, in lists of at most `chunk`."""
    src, tgt = self.keys
    for start in range(0, len(self), chunk):
      items = self.__getitems__(range(start, min(start + chunk, len(self))))
      yield [(ex[src], ex[tgt]) for ex in items]

  def _decode(self, record: bytes) -> dict[str, Any]:
    feature = _example_proto().FromString(record).features.feature
    out: dict[str, Any] = {k: feature[k].bytes_list.value[0].decode('utf-8') for k in self.keys}
    out['index'] = int(feature['index'].int64_list.value[0])
    return out


@functools.cache
def _example_proto() -> Any:  # noqa: ANN401
  from tensorflow_datasets.proto import tf_example_pb2

  return tf_example_pb2.Example


@dataclasses.dataclass(frozen=True)
class TatoebaSource:
  """A manythings file of English and another language (`data.manual_dir`: the file or
  a directory holding it; '' downloads the book's fra-eng.zip), in one direction, with
  validation and test carved out by source sentence."""

  manual_dir: str  # '' : the book's download
  src_lang: str
  tgt_lang: str
  data_dir: str  # where TFDS keeps the prepared splits
  held_out: tuple[float, int]  # `heldout.carve`'s share and most sources

  field = 'manual_dir'  # the config field that names this source

  @classmethod
  def from_config(cls, data_cfg: Any) -> TatoebaSource:  # noqa: ANN401
    return cls(
      os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else '',
      data_cfg.src_lang,
      data_cfg.tgt_lang,
      os.path.expanduser(data_cfg.data_dir),
      (float(data_cfg.heldout_share), int(data_cfg.heldout_max_sources)),
    )

  @property
  def book_corpus(self) -> bool:
    """English and French (either direction): the book's corpus."""
    return {manythings.language(self.src_lang), manythings.language(self.tgt_lang)} == {'en', 'fr'}

  def file(self) -> PairsFile:
    """The file and direction (a one-line error for what cannot work)."""
    return manythings.resolve(self.manual_dir or None, self.src_lang, self.tgt_lang)

  def build(self) -> Any:  # noqa: ANN401
    """The 'tatoeba' builder of this file and direction, prepared (as array_record) if
    it was not yet (the time logged on its own)."""
    file = self.file()
    name = config_name(file, self.held_out)
    classes = _tfds_classes()
    make = functools.partial(classes['TatoebaConfig'], name=name, file=file)
    builder = classes['Tatoeba'](data_dir=self.data_dir, config=make(held_out=self.held_out))
    if builder.is_prepared():
      return builder
    if not sys.stderr.isatty():  # a log file: TFDS's bars would leave `[A` codes there
      import tensorflow_datasets as tfds

      tfds.disable_progress_bar()
    t0 = time.perf_counter()
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception:
      # Two runs started at once on one data_dir: the one that renamed its folder into
      # place second fails, but the data it needs is there now.
      builder = classes['Tatoeba'](data_dir=self.data_dir, config=make(held_out=self.held_out))
      if not builder.is_prepared():
        raise
      logging.info('tatoeba: %s was prepared by another process meanwhile', name)
    else:
      seconds = time.perf_counter() - t0
      logging.info('data: prepared the TFDS dataset tatoeba/%s in %.1f s', name, seconds)
    return builder

  def load(self, split: str) -> PairSource:
    """A random-access source of `split` (e.g. 'train', 'full[:512]'), prepared if needed."""
    name = split.split('[', 1)[0]
    if name not in SPLITS:
      raise errors.ConfigError(f'unknown tatoeba split {split!r}; expected one of {SPLITS}')
    builder = self.build()
    keys = builder.builder_config.file.keys
    if name not in builder.info.splits:
      return PairSource([], keys)  # No pair fell in this split (tiny data): TFDS wrote none.
    import tensorflow_datasets as tfds

    raw = tfds.decode.DeserializeMethod.RAW_BYTES
    return PairSource(builder.as_data_source(split=split, deserialize_method=raw), keys)

  def iter_pairs(self, split: str, chunk: int = 0) -> Iterator[list[tuple[str, str]]]:
    """(source, target) pairs of `split` in file order, in lists of at most `chunk`."""
    return self.load(split).pairs(chunk or textfiles.CHUNK)

  def count(self, split: str) -> int:
    return len(self.load(split))

  def content_key(self) -> str:
    """What identifies the pairs: the builder config's name (the sha1 of the file's text)."""
    return f'tatoeba:{config_name(self.file(), self.held_out)}'

  def heldout_settings(self) -> dict[str, Any]:
    share, max_sources = self.held_out
    return {'heldout_share': share, 'heldout_max_sources': max_sources}

  def describe(self) -> str:
    path = self.file().path
    return str(path) if path else f"the book's {manythings.URL.rsplit('/', 1)[-1]}"
