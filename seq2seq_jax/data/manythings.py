"""Finding and reading a manythings.org (Tatoeba) file: which file a config's languages
and `data.manual_dir` name (`resolve`), its text from a plain file or a zip
(`read_source`), its pairs (`parse_pairs`: `English<TAB>Other[<TAB>attribution]`, malformed
lines skipped and counted) and the language codes (ISO 639-1 or the file's 639-3). The
Tatoeba builder (`tatoeba.py`) reads what this module finds."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import zipfile
from pathlib import Path
from typing import NamedTuple

from seq2seq_jax import errors
from seq2seq_jax.data import text

URL = 'http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip'
URL_HOST = 'd2l-data.s3-accelerate.amazonaws.com'
ZIP_SHA1 = '94646ad1522d915e7b0f9296181140edcf86a4f5'
ANKI_URL = 'https://www.manythings.org/anki/'
NETWORK_TIMEOUT_S = 3.0

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


class DataUnavailableError(errors.UserError):  # a UserError: the CLIs print it in one line
  """The source file is neither in the manual directory nor downloadable."""


class Parsed(NamedTuple):
  """The valid pairs of a source file and how many lines were skipped."""

  pairs: list[tuple[str, str]]
  skipped: int
  first_skipped: int | None  # 1-based line number of the first skipped line


def parse_pairs(data: bytes, name: str = 'fra.txt') -> Parsed:
  """Parses `English<TAB>Other[<TAB>...]` lines; malformed lines are skipped and counted.

  Raises `errors.DataError` naming `name` and the 1-based line of the first line that is
  not UTF-8.
  """
  lines = data.split(b'\n')
  if lines and not lines[-1].strip(b'\r'):
    lines.pop()  # The newline that ends the last line does not start another one.
  pairs, skipped, first_skipped = [], 0, None
  for number, raw in enumerate(lines, start=1):
    try:
      line = raw.decode('utf-8').rstrip('\r\n')
    except UnicodeDecodeError as e:
      raise errors.DataError(f'{name}: line {number} is not valid UTF-8 ({e.reason})') from None
    if number == 1:
      line = line.removeprefix('\ufeff')
    parts = line.split('\t')
    if len(parts) < 2 or text.is_blank(parts[0]) or text.is_blank(parts[1]):
      skipped += 1
      first_skipped = first_skipped or number
      continue
    pairs.append((parts[0], parts[1]))
  return Parsed(pairs, skipped, first_skipped)


@dataclasses.dataclass(frozen=True)
class PairsFile:
  """Which pairs to read: a manythings file of English and `lang`, and the direction."""

  lang: str  # the language paired with English (canonical code, e.g. 'fr')
  english_source: bool  # English -> lang (else lang -> English)
  path: Path | None  # the file (plain or zipped); None: download the book's fra-eng.zip

  @property
  def keys(self) -> tuple[str, str]:
    """The (source, target) feature keys."""
    return ('en', self.lang) if self.english_source else (self.lang, 'en')


def resolve(manual_dir: str | Path | None, src_lang: str, tgt_lang: str) -> PairsFile:
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
    return PairsFile(lang, src == 'en', None)
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
    return PairsFile(lang, src == 'en', path)
  for name in (f'{code}.txt', f'{code}-eng.zip'):
    if (path / name).is_file():
      return PairsFile(lang, src == 'en', path / name)
  missing = f'the manual directory {path} holds no {code}.txt or {code}-eng.zip ({_holds(path)})'
  if lang == 'fr':  # the book's pair: its zip is the one to get
    raise DataUnavailableError(unavailable_message(missing))
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
  return read_named(path, lang)[0]


def read_named(path: str | Path, lang: str = 'fr') -> tuple[bytes, str]:
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


def unavailable_message(reason: str) -> str:
  """`reason`, then how to give the book's file by hand."""
  return (
    f'{reason}. Download {URL} (or a file such as fra.txt from {ANKI_URL}), put it in a '
    'directory DIR and pass --config.data.manual_dir=DIR.'
  )
