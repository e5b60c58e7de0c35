"""Tests for the 'tatoeba' TFDS builder, on small made-up source files."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tensorflow_datasets as tfds

from seq2seq_jax import errors
from seq2seq_jax.data import heldout, manythings, text
from seq2seq_jax.data import tatoeba as fe

PAIRS = [
  ('Go.', 'Va !'),
  ('Hi.', 'Salut !'),
  ('Run!', 'Cours\u202f!'),
  ('Run!', 'Courez\u202f!'),
  ('Who?', 'Qui ?'),
  ('Wow!', 'Ça alors\u202f!'),
]


def _lines(pairs: list[tuple[str, str]]) -> str:
  return ''.join(f'{en}\t{fr}\n' for en, fr in pairs)


def _write(directory: Path, content: str | bytes, name: str = 'fra.txt') -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / name
  path.write_bytes(content.encode('utf-8') if isinstance(content, str) else content)
  return path


def _zip(directory: Path, content: str, member: str = 'fra-eng/fra.txt') -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / 'fra-eng.zip'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('fra-eng/_about.txt', 'about')
    archive.writestr(member, content.encode('utf-8'))
  return path


def _source(
  tmp_path: Path,
  manual: Path | str | None = None,
  held_out: tuple[float, int] = (heldout.SHARE, heldout.MAX_SOURCES),
  src_lang: str = 'en',
  tgt_lang: str = 'fr',
) -> fe.TatoebaSource:
  """The source of `manual` ('': the book's download; None: tmp_path/manual)."""
  manual_dir = str(tmp_path / 'manual') if manual is None else str(manual)
  return fe.TatoebaSource(manual_dir, src_lang, tgt_lang, str(tmp_path / 'tfds'), held_out)


def _load(tmp_path: Path, split: str, manual: Path | None = None, **langs: str) -> fe.PairSource:
  return _source(tmp_path, manual, **langs).load(split)


def _pairs(tmp_path: Path, split: str = 'full', manual: Path | None = None, **kwargs: Any) -> list:
  return [p for chunk in _source(tmp_path, manual, **kwargs).iter_pairs(split) for p in chunk]


def _builder(tmp_path: Path, manual: Path | None = None, **langs: str) -> fe.Tatoeba:
  return _source(tmp_path, manual, **langs).build()


def test_split_of_follows_the_md5_of_the_preprocessed_source() -> None:
  for en in ('Go.', 'I am cold.', 'Hello, world!'):
    h = int(hashlib.md5(text.preprocess(en).encode('utf-8')).hexdigest(), 16) % 100
    expected = 'test' if h < 2 else 'validation' if h < 4 else 'train'
    assert heldout.split_of(en) == expected
  assert heldout.split_of('Go.') == heldout.split_of('go .')  # Keyed on the preprocessed text.
  counts = {name: 0 for name in ('train', 'validation', 'test')}
  for i in range(2000):
    counts[heldout.split_of(f'Sentence {i}.')] += 1
  assert 20 < counts['test'] < 70 and 20 < counts['validation'] < 70


def test_parse_pairs_skips_and_counts_malformed_lines() -> None:
  data = (
    'Go.\tVa !\r\n'  # CRLF
    'no tab here\n'  # 2: malformed
    'Hi.\tSalut !\tCC-BY 2.0 (France) Attribution: tatoeba.org #538123 (CM)\n'
    ' \tvide\n'  # 4: empty English
    'Run!\t  \n'  # 5: empty French
    '\n'  # 6: blank
    'Wow!\tÇa alors\u202f!'  # no final newline
  ).encode('utf-8')
  parsed = manythings.parse_pairs(data)
  assert parsed.pairs == [('Go.', 'Va !'), ('Hi.', 'Salut !'), ('Wow!', 'Ça alors\u202f!')]
  assert (parsed.skipped, parsed.first_skipped) == (4, 2)
  clean = manythings.parse_pairs(_lines(PAIRS).encode('utf-8'))
  assert clean.pairs == PAIRS and clean.skipped == 0 and clean.first_skipped is None


def test_plain_fra_txt(tmp_path: Path) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS))
  assert _pairs(tmp_path) == PAIRS
  source = _load(tmp_path, 'full')
  assert len(source) == len(PAIRS)
  first, last = source[0], source[-1]
  assert first == {'en': 'Go.', 'fr': 'Va !', 'index': 0}
  assert type(first['en']) is str and type(first['fr']) is str
  assert last['index'] == len(PAIRS) - 1
  assert [ex['index'] for ex in source] == list(range(len(PAIRS)))
  with pytest.raises(IndexError):
    source[len(PAIRS)]
  metadata = _builder(tmp_path).info.metadata
  assert metadata['source_sha1'] == hashlib.sha1(_lines(PAIRS).encode('utf-8')).hexdigest()
  assert (metadata['kept'], metadata['skipped']) == (len(PAIRS), 0)


