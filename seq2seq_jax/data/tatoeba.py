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

import dataclasses
import fractions
import hashlib
import heapq
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
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


# Held-out splits carved from the training pairs: each of validation and test takes this
# share of the source sentences, up to this many distinct sources (0: no cap). The book's
# file (3,400 pairs of 2,400 sources in validation, 2,200 sources in test, English to
# French; 3,150 each French to English) is under the cap: its split is the uncapped one.
SHARE = 0.02
MAX_SOURCES = 5000
_FINE = 1 << 64  # positions within a percentile


def split_position(source: str) -> int:
  """Where a source sentence lies on the line [0, 100 * 2**64) that the held-out splits
  cut: the md5 of its preprocessed text modulo 100 (its percentile), then 64 more of its
  bits (its place within the percentile)."""
  h = int.from_bytes(hashlib.md5(text.preprocess(source).encode('utf-8')).digest())
  return (h % 100) * _FINE + (h // 100) % _FINE


@dataclasses.dataclass(frozen=True)
class Carving:
  """The held-out splits as ranges of `split_position`: test `[0, test_end)`, validation
  `[width, validation_end)`, where `width` is the share's (2%: the percentiles 0-1 and
  2-3) and an end below `width` (or `2 * width`) is a cap: the sources above it stay in
  training."""

  width: int
  test_end: int
  validation_end: int

  def split(self, source: str) -> str:
    """The split ('train', 'validation' or 'test') of a pair, from its source sentence."""
    return self.split_at(split_position(source))

  def split_at(self, position: int) -> str:
    """The split of a source at this `split_position`."""
    if position < self.width:
      return 'test' if position < self.test_end else 'train'
    if position < 2 * self.width:
      return 'validation' if position < self.validation_end else 'train'
    return 'train'


def _width(share: float, max_sources: int) -> int:
  """The share's range of `split_position`s; one-line errors for settings that cannot be."""
  exact = fractions.Fraction(str(share))  # 0.02 exactly: the book's 2 percentiles
  if not 0 < exact <= fractions.Fraction(1, 2):
    raise errors.UserError(f'data.heldout_share must be above 0 and at most 0.5, got {share}')
  if max_sources < 0:
    raise errors.UserError(
      f'data.heldout_max_sources must be 0 (no cap) or more, got {max_sources}'
    )
  return int(exact * 100 * _FINE)


def carve(
  share: float = SHARE, max_sources: int = MAX_SOURCES, positions: Iterable[int] = ()
) -> Carving:
  """Validation and test, each `share` of the sources and, when its range holds more than
  `max_sources` distinct ones among `positions` (the `split_position` of every training
  pair's source, repeats allowed), only its `max_sources` lowest: the rest goes back to
  training. The same corpus and settings give the same splits, disjoint by source; a
  corpus under the cap keeps the uncapped split. One pass over `positions`, holding at
  most `max_sources + 1` of them per split."""
  width = _width(share, max_sources)
  ends = {'test': width, 'validation': 2 * width}
  if max_sources:
    lowest: dict[str, tuple[list[int], set[int]]] = {name: ([], set()) for name in ends}
    for position in positions:
      if position >= 2 * width:
        continue
      heap, kept = lowest['test' if position < width else 'validation']  # max-heap (negated)
      if position in kept:
        continue
      if len(heap) <= max_sources:
        heapq.heappush(heap, -position)
        kept.add(position)
      elif position < -heap[0]:
        kept.discard(-heapq.heapreplace(heap, -position))
        kept.add(position)
    for name, (heap, _) in lowest.items():
      if len(heap) > max_sources:  # the (max_sources + 1)-th lowest: held out below it
        ends[name] = -heap[0]
  return Carving(width, ends['test'], ends['validation'])


_UNCAPPED = carve(SHARE, 0)


def split_of(source: str, carving: Carving | None = None) -> str:
  """The split ('train', 'validation' or 'test') of a pair, from its source sentence
  (by default the uncapped 2% each, the split of any corpus under the cap)."""
  return (carving or _UNCAPPED).split(source)


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
  missing = f'the manual directory {path} holds no {code}.txt or {code}-eng.zip ({_holds(path)})'
  if lang == 'fr':  # the book's pair: its zip is the one to get
    raise DataUnavailableError(_unavailable_message(missing))
  raise DataUnavailableError(
    f'{missing}. Files of English and another language come from {ANKI_URL}: get '
    f'{code}-eng.zip there, put it (or the {code}.txt it holds) in {path}, or pass '
    '--config.data.manual_dir=FILE'
  )


def _holds(directory: Path, most: int = 8) -> str:
  """What a directory holds, for a message: 'it holds a, b and 3 more' or 'it is empty'."""
  names = sorted(p.name for p in directory.iterdir())
  if not names:
    return 'it is empty'
  more = f' and {len(names) - most} more' if len(names) > most else ''
  return f'it holds {", ".join(names[:most])}{more}'


def _file_language(path: Path) -> str | None:
  """The language a manythings file name says it pairs with English (`deu.txt`, `spa-eng.zip`)."""
  name = path.name.lower()
  for suffix in ('-eng.zip', '.txt', '.zip'):
    if name.endswith(suffix):
      code = name.removesuffix(suffix)
      return language(code) if code in ISO639_1 else None
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
