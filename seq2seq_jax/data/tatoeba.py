"""TensorFlow Datasets builder for the Tatoeba pairs of manythings.org (the book's data).

A manythings file (`fra.txt`, `deu.txt`, ... or its zip `fra-eng.zip`) pairs English with
one other language: `English<TAB>Other[<TAB>attribution]`. The builder `Tatoeba`
('tatoeba') reads one such file and writes four splits that keep file order: `full` (every
valid pair) and `train`/`validation`/`test`, a deterministic partition keyed on the
preprocessed *source* sentence (`carve`: 2% of the sources each for validation and test,
up to 5,000 sources each), so that all translations of one source land in the same split.
Each source file and direction is its own builder config, named by the language, the
source side and the sha1 of the file's text
(`<data_dir>/tatoeba/fr_from_en_94646ad1522d915e/`; other held-out settings than the
defaults add them: `..._held0p01_max1000`), so different files live side by side
in one cache and a file that changed is prepared anew, never read stale. Only TFDS is
needed, not TensorFlow: `load`/`load_pairs` prepare it as array_record and read it back by
random access.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from seq2seq_jax.data.heldout import MAX_SOURCES, SHARE, _width, carve, split_position
from seq2seq_jax.data.manythings import (
  ANKI_URL,
  URL,
  URL_HOST,
  ZIP_SHA1,
  DataUnavailableError,
  Source,
  _read_named,
  _unavailable_message,
  host_reachable,
  parse_pairs,
  resolve,
  source_sha1,
)

SPLITS = ('full', 'train', 'validation', 'test')
_CHUNK = 8192  # Records read per batch when iterating a `PairSource`.


class TatoebaConfig(tfds.core.BuilderConfig):
  """One source file (by the sha1 of its text) and direction; see `builder_config`."""

  def __init__(
    self,
    *,
    name: str,
    source: Source,
    heldout: tuple[float, int] = (SHARE, MAX_SOURCES),
    **kwargs: Any,
  ):
    super().__init__(name=name, **kwargs)
    self.source = source
    self.heldout = heldout


def builder_config(
  source: Source, heldout: tuple[float, int] = (SHARE, MAX_SOURCES)
) -> TatoebaConfig:
  """`<lang>_from_<source language>_<sha1 of the text, 16 digits>`; `..._d2l` for the
  downloaded book zip; held-out settings (share, most sources) other than the defaults
  are added (`..._held0p01_max1000`)."""
  digest = source_sha1(source.path, source.lang)[:16] if source.path else 'd2l'
  src = source.keys[0]
  name = f'{source.lang}_from_{src}_{digest}'
  share, max_sources = float(heldout[0]), int(heldout[1])
  _width(share, max_sources)  # bad settings: a one-line error before anything is prepared
  if (share, max_sources) != (SHARE, MAX_SOURCES):
    name += f'_held{share:g}_max{max_sources}'.replace('.', 'p')
  return TatoebaConfig(name=name, source=source, heldout=(share, max_sources))


class Tatoeba(tfds.core.GeneratorBasedBuilder):
  """Tatoeba pairs of English and one other language (manythings.org/anki; the book's
  `MTFraEng` for French)."""

  VERSION = tfds.core.Version('3.0.0')
  RELEASE_NOTES = {
    '1.0.0': "'fra_eng': full split plus a train/validation/test split by English source.",
    '2.0.0': 'Any manythings language and either direction; a config per source file.',
    '3.0.0': 'Validation and test capped (5,000 sources each by default; the book unchanged).',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Optional: put a file such as fra.txt (from {ANKI_URL}) or fra-eng.zip (from {URL}) in '
    'the manual directory; otherwise the book zip is downloaded (French only).'
  )

  def _info(self) -> tfds.core.DatasetInfo:
    lang = self.builder_config.source.lang
    return tfds.core.DatasetInfo(
      builder=self,
      description=f'English-{lang} sentence pairs from Tatoeba (manythings.org/anki).',
      features=tfds.features.FeaturesDict(
        {'en': tfds.features.Text(), lang: tfds.features.Text(), 'index': np.int64}
      ),
      homepage=ANKI_URL,
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(),
    )

  def _source_path(self, dl_manager: tfds.download.DownloadManager) -> Path:
    """The manual file if there is one, else the downloaded (and checked) book zip."""
    if self.builder_config.source.path is not None:
      return self.builder_config.source.path
    if not host_reachable():
      raise DataUnavailableError(_unavailable_message(f'{URL_HOST} cannot be reached'))
    path = Path(dl_manager.download(URL))
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != ZIP_SHA1:
      raise DataUnavailableError(
        _unavailable_message(f'{path} has sha1 {digest}, expected {ZIP_SHA1}; delete it')
      )
    return path

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    source = self.builder_config.source
    path = self._source_path(dl_manager)
    data, name = _read_named(path, source.lang)
    parsed = parse_pairs(data, name)
    if not parsed.pairs:
      raise ValueError(f'{name}: no valid English<TAB>{source.lang} lines')
    first = f' (first at line {parsed.first_skipped})' if parsed.skipped else ''
    logging.info(
      'tatoeba: kept %s pairs, skipped %s malformed lines%s',
      f'{len(parsed.pairs):,}',
      f'{parsed.skipped:,}',
      first,
    )
    self.info.metadata.update(
      source=str(path),
      source_sha1=hashlib.sha1(data).hexdigest(),
      lang=source.lang,
      split_by=source.keys[0],
      kept=len(parsed.pairs),
      skipped=parsed.skipped,
      first_skipped=parsed.first_skipped,
    )
    indexed = list(enumerate(parsed.pairs))
    side = 0 if source.english_source else 1
    positions = [split_position(pair[side]) for pair in parsed.pairs]
    carving = carve(*self.builder_config.heldout, positions=positions)
    by_split = {name: [] for name in SPLITS[1:]}
    for item, position in zip(indexed, positions, strict=True):
      by_split[carving.split_at(position)].append(item)
    by_split['full'] = indexed
    empty = [name for name in SPLITS if not by_split[name]]
    if empty:  # TFDS cannot write an empty split; `load` reads a missing one as empty.
      logging.warning('tatoeba: no pairs fall in split(s) %s', ', '.join(empty))
    return {name: self._generate_examples(v) for name, v in by_split.items() if v}

  def _generate_examples(
    self, items: Sequence[tuple[int, tuple[str, str]]]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    lang = self.builder_config.source.lang
    for index, (en, other) in items:
      yield index, {'en': en, lang: other, 'index': index}


class PairSource(Sequence[dict[str, Any]]):
  """Random access to one (possibly sliced) split; items are `{'en': str, <lang>: str,
  'index': int}`, and `pairs()` gives (source, target) in the direction of the `Source`.

  Wraps TFDS's array_record data source read as raw bytes: decoding the `tf.train.Example`
  protos here is several times faster than TFDS's NumPy decoder and yields `str`, not bytes.
  """

  def __init__(self, records: Sequence[bytes], keys: tuple[str, str] = ('en', 'fr')):
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

  def pairs(self) -> list[tuple[str, str]]:
    """All (source, target) pairs, in file order."""
    src, tgt = self.keys
    return [(ex[src], ex[tgt]) for ex in self.__getitems__(range(len(self)))]

  def _decode(self, record: bytes) -> dict[str, Any]:
    feature = tf_example_pb2.Example.FromString(record).features.feature
    out: dict[str, Any] = {k: feature[k].bytes_list.value[0].decode('utf-8') for k in self.keys}
    out['index'] = int(feature['index'].int64_list.value[0])
    return out


def prepare(
  data_dir: str,
  manual_dir: str | None = None,
  src_lang: str = 'en',
  tgt_lang: str = 'fr',
  heldout: tuple[float, int] = (SHARE, MAX_SOURCES),
) -> Tatoeba:
  """The 'tatoeba' builder of this source and direction at `data_dir`, prepared (as
  array_record) if it was not yet. Its config is named by the source file's text (and
  the `heldout` share and cap of `carve`, when not the defaults), so a changed or
  different file gets its own prepared copy beside the others."""
  source = resolve(manual_dir, src_lang, tgt_lang)
  config = builder_config(source, heldout)
  builder = Tatoeba(data_dir=data_dir, config=config)
  if not builder.is_prepared():
    if not sys.stderr.isatty():  # a log file: TFDS's bars would leave `[A` codes there
      tfds.disable_progress_bar()
    t0 = time.perf_counter()
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception:
      # Two runs started at once on one data_dir: the one that renamed its folder into
      # place second fails, but the data it needs is there now.
      builder = Tatoeba(data_dir=data_dir, config=config)
      if not builder.is_prepared():
        raise
      logging.info('tatoeba: %s was prepared by another process meanwhile', config.name)
    else:
      seconds = time.perf_counter() - t0
      logging.info('data: prepared the TFDS dataset tatoeba/%s in %.1f s', config.name, seconds)
  return builder


def load(
  split: str,
  *,
  data_dir: str,
  manual_dir: str | None = None,
  src_lang: str = 'en',
  tgt_lang: str = 'fr',
  heldout: tuple[float, int] = (SHARE, MAX_SOURCES),
) -> PairSource:
  """A random-access source of `split` (e.g. 'train', 'full[:512]'), preparing it if needed."""
  name = split.split('[', 1)[0]
  if name not in SPLITS:
    raise ValueError(f'unknown tatoeba split {split!r}; expected one of {SPLITS}')
  builder = prepare(data_dir, manual_dir, src_lang, tgt_lang, heldout)
  keys = builder.builder_config.source.keys
  if name not in builder.info.splits:
    return PairSource([], keys)  # No pair fell in this split (tiny data): TFDS wrote none.
  return PairSource(
    builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES),
    keys,
  )


def load_pairs(split: str, **kwargs: Any) -> list[tuple[str, str]]:
  """The (source, target) pairs of `split` in file order (see `load`)."""
  return load(split, **kwargs).pairs()