@pytest.mark.parametrize('member', ['fra-eng/fra.txt', 'deep/inside/fra.txt'])
def test_zipped_source(tmp_path: Path, member: str) -> None:
  _zip(tmp_path / 'manual', _lines(PAIRS), member)
  assert _pairs(tmp_path) == PAIRS


def test_fra_txt_is_preferred_to_the_zip(tmp_path: Path) -> None:
  _zip(tmp_path / 'manual', _lines(PAIRS[:2]))
  _write(tmp_path / 'manual', _lines(PAIRS))
  assert _pairs(tmp_path) == PAIRS


def test_three_column_layout(tmp_path: Path) -> None:
  content = ''.join(
    f'{en}\t{fr}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i} (CK) & #{i + 1} (sacredceltic)\n'
    for i, (en, fr) in enumerate(PAIRS)
  )
  _write(tmp_path / 'manual', content)
  assert _pairs(tmp_path) == PAIRS


def test_malformed_lines_are_skipped_counted_and_logged(
  tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
  lines = [f'{en}\t{fr}' for en, fr in PAIRS]
  lines.insert(2, 'a line without a tab')  # line 3
  lines.insert(5, '\tpas de source')  # line 6
  lines.append('Stop!\t')  # line 9
  _write(tmp_path / 'manual', '\r\n'.join(lines) + '\r\n')
  with caplog.at_level(logging.INFO):
    pairs = _pairs(tmp_path)
  assert pairs == PAIRS
  indices = [ex['index'] for ex in _load(tmp_path, 'full')]
  assert indices == list(range(len(PAIRS)))
  metadata = _builder(tmp_path).info.metadata
  assert (metadata['kept'], metadata['skipped'], metadata['first_skipped']) == (6, 3, 3)
  assert 'tatoeba: kept 6 pairs, skipped 3 malformed lines (first at line 3)' in caplog.text


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
  content = _lines(PAIRS[:2]).encode('utf-8') + 'Été\tSummer\n'.encode('latin-1')
  path = _write(tmp_path / 'manual', content + b'Go.\tVa !\n')
  with pytest.raises(ValueError, match=r'line 3 is not valid UTF-8') as info:
    _pairs(tmp_path)
  assert str(path) in str(info.value)


def test_slices_keep_file_order(tmp_path: Path) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS))
  assert _pairs(tmp_path, 'full[:3]') == PAIRS[:3]
  assert _pairs(tmp_path, 'full[2:5]') == PAIRS[2:5]
  assert _pairs(tmp_path, 'full[-2:]') == PAIRS[-2:]
  source = _load(tmp_path, 'full[1:4]')
  assert [ex['index'] for ex in source] == [1, 2, 3]
  assert [ex['en'] for ex in source[1:]] == ['Run!', 'Run!']
  with pytest.raises(ValueError, match='unknown tatoeba split'):
    _load(tmp_path, 'dev')


def test_splits_partition_full_by_source(tmp_path: Path) -> None:
  pairs = []
  for i in range(300):
    en = f'Sentence number {i}.'
    pairs += [(en, f'Phrase {i}, traduction {k}.') for k in range(1 + i % 3)]
  # Variants of one source that preprocess alike go to the same split too.
  pairs += [('Go.', 'Va !'), ('go .', 'Vas-y !'), ('GO.', 'Allez !')]
  _write(tmp_path / 'manual', _lines(pairs))
  full = _pairs(tmp_path)
  assert full == pairs
  split_pairs = {name: _pairs(tmp_path, name) for name in ('train', 'validation', 'test')}
  assert all(split_pairs.values()), {k: len(v) for k, v in split_pairs.items()}
  for name, some in split_pairs.items():
    assert some == [p for p in full if heldout.split_of(p[0]) == name]  # File order kept.
  assert sum(len(v) for v in split_pairs.values()) == len(full)
  sources = {name: {text.preprocess(en) for en, _ in v} for name, v in split_pairs.items()}
  assert not sources['train'] & sources['validation']
  assert not sources['train'] & sources['test']
  assert not sources['validation'] & sources['test']
  indices = {name: [ex['index'] for ex in _load(tmp_path, name)] for name in split_pairs}
  assert sorted(sum(indices.values(), [])) == list(range(len(full)))
  assert all(v == sorted(v) for v in indices.values())


