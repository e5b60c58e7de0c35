"""Data sources other than the Tatoeba file: parallel text files, TSV, TFDS by name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from seq2seq_jax import errors, inference
from seq2seq_jax.data import heldout, input_pipeline, prepared, sources, textfiles
from seq2seq_jax.train import loop
from tests import synthetic


def _config(tmp_path: Path, **data: object):
  config = tiny.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  for key, value in data.items():
    config.data[key] = value
  return config


def _load_pairs(data, split: str) -> list[tuple[str, str]]:  # noqa: ANN001
  return [pair for chunk in sources.from_config(data).iter_pairs(split) for pair in chunk]


def _content_key(data) -> str:  # noqa: ANN001
  return sources.from_config(data).content_key()


def _write_parallel(prefix: Path, pairs: list[tuple[str, str]], src='de', tgt='en') -> Path:
  prefix.parent.mkdir(parents=True, exist_ok=True)
  Path(f'{prefix}.{src}').write_text(''.join(s + '\n' for s, _ in pairs), encoding='utf-8')
  Path(f'{prefix}.{tgt}').write_text(''.join(t + '\n' for _, t in pairs), encoding='utf-8')
  return prefix


def _refused(config, match: str) -> None:  # noqa: ANN001
  with pytest.raises(sources.SourceError, match=match):
    _load_pairs(config.data, 'train')


PAIRS = [(f'Satz Nummer {i}.', f'Sentence number {i}.') for i in range(400)]


def test_parallel_files_split_by_source_without_held_out_files(tmp_path: Path) -> None:
  pairs = [*PAIRS[:10], ('', 'only English'), ('nur Deutsch', ''), ('', ''), *PAIRS[10:]]
  prefix = _write_parallel(tmp_path / 'corpus' / 'train', pairs)
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  full = _load_pairs(config.data, 'full')
  assert full == PAIRS  # the one-sided and empty lines skipped
  splits = {n: _load_pairs(config.data, n) for n in ('train', 'validation', 'test')}
  assert all(splits.values()) and sum(map(len, splits.values())) == len(PAIRS)
  for name, some in splits.items():
    assert some == [p for p in PAIRS if heldout.split_of(p[0]) == name]
  assert _load_pairs(config.data, 'full[5:8]') == PAIRS[5:8]
  assert _load_pairs(config.data, 'train[:3]') == splits['train'][:3]
  # A validation file of its own: the test split is still carved out of train.
  val = _write_parallel(tmp_path / 'corpus' / 'dev', PAIRS[:5])
  config.data.validation_prefix = str(val)
  assert _load_pairs(config.data, 'validation') == PAIRS[:5]
  assert _load_pairs(config.data, 'test') == splits['test']
  train = _load_pairs(config.data, 'train')
  assert train == [p for p in PAIRS if heldout.split_of(p[0]) != 'test']


def test_streams_in_chunks_of_any_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  pairs = [*PAIRS[:10], ('nur Deutsch', ''), *PAIRS[10:50]]
  prefix = _write_parallel(tmp_path / 'train', pairs)
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  whole = _load_pairs(config.data, 'train')
  monkeypatch.setattr(textfiles, 'CHUNK', 3)  # the files are read 3 lines at a time
  chunks = list(sources.from_config(config.data).iter_pairs('train', chunk=7))
  assert [len(c) for c in chunks[:-1]] == [7] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= 7
  assert [p for c in chunks for p in c] == whole
  assert _load_pairs(config.data, 'train[4:9]') == whole[4:9]
  assert _load_pairs(config.data, 'train[-2:]') == whole[-2:]
  config.data.max_pairs = 5
  assert input_pipeline.load_pairs(config.data, 'train') == whole[:5]
  tsv = tmp_path / 'pairs.tsv'
  tsv.write_text(''.join(f'{s}\t{t}\n' for s, t in PAIRS[:20]), encoding='utf-8')
  config = _config(tmp_path, tsv_file=str(tsv), src_lang='de', tgt_lang='en')
  assert _load_pairs(config.data, 'full') == PAIRS[:20]


def test_parallel_files_bad_input_is_one_line(tmp_path: Path) -> None:
  prefix = _write_parallel(tmp_path / 'train', PAIRS[:5])
  Path(f'{prefix}.en').write_text('one\ntwo\n', encoding='utf-8')
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  with pytest.raises(sources.SourceError) as e:
    _load_pairs(config.data, 'train')
  assert str(e.value) == (
    f'{prefix}.de has 5 lines but {prefix}.en has 2: parallel files hold one sentence a '
    'line, line for line'
  )
  Path(f'{prefix}.en').write_bytes(b'one\ntwo\n\xe9t\xe9\nfour\nfive\n')
  _refused(config, rf'{prefix}.en: line 3 is not valid UTF-8')
  config.data.tgt_lang = 'fr'
  _refused(config, rf'the target file {prefix}.fr does not exist')
  config.data.tgt_lang = 'deu'
  _refused(config, "both 'de'")
  config.data.tgt_lang = 'en'
  for bad, message in (('dev', 'unknown split'), ('train[a:b]', 'cannot read the split')):
    with pytest.raises(sources.SourceError, match=message):
      _load_pairs(config.data, bad)
  config.data.tsv_file = str(tmp_path / 'x.tsv')
  _refused(config, 'data.train_prefix and data.tsv_file are both')


def test_a_missing_optional_prefix_file_says_the_flag_is_optional(tmp_path: Path) -> None:
  prefix = _write_parallel(tmp_path / 'corpus' / 'train', PAIRS[:50])
  dev = tmp_path / 'corpus' / 'dev'
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  config.data.validation_prefix = str(dev)
  expected = (
    f"the source file {dev}.de does not exist (data.validation_prefix='{dev}'); "
    'data.validation_prefix is optional: without it the validation split is carved from the '
    'training files by source sentence, so drop --config.data.validation_prefix or create '
    f'{dev}.de and {dev}.en'
  )
  for call in (_content_key, lambda data: _load_pairs(data, 'validation')):
    with pytest.raises(sources.SourceError) as e:
      call(config.data)
    assert str(e.value) == expected
  config.data.validation_prefix = ''
  config.data.test_prefix = str(tmp_path / 'corpus' / 'test')
  with pytest.raises(sources.SourceError, match=r'data.test_prefix is optional: .* the test split'):
    _content_key(config.data)
  config.data.test_prefix = ''
  config.data.train_prefix = str(dev)  # the training files are not optional: no such advice
  with pytest.raises(sources.SourceError) as e:
    _content_key(config.data)
  assert str(e.value) == f"the source file {dev}.de does not exist (data.train_prefix='{dev}')"


def test_a_small_configs_slice_is_warned_on_another_corpus(
  tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
  prefix = _write_parallel(tmp_path / 'corpus' / 'train', PAIRS)
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  with caplog.at_level(logging.INFO):
    data = input_pipeline.prepare(config.data, None)  # tiny: train_split='full[:64]'
  assert len(data.train) == 64
  (warning,) = [r for r in caplog.records if 'keeps' in r.getMessage()]
  assert warning.levelno == logging.WARNING and warning.getMessage() == (
    f"data: data.train_split='full[:64]' keeps 64 of the 400 pairs of {prefix}.{{de,en}}, a "
    "slice sized for the book's corpus (configs/tiny.py and configs/d2l.py set one); to train "
    'on all of yours pass --config.data.train_split=train --config.data.val_split=validation'
  )
  # The override the warning and the README give: every pair not held out, no warning.
  config.data.train_split, config.data.val_split = 'train', 'validation'
  caplog.clear()
  with caplog.at_level(logging.INFO):
    data = input_pipeline.prepare(config.data, None)
  held_out = [p for p in PAIRS if heldout.split_of(p[0]) != 'train']
  assert len(data.train) == len(PAIRS) - len(held_out) and 'keeps' not in caplog.text
  assert sorted(data.val.sources) == sorted(
    s for s, _ in PAIRS if heldout.split_of(s) == 'validation'
  )
  # With validation and test files of their own, `train` is every pair of the corpus.
  config.data.validation_prefix = str(_write_parallel(tmp_path / 'corpus' / 'dev', PAIRS[:8]))
  config.data.test_prefix = str(_write_parallel(tmp_path / 'corpus' / 'test', PAIRS[8:16]))
  assert len(input_pipeline.prepare(config.data, None).train) == len(PAIRS)
  # The book's corpus, which the slice was written for: said at info level, not warned.
  book = _config(tmp_path, manual_dir=str(synthetic.write_fra_txt(tmp_path / 'fra', n=80)))
  caplog.clear()
  with caplog.at_level(logging.INFO):
    assert len(input_pipeline.prepare(book.data, None).train) == 64
  (info,) = [r for r in caplog.records if 'keeps' in r.getMessage()]
  fra = tmp_path / 'fra' / 'fra.txt'
  assert info.levelno == logging.INFO and info.getMessage() == (
    f"data: data.train_split='full[:64]' keeps 64 of the 80 pairs of {fra}"
  )


def test_tsv_columns(tmp_path: Path) -> None:
  lines = [f'{i}\t{en}\t{de}' for i, (de, en) in enumerate(PAIRS[:6])]
  lines.insert(2, '99\t\tnur Deutsch')  # empty on one side: skipped
  path = tmp_path / 'pairs.tsv'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  config = _config(tmp_path, tsv_file=str(path), tsv_columns=(2, 1), src_lang='de')
  config.data.tgt_lang = 'en'
  assert _load_pairs(config.data, 'full') == PAIRS[:6]
  config.data.tsv_columns = (1, 3)
  with pytest.raises(
    sources.SourceError, match=r'line 1 has 3 columns, so column 3 of .* does not exist'
  ):
    _load_pairs(config.data, 'full')
  config.data.tsv_columns = (1, 1)
  with pytest.raises(sources.SourceError, match='column 1 for both sides'):
    _load_pairs(config.data, 'full')


class TinyTranslate(tfds.core.GeneratorBasedBuilder):
  """A small TFDS translation dataset (German-English) for the tests."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.Translation(languages=('de', 'en')),
      disable_shuffling=True,  # file order, so that slices can be checked
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):  # noqa: ANN202
    del dl_manager
    return {
      'train': self._generate_examples(PAIRS[:50]),
      'validation': self._generate_examples(PAIRS[50:60]),
      'test': self._generate_examples(PAIRS[60:70]),
    }

  def _generate_examples(self, pairs):  # noqa: ANN001, ANN202
    for i, (de, en) in enumerate(pairs):
      yield i, {'de': de, 'en': en}


