"""TensorFlow Datasets builder for the Tatoeba pairs of manythings.org (the book's data).

A manythings file (`fra.txt`, `deu.txt`, ... or its zip `fra-eng.zip`) pairs English with
one other language: `English<TAB>Other[<TAB>attribution]`. The builder `Tatoeba`
('tatoeba') reads one such file and writes four splits that keep file order: `full` (every
valid pair) and `train`/`validation`/`test`, a deterministic partition keyed on the
preprocessed *source* sentence (`split_of`), so that all translations of one source land
in the same split. Each source file and direction is its own builder config, named by the
language, the source side and the sha1 of the file's text
(`<data_dir>/tatoeba/fr_from_en_94646ad1522d915e/`), so different files live side by side
in one cache and a file that changed is prepared anew, never read stale. Only TFDS is
needed, not TensorFlow: `load`/`load_pairs` prepare it as array_record and read it back by
random access.
"""

from __future__ import annotations

import dataclasses
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
SPLITS = ('full', 'train', 'validation', 'test')
NETWORK_TIMEOUT_S = 3.0
_CHUNK = 8192  # Records read per batch when iterating a `PairSource`.

# The manythings file names' ISO 639-3 codes and the ISO 639-1 codes of those that have
# one. A language is named by its 639-1 code where there is one (`fr`), else by the file's
# code (`ber`); config fields take either (`fr` or `fra`).
ISO639_1 = {
  'afr': 'af', 'ara': 'ar', 'aze': 'az', 'bel': 'be', 'ben': 'bn', 'bos': 'bs',
  'bre': 'br', 'bul': 'bg', 'cat': 'ca', 'ces': 'cs', 'cmn': 'zh', 'cym': 'cy',
  'dan': 'da', 'deu': 'de', 'ell': 'el', 'eng': 'en', 'epo': 'eo', 'est': 'et',
  'eus': 'eu', 'fin': 'fi', 'fra': 'fr', 'fry': 'fy', 'gle': 'ga', 'glg': 'gl',
  'heb': 'he', 'hin': 'hi', 'hrv': 'hr', 'hun': 'hu', 'hye': 'hy', 'ind': 'id',
  'isl': 'is', 'ita': 'it', 'jpn': 'ja', 'kat': 'ka', 'kaz': 'kk', 'khm': 'km',
  'kor': 'ko', 'lat': 'la', 'lit': 'lt', 'lvs': 'lv', 'mal': 'ml', 'mar': 'mr',
  'mkd': 'mk', 'mri': 'mi', 'nld': 'nl', 'nob': 'nb', 'pes': 'fa', 'pol': 'pl',
  'por': 'pt', 'ron': 'ro', 'rus': 'ru', 'slk': 'sk', 'slv': 'sl', 'spa': 'es',
  'sqi': 'sq', 'srp': 'sr', 'swe': 'sv', 'swh': 'sw', 'tam': 'ta', 'tat': 'tt',
  'tel': 'te', 'tgl': 'tl', 'tha': 'th', 'tur': 'tr', 'uig': 'ug', 'ukr': 'uk',
  'urd': 'ur', 'uzb': 'uz', 'vie': 'vi', 'zsm': 'ms',
}  # fmt: skip
_FILE_CODES = {two: three for three, two in ISO639_1.items()}


def language(code: str) -> str:
  """The canonical name of a language code: its ISO 639-1 code where it has one."""
  code = code.strip().lower()
  return ISO639_1.get(code, code)


def file_code(lang: str) -> str:
  """The code manythings names the files of a language by (`fr` -> `fra`)."""
  return _FILE_CODES.get(language(lang), language(lang))


class DataUnavailableError(errors.UserError):  # A RuntimeError; the CLIs print it in one line.
  """The source file is neither in the manual directory nor downloadable."""


class Parsed(NamedTuple):
  """The valid pairs of a source file and how many lines were skipped."""

  pairs: list[tuple[str, str]]
  skipped: int
  first_skipped: int | None  # 1-based line number of the first skipped line


def split_of(source: str) -> str:
  """The split ('train', 'validation' or 'test') of a pair, from its source sentence."""
  h = int(hashlib.md5(text.preprocess(source).encode('utf-8')).hexdigest(), 16) % 100
  if h < 2:
    return 'test'
  if h < 4:
    return 'validation'
  return 'train'