def test_a_split_without_pairs_reads_as_empty(tmp_path: Path) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS[:1]))
  name = heldout.split_of(PAIRS[0][0])
  others = [s for s in ('train', 'validation', 'test') if s != name]
  assert _pairs(tmp_path, name) == PAIRS[:1]
  assert _pairs(tmp_path, others[0]) == [] and _pairs(tmp_path, f'{others[1]}[:2]') == []


def test_offline_without_manual_file_fails_fast(
  tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  monkeypatch.setattr(manythings, 'host_reachable', lambda *a, **k: False)

  def no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError('must not try to download')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', no_download)
  start = time.monotonic()
  with pytest.raises(fe.DataUnavailableError) as info:
    _pairs(tmp_path, 'train', manual='')
  assert time.monotonic() - start < 10
  assert isinstance(info.value, errors.UserError)  # a one-line error
  message = str(info.value)
  assert manythings.URL in message and 'manythings.org/anki' in message
  assert '--config.data.manual_dir=DIR' in message


def test_manual_dir_without_source_file_is_an_error(tmp_path: Path) -> None:
  empty = tmp_path / 'empty'
  _write(empty, 'unrelated', name='README')
  with pytest.raises(fe.DataUnavailableError, match='holds no fra.txt or fra-eng.zip') as e:
    _pairs(tmp_path, manual=empty)
  assert str(empty) in str(e.value)
  _write(empty, _lines(PAIRS), name='deu.txt')  # another language: say what is there
  with pytest.raises(fe.DataUnavailableError, match=r'holds no fra.txt .*\(it holds README, deu'):
    _pairs(tmp_path, manual=empty)


def test_another_language_missing_offers_manythings_not_the_book_zip(tmp_path: Path) -> None:
  manual = tmp_path / 'manual'
  _write(manual, _lines(PAIRS))  # only the book's fra.txt
  with pytest.raises(fe.DataUnavailableError) as e:
    _pairs(tmp_path, tgt_lang='de')
  assert str(e.value) == (
    f'the manual directory {manual} holds no deu.txt or deu-eng.zip (it holds fra.txt). '
    f'Files of English and another language come from https://www.manythings.org/anki/: get '
    f'deu-eng.zip there, put it (or the deu.txt it holds) in {manual}, or pass '
    '--config.data.manual_dir=FILE'
  )
  assert 'fra-eng.zip' not in str(e.value) and manythings.URL not in str(e.value)
  (manual / 'fra.txt').unlink()
  with pytest.raises(fe.DataUnavailableError, match=r'holds no deu.txt .*\(it is empty\)'):
    _pairs(tmp_path, src_lang='deu', tgt_lang='en')


def test_a_manual_dir_that_does_not_exist_is_an_error_even_with_data_prepared(
  tmp_path: Path,
) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS))
  assert _pairs(tmp_path) == PAIRS
  missing = tmp_path / 'mistyped'
  with pytest.raises(fe.DataUnavailableError, match='does not exist') as e:
    _pairs(tmp_path, manual=missing)
  assert str(missing) in str(e.value)


def test_different_source_files_live_side_by_side(tmp_path: Path) -> None:
  a = _write(tmp_path / 'a', _lines(PAIRS))
  assert _pairs(tmp_path, manual=tmp_path / 'a') == PAIRS
  _write(tmp_path / 'b', _lines(PAIRS[:4]))
  assert _pairs(tmp_path, manual=tmp_path / 'b') == PAIRS[:4]
  assert _pairs(tmp_path, manual=a) == PAIRS  # the file itself; a is still prepared
  configs = sorted(p.name for p in (tmp_path / 'tfds' / 'tatoeba').iterdir())
  assert len(configs) == 2 and all(c.startswith('fr_from_en_') for c in configs)
  _zip(tmp_path / 'c', _lines(PAIRS))  # the same text, zipped: the same prepared data
  assert (
    _builder(tmp_path, tmp_path / 'c').builder_config.name
    == _builder(tmp_path, tmp_path / 'a').builder_config.name
  )
  a.write_text(_lines(PAIRS[1:]), encoding='utf-8')  # a changed file is prepared anew
  assert _pairs(tmp_path, manual=a) == PAIRS[1:]
  assert len(list((tmp_path / 'tfds' / 'tatoeba').iterdir())) == 3


