"""Where the pairs come from: exactly one data source per run (README.md, "Architecture").

- `data.manual_dir` (or nothing: the book's download): a manythings/Tatoeba file of any
  language pair (`tatoeba.py`, a TFDS builder);
- `data.train_prefix` (+ `data.validation_prefix`, `data.test_prefix`): parallel text
  files `PREFIX.<src_lang>` and `PREFIX.<tgt_lang>`, one sentence a line;
- `data.tsv_file` with `data.tsv_columns` (source, target; 0-based);
- `data.tfds_name`: a TFDS translation dataset prepared in `data.data_dir` (array_record),
  read by random access without TensorFlow; its features are named by language.

Splits are named as in TFDS, with slices (`train`, `full[:512]`, `validation[10:20]`).
For text and TSV files, `full` is every pair of the training files in order; without
validation/test files, `train`/`validation`/`test` are the deterministic partition by
source sentence (`heldout.carve`: 2% of the sources each, up to 5,000 each;
`data.heldout_share`, `data.heldout_max_sources`). Bad input is a one-line error naming the
file (and line), or a counted skip (a line empty on one side).

`iter_pairs` gives a split in chunks: text and TSV files are read line by line (a chunk
at a time), TFDS datasets by random access a chunk at a time, so the preparation of a
corpus of any size (`prepared.py`) holds one chunk of its text, never the whole of it.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from absl import logging

from seq2seq_jax.data import heldout as carving
from seq2seq_jax.data import manythings, textfiles
from seq2seq_jax.data.textfiles import (
  SourceError,
  _existing,
  _parallel_files,
  count_lines,
  stream_parallel,
  stream_tsv,
)

KINDS = ('manual_dir', 'train_prefix', 'tsv_file', 'tfds_name')
_SPLIT = re.compile(r'^(?P<name>[A-Za-z_][\w-]*)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$')


def kind(data_cfg) -> str:  # noqa: ANN001
  """Which source a data config names; a one-line error when it names several."""
  given = [k for k in KINDS if data_cfg.get(k, '')]
  if len(given) > 1:
    fields = ' and '.join(f'data.{k}' for k in given)
    raise SourceError(f'{fields} are both set: give exactly one data source')
  if not given and (data_cfg.get('validation_prefix') or data_cfg.get('test_prefix')):
    raise SourceError('data.validation_prefix / data.test_prefix need data.train_prefix')
  return given[0] if given else 'manual_dir'


def prepare(data_cfg) -> None:  # noqa: ANN001
  """Prepares the source where that is a step of its own: a Tatoeba file becomes TFDS's
  array_record files (once per file; `tatoeba.prepare` logs the time), so that what comes
  after it (training the tokenizers) is timed without it. Other sources: nothing."""
  if kind(data_cfg) == 'manual_dir':
    from seq2seq_jax.data import tatoeba

    manual_dir = os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else None
    src_lang, tgt_lang = data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')
    data_dir = os.path.expanduser(data_cfg.data_dir)
    tatoeba.prepare(data_dir, manual_dir, src_lang, tgt_lang, heldout(data_cfg))


def iter_pairs(data_cfg, split: str, chunk: int = 0) -> Iterator[list[tuple[str, str]]]:  # noqa: ANN001
  """(source, target) pairs of a split of the config's source, in file order, in chunks of
  at most `chunk`. Text and TSV files are read line by line, so a pass over a corpus of any
  size holds one chunk of its text."""
  chunk = chunk or textfiles.CHUNK
  src_lang = data_cfg.get('src_lang', 'en')
  tgt_lang = data_cfg.get('tgt_lang', 'fr')
  data_dir = os.path.expanduser(data_cfg.data_dir)
  source = kind(data_cfg)
  if source == 'manual_dir':
    from seq2seq_jax.data import tatoeba  # TFDS is imported here only

    manual_dir = os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else None
    pairs = tatoeba.load_pairs(
      split,
      data_dir=data_dir,
      manual_dir=manual_dir,
      src_lang=src_lang,
      tgt_lang=tgt_lang,
      heldout=heldout(data_cfg),
    )
    yield from _chunked(iter(pairs), chunk)
    return
  if source == 'tfds_name':
    yield from iter_tfds(data_cfg.tfds_name, split, data_dir, src_lang, tgt_lang, chunk)
    return
  if language_key(src_lang) == language_key(tgt_lang):
    raise SourceError(f'data.src_lang and data.tgt_lang are both {src_lang!r}')
  name, window = parse_split(split)
  if source == 'tsv_file':
    files = {'train': data_cfg.tsv_file}
    columns = tuple(data_cfg.get('tsv_columns', (0, 1)))
    read = lambda path: stream_tsv(path, columns)  # noqa: E731
  else:
    files = {
      'train': data_cfg.train_prefix,
      'validation': data_cfg.get('validation_prefix', ''),
      'test': data_cfg.get('test_prefix', ''),
    }
    read = lambda prefix, field='train_prefix': stream_parallel(  # noqa: E731
      prefix, src_lang, tgt_lang, field
    )
  if name not in ('full', 'train', 'validation', 'test'):
    raise SourceError(f'unknown split {split!r}; expected full, train, validation or test')
  if name in ('validation', 'test') and files.get(name):
    pairs = read(files[name], f'{name}_prefix')
  else:
    pairs = read(files['train'])
    carved = {s for s in ('validation', 'test') if not files.get(s)}  # held out of train
    if name != 'full' and carved:
      found, labels = held_out(data_cfg)  # after `read`: the files are there
      wanted = (lambda s: s not in carved) if name == 'train' else (lambda s: s == name)
      if labels is None:
        pairs = (p for p in pairs if wanted(found.split(p[0])))
      else:  # the split of each pair, from the pass that carved them: no hashing again
        pairs = (p for p, code in zip(pairs, labels, strict=True) if wanted(_SPLITS[code]))
  yield from _chunked(_window(pairs, window), chunk)


def heldout(data_cfg) -> tuple[float, int]:  # noqa: ANN001
  """`data.heldout_share` and `data.heldout_max_sources` (`heldout.carve`'s defaults for a
  config without them: 2%, up to 5,000 sources)."""
  share = data_cfg.get('heldout_share', carving.SHARE)
  return float(share), int(data_cfg.get('heldout_max_sources', carving.MAX_SOURCES))


def heldout_settings(data_cfg) -> dict[str, Any]:  # noqa: ANN001
  """The held-out settings, for the prepared data's keys, when the source carves a split
  out of its training pairs (a Tatoeba file, a TSV file, text files without validation or
  test files); {} when it carves none."""
  source = kind(data_cfg)
  if source == 'tfds_name':
    return {}
  if source == 'train_prefix' and all(
    data_cfg.get(f'{s}_prefix', '') for s in ('validation', 'test')
  ):
    return {}
  share, max_sources = heldout(data_cfg)
  return {'heldout_share': share, 'heldout_max_sources': max_sources}


_SPLITS = ('train', 'validation', 'test')  # the codes of `held_out`'s labels
_HELD_OUT: dict[tuple, tuple[Any, bytearray | None]] = {}  # by files (sizes, times), settings


def held_out(data_cfg) -> tuple[Any, bytearray | None]:  # noqa: ANN001
  """The held-out splits of a text or TSV source: a `heldout.Carving` and, when it took a
  pass over the training files, the split of every pair (an index into `_SPLITS`, a byte
  a pair), so that later passes need not hash the sources again. The pass (`heldout.carve`
  over the sources of every training pair) is needed when the cap can bind (the training
  files have more lines than `data.heldout_max_sources`); without it the carving is the
  uncapped one. Once per process for the same files and settings."""
  share, max_sources = heldout(data_cfg)
  src_lang, tgt_lang = data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')
  if kind(data_cfg) == 'tsv_file':
    paths = [Path(data_cfg.tsv_file).expanduser()]
    how = tuple(data_cfg.get('tsv_columns', (0, 1)))
  else:
    paths = [Path(f'{data_cfg.train_prefix}.{lang}').expanduser() for lang in (src_lang, tgt_lang)]
    how = (src_lang, tgt_lang)
  stats = tuple((str(p.absolute()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
  key = (stats, how, share, max_sources)
  if key not in _HELD_OUT:
    uncapped = carving.carve(share, 0)  # (checks the settings)
    if not max_sources or count_lines(paths[0]) <= max_sources:  # no split can exceed it
      _HELD_OUT[key] = (uncapped, None)
      return _HELD_OUT[key]
    t0 = time.perf_counter()
    labels = bytearray()  # 0: train, for every pair until its range says otherwise
    inside: list[tuple[int, int]] = []  # (pair, position) of the pairs in a held-out range

    def positions() -> Iterator[int]:
      for block in iter_pairs(data_cfg, 'full'):
        start = len(labels)
        labels.extend(bytes(len(block)))
        for i, (source, _) in enumerate(block, start):
          position = carving.split_position(source)
          if position < 2 * uncapped.width:
            inside.append((i, position))
            yield position

    found = carving.carve(share, max_sources, positions())
    for i, position in inside:
      labels[i] = _SPLITS.index(found.split_at(position))
    _HELD_OUT[key] = (found, labels)
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
  return _HELD_OUT[key]


def _window(pairs: Iterator[tuple[str, str]], window: slice) -> Iterator[tuple[str, str]]:
  """`pairs[window]`, streamed where the bounds allow (non-negative)."""
  if window == slice(None):
    return pairs
  if (window.start or 0) < 0 or (window.stop or 0) < 0:
    return iter(list(pairs)[window])
  return itertools.islice(pairs, window.start, window.stop)


def _chunked(pairs: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
  while block := list(itertools.islice(pairs, size)):
    yield block


def fingerprint(data_cfg) -> str:  # noqa: ANN001
  """What identifies the source's contents: the sha1 of its files' text (the Tatoeba
  builder's config name holds it), or a TFDS dataset's name, version and folder."""
  source = kind(data_cfg)
  src_lang, tgt_lang = data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')
  if source == 'manual_dir':
    from seq2seq_jax.data import tatoeba

    manual_dir = os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else None
    found = manythings.resolve(manual_dir, src_lang, tgt_lang)
    return f'tatoeba:{tatoeba.builder_config(found, heldout(data_cfg)).name}'
  if source == 'tfds_name':
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_cfg.data_dir)
    try:
      version = tfds.builder(data_cfg.tfds_name, data_dir=data_dir).version
    except Exception:  # noqa: BLE001 (iter_pairs reports an unknown name in one line)
      version = '?'
    return f'tfds:{data_cfg.tfds_name}:{version}:{Path(data_dir).absolute()}'
  from seq2seq_jax.data import prepared

  if source == 'tsv_file':
    path = _existing(data_cfg.tsv_file, 'data.tsv_file')
    return f'tsv:{tuple(data_cfg.tsv_columns)}:{prepared.file_digest(path)}'
  parts = []
  for field in ('train_prefix', 'validation_prefix', 'test_prefix'):
    prefix = data_cfg.get(field, '')
    if prefix:
      paths = _parallel_files(prefix, src_lang, tgt_lang, field)
      parts.append(f'{field}={prepared.file_digest(*paths)}')
  return 'text:' + ','.join(parts)


def parse_split(split: str) -> tuple[str, slice]:
  """'train[10:20]' -> ('train', slice(10, 20)); a one-line error for other forms."""
  match = _SPLIT.match(split.strip())
  if not match:
    raise SourceError(f'cannot read the split {split!r}: expected NAME or NAME[START:STOP]')
  start, stop = match['start'], match['stop']
  return match['name'], slice(int(start) if start else None, int(stop) if stop else None)


def book_corpus(data_cfg) -> bool:  # noqa: ANN001
  """Whether the source is the book's corpus: a Tatoeba file of English and French."""
  langs = {
    language_key(data_cfg.get('src_lang', 'en')),
    language_key(data_cfg.get('tgt_lang', 'fr')),
  }
  return kind(data_cfg) == 'manual_dir' and langs == {'en', 'fr'}


def describe(data_cfg) -> str:  # noqa: ANN001
  """The source in a few words, for the log: its file(s) or the TFDS dataset's name."""
  source = kind(data_cfg)
  if source == 'manual_dir':
    manual_dir = os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else None
    path = manythings.resolve(
      manual_dir, data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')
    ).path
    return str(path) if path else f"the book's {manythings.URL.rsplit('/', 1)[-1]}"
  if source == 'tfds_name':
    return f'the TFDS dataset {data_cfg.tfds_name!r}'
  if source == 'tsv_file':
    return str(data_cfg.tsv_file)
  src_lang, tgt_lang = data_cfg.get('src_lang', 'en'), data_cfg.get('tgt_lang', 'fr')
  return f'{data_cfg.train_prefix}.{{{src_lang},{tgt_lang}}}'


def count_pairs(data_cfg, split: str) -> int:  # noqa: ANN001
  """How many pairs a split of the source holds: from the index of a Tatoeba or TFDS split,
  by reading the files (streamed) for text and TSV files."""
  source = kind(data_cfg)
  data_dir = os.path.expanduser(data_cfg.data_dir)
  if source == 'manual_dir':
    from seq2seq_jax.data import tatoeba

    manual_dir = os.path.expanduser(data_cfg.manual_dir) if data_cfg.manual_dir else None
    langs = {'src_lang': data_cfg.get('src_lang', 'en'), 'tgt_lang': data_cfg.get('tgt_lang', 'fr')}
    return len(
      tatoeba.load(
        split, data_dir=data_dir, manual_dir=manual_dir, heldout=heldout(data_cfg), **langs
      )
    )
  if source == 'tfds_name':
    import tensorflow_datasets as tfds

    return len(tfds.builder(data_cfg.tfds_name, data_dir=data_dir).as_data_source(split=split))
  return sum(len(chunk) for chunk in iter_pairs(data_cfg, split))


def report_slice(data_cfg) -> None:  # noqa: ANN001
  """Says in the log what a sliced `data.train_split` (`full[:64]`) keeps of the source:
  at info level for the book's corpus, which the small configs' slices were written for;
  as a warning for any other corpus, with the flags that train on all of it (README,
  "Configs"). A split without a slice logs nothing."""
  split = data_cfg.train_split
  name, window = parse_split(split)
  if window == slice(None):
    return
  kept, total = count_pairs(data_cfg, split), count_pairs(data_cfg, name)
  of = f'{total:,} pairs of {describe(data_cfg)}' + ('' if name == 'full' else f' ({name!r})')
  if kept >= total:
    logging.info('data: data.train_split=%r keeps all the %s', split, of)
  elif book_corpus(data_cfg):
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


def language_key(code: str) -> str:
  """Language codes compared as the Tatoeba builder does ('fra' == 'fr')."""
  return manythings.language(code)


def iter_tfds(
  name: str, split: str, data_dir: str, src_lang: str, tgt_lang: str, chunk: int = 0
) -> Iterator[list[tuple[str, str]]]:
  """Pairs of a prepared TFDS translation dataset (features named by language), read by
  random access (`__getitems__`) a chunk at a time."""
  chunk = chunk or textfiles.CHUNK
  import tensorflow_datasets as tfds

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 (TFDS raises several kinds for an unknown name)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise SourceError(f'data.tfds_name {name!r}: no such TFDS dataset ({first})') from None
  if not builder.is_prepared():
    raise SourceError(
      f'the TFDS dataset {name!r} is not prepared in {data_dir}: run '
      f'`tfds build {name} --data_dir={data_dir} --file_format=array_record` (or '
      "builder.download_and_prepare(file_format='array_record')) first"
    )
  file_format = getattr(builder.info, 'file_format', None)
  file_format = str(getattr(file_format, 'value', file_format) or '').lower()
  if file_format and file_format != 'array_record':
    raise SourceError(
      f'the TFDS dataset {name!r} in {data_dir} is prepared as {file_format}; random access '
      'needs array_record: rebuild it with --file_format=array_record'
    )
  features: Any = builder.info.features
  keys = list(features.keys()) if hasattr(features, 'keys') else []
  for lang in (src_lang, tgt_lang):
    if lang not in keys:
      raise SourceError(f'the TFDS dataset {name!r} has no language {lang!r} (it has {keys})')
  base = parse_split(split)[0]
  if base not in builder.info.splits:
    raise SourceError(
      f'the TFDS dataset {name!r} has no split {base!r} (it has {sorted(builder.info.splits)})'
    )
  source = builder.as_data_source(split=split)

  def text(value: Any) -> str:
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)

  for start in range(0, len(source), chunk):
    items = source.__getitems__(range(start, min(start + chunk, len(source))))
    yield [(text(ex[src_lang]), text(ex[tgt_lang])) for ex in items]
