"""TensorFlow Datasets builder for the book's English-French pairs (Tatoeba via manythings.org).

The builder `FraEng` ('fra_eng') reads `fra.txt` (`English<TAB>French[<TAB>attribution]`)
from a manual directory (`fra.txt` or `fra-eng.zip`) or from the book's zip, and writes four
splits that keep file order: `full` (every valid pair) and `train`/`validation`/`test`, a
deterministic partition keyed on the preprocessed English source (`split_of`), so that all
translations of one source land in the same split. Only TFDS is needed, not TensorFlow:
`load`/`load_pairs` prepare it as array_record and read it back by random access.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from seq2seq_jax import errors
from seq2seq_jax.data import text

URL = 'http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip'
URL_HOST = 'd2l-data.s3-accelerate.amazonaws.com'
ZIP_SHA1 = '94646ad1522d915e7b0f9296181140edcf86a4f5'
ANKI_URL = 'https://www.manythings.org/anki/'
TXT_NAME = 'fra.txt'
ZIP_NAME = 'fra-eng.zip'
SPLITS = ('full', 'train', 'validation', 'test')
NETWORK_TIMEOUT_S = 3.0
_CHUNK = 8192  # Records read per batch when iterating a `PairSource`.


class DataUnavailableError(errors.UserError):  # A RuntimeError; the CLIs print it in one line.
  """The source file is neither in the manual directory nor downloadable."""


class Parsed(NamedTuple):
  """The valid pairs of a source file and how many lines were skipped."""

  pairs: list[tuple[str, str]]
  skipped: int
  first_skipped: int | None  # 1-based line number of the first skipped line


def split_of(en: str) -> str:
  """The split ('train', 'validation' or 'test') of a pair, from its English source."""
  h = int(hashlib.md5(text.preprocess(en).encode('utf-8')).hexdigest(), 16) % 100
  if h < 2:
    return 'test'
  if h < 4:
    return 'validation'
  return 'train'


def parse_pairs(data: bytes, name: str = TXT_NAME) -> Parsed:
  """Parses `English<TAB>French[<TAB>...]` lines; malformed lines are skipped and counted.

  Raises ValueError naming `name` and the 1-based line of the first line that is not UTF-8.
  """
  lines = data.split(b'\n')
  if lines and not lines[-1].strip(b'\r'):
    lines.pop()  # The newline that ends the last line does not start another one.
  pairs, skipped, first_skipped = [], 0, None
  for number, raw in enumerate(lines, start=1):
    try:
      line = raw.decode('utf-8').rstrip('\r\n')
    except UnicodeDecodeError as e:
      raise ValueError(f'{name}: line {number} is not valid UTF-8 ({e.reason})') from None
    if number == 1:
      line = line.removeprefix('\ufeff')
    parts = line.split('\t')
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
      skipped += 1
      first_skipped = first_skipped or number
      continue
    pairs.append((parts[0], parts[1]))
  return Parsed(pairs, skipped, first_skipped)


def find_manual_file(manual_dir: str | Path) -> Path | None:
  """`fra.txt` or else `fra-eng.zip` in `manual_dir` (or `manual_dir` itself if a file)."""
  manual_dir = Path(manual_dir).expanduser()
  if manual_dir.is_file():
    return manual_dir
  for name in (TXT_NAME, ZIP_NAME):
    if (manual_dir / name).is_file():
      return manual_dir / name
  return None


def read_source(path: str | Path) -> bytes:
  """The bytes of `fra.txt`, read directly or from a zip holding it at any path."""
  return _read_named(path)[0]


def _read_named(path: str | Path) -> tuple[bytes, str]:
  """The bytes of `fra.txt` in `path` and a name for it in messages."""
  path = Path(path)
  if not zipfile.is_zipfile(path):
    return path.read_bytes(), str(path)
  with zipfile.ZipFile(path) as archive:
    members = [m for m in archive.namelist() if m.rsplit('/', 1)[-1] == TXT_NAME]
    if not members:
      raise DataUnavailableError(f'{path} holds no {TXT_NAME}')
    member = min(members, key=lambda m: (m.count('/'), m))
    return archive.read(member), f'{path} ({member})'


def source_sha1(path: str | Path) -> str:
  """The sha1 hex digest of the `fra.txt` text in `path` (plain or zipped)."""
  return hashlib.sha1(read_source(path)).hexdigest()


def host_reachable(
  host: str = URL_HOST, port: int = 80, timeout: float = NETWORK_TIMEOUT_S
) -> bool:
  """Whether a TCP connection to `host:port` opens within about `timeout` seconds."""
  result = []

  def connect() -> None:
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)  # DNS lookups ignore the timeout.
  thread.start()
  thread.join(timeout + 0.5)
  return bool(result)


def _unavailable_message(reason: str) -> str:
  return (
    f'{reason}. Download {URL} (or fra.txt from {ANKI_URL}), put it in a directory DIR and '
    'pass --config.data.manual_dir=DIR.'
  )


class FraEng(tfds.core.GeneratorBasedBuilder):
  """The Tatoeba English-French pairs of the book (d2l `MTFraEng`)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Full split plus a train/validation/test split by English source.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Optional: put {TXT_NAME} (from {ANKI_URL}) or {ZIP_NAME} (from {URL}) in the manual '
    'directory; otherwise the book zip is downloaded.'
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='English-French sentence pairs from Tatoeba (manythings.org/anki).',
      features=tfds.features.FeaturesDict(
        {'en': tfds.features.Text(), 'fr': tfds.features.Text(), 'index': np.int64}
      ),
      homepage='https://d2l.ai/chapter_recurrent-modern/machine-translation-and-dataset.html',
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(),
    )

  def _source_path(self, dl_manager: tfds.download.DownloadManager) -> Path:
    """The manual file if there is one, else the downloaded (and checked) book zip."""
    # The public `dl_manager.manual_dir` raises when the directory is missing or empty, and
    # TFDS fills in `<download_dir>/manual` when none was given: tell the two cases apart.
    manual_dir = getattr(dl_manager, '_manual_dir', None)
    default_dir = Path(dl_manager.download_dir) / 'manual'
    if manual_dir is not None:
      manual_dir = Path(manual_dir)
      found = find_manual_file(manual_dir)
      if found is not None:
        return found
      if manual_dir != default_dir:
        raise DataUnavailableError(
          _unavailable_message(
            f'the manual directory {manual_dir} holds no {TXT_NAME} or {ZIP_NAME}'
          )
        )
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
    path = self._source_path(dl_manager)
    data, name = _read_named(path)
    parsed = parse_pairs(data, name)
    if not parsed.pairs:
      raise ValueError(f'{name}: no valid English<TAB>French lines')
    first = f' (first at line {parsed.first_skipped})' if parsed.skipped else ''
    logging.info(
      'fra_eng: kept %s pairs, skipped %s malformed lines%s',
      f'{len(parsed.pairs):,}',
      f'{parsed.skipped:,}',
      first,
    )
    self.info.metadata.update(
      source=str(path),
      source_sha1=hashlib.sha1(data).hexdigest(),
      kept=len(parsed.pairs),
      skipped=parsed.skipped,
      first_skipped=parsed.first_skipped,
    )
    indexed = list(enumerate(parsed.pairs))
    by_split = {name: [] for name in SPLITS[1:]}
    for item in indexed:
      by_split[split_of(item[1][0])].append(item)
    by_split['full'] = indexed
    empty = [name for name in SPLITS if not by_split[name]]
    if empty:  # TFDS cannot write an empty split; `load` reads a missing one as empty.
      logging.warning('fra_eng: no pairs fall in split(s) %s', ', '.join(empty))
    return {name: self._generate_examples(v) for name, v in by_split.items() if v}

  def _generate_examples(
    self, items: Sequence[tuple[int, tuple[str, str]]]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, (en, fr) in items:
      yield index, {'en': en, 'fr': fr, 'index': index}


class PairSource(Sequence[dict[str, Any]]):
  """Random access to one (possibly sliced) split; items are `{'en': str, 'fr': str, 'index': int}`.

  Wraps TFDS's array_record data source read as raw bytes: decoding the `tf.train.Example`
  protos here is several times faster than TFDS's NumPy decoder and yields `str`, not bytes.
  """

  def __init__(self, records: Sequence[bytes]):
    self._records = records

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, key: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
    if isinstance(key, slice):
      return self.__getitems__(range(len(self))[key])
    return _decode_record(self._records[range(len(self))[key]])  # IndexError past the end.

  def __iter__(self) -> Iterator[dict[str, Any]]:
    for start in range(0, len(self), _CHUNK):
      yield from self.__getitems__(range(start, min(start + _CHUNK, len(self))))

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    keys = list(keys)
    if not keys:
      return []
    return [_decode_record(r) for r in self._records.__getitems__(keys)]

  def pairs(self) -> list[tuple[str, str]]:
    """All (English, French) pairs, in order."""
    return [(ex['en'], ex['fr']) for ex in self.__getitems__(range(len(self)))]


def _decode_record(record: bytes) -> dict[str, Any]:
  feature = tf_example_pb2.Example.FromString(record).features.feature
  return {
    'en': feature['en'].bytes_list.value[0].decode('utf-8'),
    'fr': feature['fr'].bytes_list.value[0].decode('utf-8'),
    'index': int(feature['index'].int64_list.value[0]),
  }


def prepare(data_dir: str, manual_dir: str | None = None) -> FraEng:
  """The 'fra_eng' builder at `data_dir`, prepared (as array_record) if it was not yet.

  If it was, and `manual_dir` holds a source file, checks that the data came from its text.
  """
  builder = FraEng(data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
    return builder
  manual_file = find_manual_file(manual_dir) if manual_dir else None
  if manual_file is not None:
    prepared_sha1 = builder.info.metadata.get('source_sha1')
    if prepared_sha1 != source_sha1(manual_file):
      raise ValueError(
        f'the fra_eng data prepared at {data_dir} came from another file than {manual_file} '
        f'(sha1 {prepared_sha1} of {builder.info.metadata.get("source")}); delete '
        f'{builder.data_dir} or use another data_dir'
      )
  return builder


def load(split: str, *, data_dir: str, manual_dir: str | None = None) -> PairSource:
  """A random-access source of `split` (e.g. 'train', 'full[:512]'), preparing it if needed."""
  name = split.split('[', 1)[0]
  if name not in SPLITS:
    raise ValueError(f'unknown fra_eng split {split!r}; expected one of {SPLITS}')
  builder = prepare(data_dir, manual_dir)
  if name not in builder.info.splits:
    return PairSource([])  # No pair fell in this split (tiny data), so TFDS did not write it.
  return PairSource(
    builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  )


def load_pairs(
  split: str, *, data_dir: str, manual_dir: str | None = None
) -> list[tuple[str, str]]:
  """The (English, French) pairs of `split` in file order (see `load`)."""
  return load(split, data_dir=data_dir, manual_dir=manual_dir).pairs()