def test_french_to_english_splits_by_the_french_source(tmp_path: Path) -> None:
  pairs = [(f'Sentence {i}.', f'Phrase {i % 150}.') for i in range(300)]
  _write(tmp_path / 'manual', _lines(pairs))
  reverse = {'src_lang': 'fr', 'tgt_lang': 'en'}
  full = _pairs(tmp_path, **reverse)
  assert full == [(fr, en) for en, fr in pairs]
  splits = {name: _pairs(tmp_path, name, **reverse) for name in ('train', 'validation', 'test')}
  assert sum(len(v) for v in splits.values()) == len(pairs)
  for name, some in splits.items():
    assert some == [p for p in full if heldout.split_of(p[0]) == name]
  sources = [{fr for fr, _ in v} for v in splits.values()]
  assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
  assert _pairs(tmp_path, src_lang='eng', tgt_lang='fra') == pairs  # 639-3 codes work too
  assert _builder(tmp_path, **reverse).builder_config.name.startswith('fr_from_fr_')


def test_any_manythings_language(tmp_path: Path) -> None:
  pairs = [('I see.', 'Ich verstehe.'), ('Thanks!', 'Danke!')]
  manual = tmp_path / 'manual'
  _write(manual, _lines(PAIRS))  # fra.txt beside: the language picks the file
  _write(manual, _lines(pairs), name='deu.txt')
  assert _pairs(tmp_path, src_lang='de', tgt_lang='en') == [(de, en) for en, de in pairs]
  assert _pairs(tmp_path) == PAIRS
  zipped = tmp_path / 'zipped'
  zipped.mkdir()
  with zipfile.ZipFile(zipped / 'deu-eng.zip', 'w') as archive:
    archive.writestr('deu.txt', _lines(pairs))
  assert _pairs(tmp_path, manual=zipped, tgt_lang='de') == pairs
  item = _load(tmp_path, 'full[:1]', manual=zipped, tgt_lang='de')[0]
  assert item == {'en': 'I see.', 'de': 'Ich verstehe.', 'index': 0}


@pytest.mark.parametrize(
  ('langs', 'message'),
  [
    ({'src_lang': 'fr', 'tgt_lang': 'fra'}, "both 'fr'"),
    ({'src_lang': 'de', 'tgt_lang': 'fr'}, 'pairs English with one other language'),
    ({'tgt_lang': 'es'}, 'holds no spa.txt or spa-eng.zip'),
  ],
)
def test_language_codes_the_corpus_does_not_have(tmp_path: Path, langs: dict, message: str) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS))
  with pytest.raises(fe.DataUnavailableError, match=message):
    _pairs(tmp_path, **langs)


def test_a_file_of_another_language_is_refused(tmp_path: Path) -> None:
  path = _write(tmp_path / 'manual', _lines(PAIRS), name='deu.txt')
  with pytest.raises(fe.DataUnavailableError, match=r"English-de pairs .* not the 'fr'"):
    _pairs(tmp_path, manual=path)
  other = _write(tmp_path / 'manual', _lines(PAIRS), name='my_pairs.tsv')  # no code: trusted
  assert _pairs(tmp_path, manual=other) == PAIRS


def test_host_reachable() -> None:
  server = socket.socket()
  server.bind(('127.0.0.1', 0))
  server.listen(1)
  port = server.getsockname()[1]
  try:
    assert manythings.host_reachable('127.0.0.1', port, timeout=2.0)
  finally:
    server.close()
  assert not manythings.host_reachable('127.0.0.1', port, timeout=0.5)