def test_tfds_dataset_by_name(tmp_path: Path) -> None:
  config = _config(tmp_path, tfds_name='tiny_translate', src_lang='en', tgt_lang='de')
  _refused(config, r"'tiny_translate' is not prepared .*tfds build")
  TinyTranslate(data_dir=config.data.data_dir).download_and_prepare(file_format='array_record')
  assert _load_pairs(config.data, 'train') == [(en, de) for de, en in PAIRS[:50]]
  assert _load_pairs(config.data, 'test[:3]') == [(en, de) for de, en in PAIRS[60:63]]
  config.data.tgt_lang = 'fr'
  _refused(config, r"has no language 'fr' \(it has \['de', 'en'\]\)")
  config.data.tfds_name = 'no_such_dataset_here'
  _refused(config, "'no_such_dataset_here': no such TFDS dataset")


def test_train_translate_and_evaluate_from_parallel_files(tmp_path: Path) -> None:
  pairs = synthetic.make_pairs(80)
  prefix = _write_parallel(tmp_path / 'corpus' / 'train', [(f, e) for e, f in pairs], 'fr', 'en')
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='fr', tgt_lang='en')
  config.data.tokenizer, config.data.vocab_size = 'auto', 50  # any corpus but the book's:
  workdir = tmp_path / 'run'  # SentencePiece
  result = loop.train_and_evaluate(config, str(workdir))
  assert result['step'] == 8 and np.isfinite(result['val_loss'])  # 64 pairs / 16 x 2 epochs
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['data']['tokenizer'] == 'sentencepiece' and (workdir / 'spm_src.model').exists()
  translator = inference.load(str(workdir))
  assert translator.src_tok.kind == translator.tgt_tok.kind == 'sentencepiece'
  assert translator.src_tok.decode(translator.src_tok.encode('Je vois le chat.')) == (
    'Je vois le chat.'  # cased, detokenised
  )
  (hyp,) = translator.translate(['Je vois le chat.'])
  assert isinstance(hyp, str)
  test = input_pipeline.load_pairs(translator.config.data, 'full[64:80]')
  assert test == [(f, e) for e, f in pairs[64:80]]