def parse_pairs(data: bytes, name: str = 'fra.txt') -> Parsed:
  """Parses `English<TAB>Other[<TAB>...]` lines; malformed lines are skipped and counted.

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


@dataclasses.dataclass(frozen=True)
class Source:
  """Which pairs to read: a manythings file of English and `lang`, and the direction."""

  lang: str  # the language paired with English (canonical code, e.g. 'fr')
  english_source: bool  # English -> lang (else lang -> English)
  path: Path | None  # the file (plain or zipped); None: download the book's fra-eng.zip

  @property
  def keys(self) -> tuple[str, str]:
    """The (source, target) feature keys."""
    return ('en', self.lang) if self.english_source else (self.lang, 'en')


def resolve(manual_dir: str | Path | None, src_lang: str = 'en', tgt_lang: str = 'fr') -> Source:
  """The source file and direction for a config; a one-line error for what cannot work:
  a path that does not exist, a directory without a file of the pair, a file of another
  language, the same language on both sides, a pair without English."""
  src, tgt = language(src_lang), language(tgt_lang)
  if src == tgt:
    raise DataUnavailableError(
      f'data.src_lang and data.tgt_lang are both {src!r}: a translation needs two languages'
    )
  if 'en' not in (src, tgt):
    raise DataUnavailableError(
      f'a manythings file pairs English with one other language; got data.src_lang={src!r} '
      f'and data.tgt_lang={tgt!r}'
    )
  lang = tgt if src == 'en' else src
  code = file_code(lang)
  if not manual_dir:
    if lang != 'fr':
      raise DataUnavailableError(
        f"no data.manual_dir: only the book's English-French zip is downloaded; get "
        f'{code}-eng.zip from {ANKI_URL} and pass --config.data.manual_dir=FILE_OR_DIR'
      )
    return Source(lang, src == 'en', None)
  path = Path(manual_dir).expanduser()
  if not path.exists():
    raise DataUnavailableError(f'data.manual_dir {path} does not exist')
  if path.is_file():
    named = _file_language(path)
    if named is not None and named != lang:
      raise DataUnavailableError(
        f'{path} holds English-{named} pairs (by its name), not the {lang!r} of '
        f'data.src_lang={src!r} / data.tgt_lang={tgt!r}'
      )
    return Source(lang, src == 'en', path)
  for name in (f'{code}.txt', f'{code}-eng.zip'):
    if (path / name).is_file():
      return Source(lang, src == 'en', path / name)
  others = sorted(p.name for p in path.iterdir() if _file_language(p) not in (None, 'en'))
  also = f' (it holds {", ".join(others)})' if others else ''
  raise DataUnavailableError(
    _unavailable_message(f'the manual directory {path} holds no {code}.txt or {code}-eng.zip{also}')
  )


def _file_language(path: Path) -> str | None:
  """The language a manythings file name says it pairs with English (`deu.txt`, `spa-eng.zip`)."""
  name = path.name.lower()
  for suffix in ('-eng.zip', '.txt', '.zip'):
    if name.endswith(suffix):
      code = name.removesuffix(suffix)
      return language(code) if code in ISO639_1 else None
  return None


def find_manual_file(manual_dir: str | Path, lang: str = 'fr') -> Path | None:
  """The manythings file of `lang` in `manual_dir` (or `manual_dir` itself if a file)."""
  try:
    return resolve(manual_dir, 'en', lang).path
  except DataUnavailableError:
    return None


def read_source(path: str | Path, lang: str = 'fr') -> bytes:
  """The bytes of the pairs file, read directly or from a zip holding it at any path."""
  return _read_named(path, lang)[0]


def _read_named(path: str | Path, lang: str = 'fr') -> tuple[bytes, str]:
  """The bytes of the pairs file in `path` and a name for it in messages."""
  path = Path(path)
  if not zipfile.is_zipfile(path):
    return path.read_bytes(), str(path)
  member_name = f'{file_code(lang)}.txt'
  with zipfile.ZipFile(path) as archive:
    members = [m for m in archive.namelist() if m.rsplit('/', 1)[-1] == member_name]
    if not members:
      raise DataUnavailableError(f'{path} holds no {member_name}')
    member = min(members, key=lambda m: (m.count('/'), m))
    return archive.read(member), f'{path} ({member})'


def source_sha1(path: str | Path, lang: str = 'fr') -> str:
  """The sha1 hex digest of the pairs text in `path` (plain or zipped)."""
  return hashlib.sha1(read_source(path, lang)).hexdigest()


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
    f'{reason}. Download {URL} (or a file such as fra.txt from {ANKI_URL}), put it in a '
    'directory DIR and pass --config.data.manual_dir=DIR.'
  )


class TatoebaConfig(tfds.core.BuilderConfig):
  """One source file (by the sha1 of its text) and direction; see `builder_config`."""

  def __init__(self, *, name: str, source: Source, **kwargs: Any):
    super().__init__(name=name, **kwargs)
    self.source = source


def builder_config(source: Source) -> TatoebaConfig:
  """`<lang>_from_<source language>_<sha1 of the text, 16 digits>`; `..._d2l` for the
  downloaded book zip."""
  digest = source_sha1(source.path, source.lang)[:16] if source.path else 'd2l'
  src = source.keys[0]
  return TatoebaConfig(name=f'{source.lang}_from_{src}_{digest}', source=source)


class Tatoeba(tfds.core.GeneratorBasedBuilder):
  """Tatoeba pairs of English and one other language (manythings.org/anki; the book's
  `MTFraEng` for French)."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
    '1.0.0': "'fra_eng': full split plus a train/validation/test split by English source.",
    '2.0.0': 'Any manythings language and either direction; a config per source file.',
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
    by_split = {name: [] for name in SPLITS[1:]}
    for item in indexed:
      by_split[split_of(item[1][side])].append(item)
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
  data_dir: str, manual_dir: str | None = None, src_lang: str = 'en', tgt_lang: str = 'fr'
) -> Tatoeba:
  """The 'tatoeba' builder of this source and direction at `data_dir`, prepared (as
  array_record) if it was not yet. Its config is named by the source file's text, so a
  changed or different file gets its own prepared copy beside the others."""
  source = resolve(manual_dir, src_lang, tgt_lang)
  config = builder_config(source)
  builder = Tatoeba(data_dir=data_dir, config=config)
  if not builder.is_prepared():
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception:
      # Two runs started at once on one data_dir: the one that renamed its folder into
      # place second fails, but the data it needs is there now.
      builder = Tatoeba(data_dir=data_dir, config=config)
      if not builder.is_prepared():
        raise
      logging.info('tatoeba: %s was prepared by another process meanwhile', config.name)
  return builder


def load(
  split: str,
  *,
  data_dir: str,
  manual_dir: str | None = None,
  src_lang: str = 'en',
  tgt_lang: str = 'fr',
) -> PairSource:
  """A random-access source of `split` (e.g. 'train', 'full[:512]'), preparing it if needed."""
  name = split.split('[', 1)[0]
  if name not in SPLITS:
    raise ValueError(f'unknown tatoeba split {split!r}; expected one of {SPLITS}')
  builder = prepare(data_dir, manual_dir, src_lang, tgt_lang)
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