def test_a_preparation_finished_by_another_process_is_used(
  tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  _write(tmp_path / 'manual', _lines(PAIRS))
  real = fe.Tatoeba.download_and_prepare

  def lost_the_race(self: fe.Tatoeba, **kwargs: object) -> None:
    real(self, **kwargs)  # the other run's copy lands...
    raise OSError('Cannot rename .../incomplete.X_2.0.0. Destination .../2.0.0 already exists.')

  monkeypatch.setattr(fe.Tatoeba, 'download_and_prepare', lost_the_race)
  assert _pairs(tmp_path) == PAIRS
  monkeypatch.setattr(fe.Tatoeba, 'is_prepared', lambda self: False)
  with pytest.raises(OSError, match='Cannot rename'):  # a failure that left nothing: raised
    _pairs(tmp_path)


def _md5_percentile_split(source: str) -> str:
  """The split every corpus had before the cap (and any corpus under it still has)."""
  h = int(hashlib.md5(text.preprocess(source).encode('utf-8')).hexdigest(), 16) % 100
  return 'test' if h < 2 else 'validation' if h < 4 else 'train'


def test_the_held_out_cap_leaves_a_corpus_under_it_unchanged_and_caps_one_over_it() -> None:
  """`carve`: under the cap (as the book's file, at most 3,150 sources a split), the split
  of the md5 percentiles; over it, each split keeps its lowest positions and the rest goes
  back to training, whatever the order of the corpus."""
  corpus = [f'Sentence {i % 2500}.' for i in range(3000)]  # 500 sources twice
  positions = [heldout.split_position(s) for s in corpus]
  default = heldout.carve(positions=positions)  # 2%, up to 5,000 sources
  assert default == heldout.carve(heldout.SHARE, 0)  # the uncapped split
  assert [default.split_at(p) for p in positions] == [_md5_percentile_split(s) for s in corpus]
  held = {n: {s for s in corpus if _md5_percentile_split(s) == n} for n in ('validation', 'test')}
  assert all(30 < len(v) < 80 for v in held.values()), {k: len(v) for k, v in held.items()}
  capped = heldout.carve(0.02, 10, iter(positions))
  assert heldout.carve(0.02, 10, positions[::-1]) == capped
  split = {s: capped.split(s) for s in corpus}
  for name, uncapped in held.items():
    kept = {s for s, n in split.items() if n == name}
    assert kept == set(sorted(uncapped, key=heldout.split_position)[:10])  # the 10 lowest
  assert {s for s, n in split.items() if n == 'train'} == set(corpus) - {
    s for s, n in split.items() if n != 'train'
  }
  # at the cap:
  assert heldout.carve(0.02, len(held['test']), positions).test_end == default.test_end
  wider = [heldout.carve(0.1, 0).split(s) for s in set(corpus)]
  assert 180 < wider.count('test') < 320 and 180 < wider.count('validation') < 320
  for share, most in ((0, 10), (0.6, 10), (0.02, -1)):
    with pytest.raises(errors.UserError, match='data.heldout_'):
      heldout.carve(share, most)


def test_capped_splits_of_a_prepared_file(tmp_path: Path) -> None:
  """The builder's splits with a share of 10% capped at 4 sources: 4 sources (with all
  their pairs) in validation and in test, the rest in train, file order kept; a config of
  its own beside the default one, whose splits are the uncapped ones."""
  pairs = [
    (f'Sentence number {i}.', f'Phrase {i}, traduction {k}.') for i in range(300) for k in (0, 1)
  ]
  _write(tmp_path / 'manual', _lines(pairs))
  capped = {
    name: _pairs(tmp_path, name, held_out=(0.1, 4)) for name in ('train', 'validation', 'test')
  }
  carving = heldout.carve(0.1, 4, [heldout.split_position(en) for en, _ in pairs])
  for name, some in capped.items():
    assert some == [p for p in pairs if carving.split(p[0]) == name]
  assert len({en for en, _ in capped['validation']}) == len({en for en, _ in capped['test']}) == 4
  assert len(capped['validation']) == len(capped['test']) == 8  # both pairs of each source
  assert sum(map(len, capped.values())) == len(pairs)
  names = sorted(p.name for p in (tmp_path / 'tfds' / 'tatoeba').iterdir())
  assert len(names) == 1 and names[0].endswith('_held0p1_max4')
  default = _pairs(tmp_path, 'test')
  assert default == [p for p in pairs if heldout.split_of(p[0]) == 'test']
  assert len(list((tmp_path / 'tfds' / 'tatoeba').iterdir())) == 2