def test_carved_splits_of_text_and_tsv_files_are_capped(tmp_path: Path) -> None:
  """Under the cap the carved splits are the uncapped ones (2%); with a share of 10% capped
  at 5 sources, validation and test each hold the 5 sources of their range at the lowest
  positions (with all their pairs), the rest is training: a partition by source, the
  same for the TSV file of the same pairs. The prepared data's keys hold the settings."""
  pairs = PAIRS + PAIRS[:100]  # 100 sources twice
  prefix = _write_parallel(tmp_path / 'corpus' / 'train', pairs)
  config = _config(tmp_path, train_prefix=str(prefix), src_lang='de', tgt_lang='en')
  names = ('train', 'validation', 'test')
  for name in names:
    assert _load_pairs(config.data, name) == [p for p in pairs if heldout.split_of(p[0]) == name]
  config.data.heldout_share, config.data.heldout_max_sources = 0.1, 5
  capped = {name: _load_pairs(config.data, name) for name in names}
  wide = heldout.carve(0.1, 0)
  for name in ('validation', 'test'):
    uncapped = {s for s, _ in PAIRS if wide.split(s) == name}
    kept = sorted(uncapped, key=heldout.split_position)[:5]
    assert capped[name] == [p for p in pairs if p[0] in kept]  # file order, repeats kept
  assert capped['train'] == [p for p in pairs if p not in capped['validation'] + capped['test']]
  assert _load_pairs(config.data, 'validation[2:4]') == capped['validation'][2:4]
  config.data.heldout_max_sources = 400  # a pass over the files (500 lines), no cap binds
  for name in names:
    assert _load_pairs(config.data, name) == [p for p in pairs if wide.split(p[0]) == name]
  config.data.heldout_max_sources = 5
  tsv = tmp_path / 'pairs.tsv'
  tsv.write_text(''.join(f'{s}\t{t}\n' for s, t in pairs), encoding='utf-8')
  tsv_config = _config(tmp_path, tsv_file=str(tsv), src_lang='de', tgt_lang='en')
  tsv_config.data.heldout_share, tsv_config.data.heldout_max_sources = 0.1, 5
  assert {name: _load_pairs(tsv_config.data, name) for name in names} == capped
  keys = set()
  for settings in ((0.02, 5000), (0.1, 5), (0.1, 6)):
    config.data.heldout_share, config.data.heldout_max_sources = settings
    store = prepared.Store(input_pipeline.settings(config.data), 'source')
    keys.add((store.tokenizer_dir(), store.encoded_dir('tokenizers')))
  assert len(keys) == 3
  config.data.validation_prefix = config.data.test_prefix = str(prefix)  # nothing carved
  assert sources.from_config(config.data).heldout_settings() == {}
  config.data.validation_prefix, config.data.heldout_share = '', 0.6
  with pytest.raises(errors.UserError, match='data.heldout_share must be above 0 and at most 0.5'):
    _load_pairs(config.data, 'validation')
