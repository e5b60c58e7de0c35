"""Prepared data, made once and reused: the tokenizers and every split's token ids
(`make_data`, which `input_pipeline.prepare` calls with the `DataSettings` it read from
the config).

Under `<data.data_dir>/seq2seq_jax/`:
- `tokenizers/<key>/`: the two tokenizer files, for a key made from the source's contents
  (`Source.content_key`), the direction, the splits (with the share and cap of the
  held-out splits carved from the training pairs) and the tokenizer settings;
- `encoded/<key>/`: `train_*.npy` and `val_*.npy` (padded ids and lengths, uint16 when the
  vocabularies allow; read back memory-mapped), `val_text.json` (the validation text, for
  BLEU) and `meta.json`, for a key made from the same plus the tokenizer files' bytes and
  the length settings.

Each is written into a temporary folder renamed into place when complete
(`splitfiles.write_atomically`), so a preparation killed halfway leaves nothing that is
read later (its leftover is removed by the next preparation). A source file that changed
has another content key, hence another folder: it is prepared anew beside the old one.
Deleting `<data_dir>/seq2seq_jax` at any time only costs a new preparation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from seq2seq_jax import errors
from seq2seq_jax.data import encoding, sources, splitfiles, textfiles, tokenizers

ROOT = 'seq2seq_jax'
VERSION = 2  # bump when the layout or the encoding changes
Pairs = list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """What a preparation reads from the data config, read once (`input_pipeline.settings`)."""

  source: sources.Source
  train_split: str
  val_split: str
  max_pairs: int  # > 0: only the first max_pairs pairs of each split
  tokenizer: tokenizers.TokenizerSettings
  lengths: encoding.Lengths
  data_dir: str  # the prepared folders are under <data_dir>/seq2seq_jax

  def pairs(self, split: str) -> Iterator[Pairs]:
    """The pairs of a split in chunks, the first `max_pairs` when that is set."""
    return textfiles.capped(self.source.iter_pairs(split), self.max_pairs)


def digest(parts: Any) -> str:  # noqa: ANN401
  """16 hex digits of the sha1 of `parts` as sorted JSON."""
  return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenizer_key(settings: DataSettings) -> dict[str, Any]:
  """What the tokenizers depend on besides the source's contents."""
  tok, source = settings.tokenizer, settings.source
  key: dict[str, Any] = {
    'version': VERSION,
    'kind': tok.kind,
    'langs': [source.src_lang, source.tgt_lang],
    'train_split': settings.train_split,
    'max_pairs': settings.max_pairs,
    **source.heldout_settings(),  # which pairs the carved splits leave to train
  }
  if tok.kind == 'word':
    key |= {'min_freq': tok.min_freq, 'num_steps': tok.num_steps}
  else:
    key |= {'vocab_size': tok.vocab_size, 'sentences': tok.sample}
  if tok.with_validation:
    key['with_validation'] = settings.val_split
  return key


def encoding_key(settings: DataSettings, tokenizer_files: str) -> dict[str, Any]:
  """What the encoded splits depend on besides the source's contents."""
  source, lengths = settings.source, settings.lengths
  return {
    'version': VERSION,
    'langs': [source.src_lang, source.tgt_lang],
    'splits': [settings.train_split, settings.val_split],
    **source.heldout_settings(),
    'max_pairs': settings.max_pairs,
    'tokenizers': tokenizer_files,
    'num_steps': lengths.num_steps,
    'max_len': lengths.max_len,
    'length_quantile': lengths.quantile,
  }


class Store:
  """The prepared folders of one source (by its `content_key`) and settings."""

  def __init__(self, settings: DataSettings, content_key: str):
    self.root = Path(settings.data_dir) / ROOT
    self.settings = settings
    self.content_key = content_key

  def tokenizer_dir(self) -> Path:
    key = digest([self.content_key, tokenizer_key(self.settings)])
    return self.root / 'tokenizers' / key

  def encoded_dir(self, tokenizer_files: str) -> Path:
    key = digest([self.content_key, encoding_key(self.settings, tokenizer_files)])
    return self.root / 'encoded' / key


@dataclasses.dataclass
class Data:
  """What training needs from the pipeline."""

  src_tok: tokenizers.Tokenizer
  tgt_tok: tokenizers.Tokenizer
  train: encoding.EncodedPairs
  val: encoding.EncodedPairs
  max_len: int  # the longest sequence (either side, `<eos>` included) the model sees
  tgt_lang: str

  @property
  def score_form(self) -> tokenizers.Form:
    """How translations are scored (`tokenizers.form_for`)."""
    return tokenizers.form_for(self.tgt_tok.kind, self.tgt_lang)


def sample_pairs(
  chunks: Iterable[list[tuple[str, str]]], k: int, seed: int = 0
) -> list[tuple[str, str]]:
  """A uniform random sample of `k` pairs of a stream (all of them when it holds fewer),
  in stream order, holding at most `k` at a time (reservoir sampling, seeded: the same
  on every host and every run)."""
  rng = np.random.default_rng(seed)
  kept: list[tuple[int, tuple[str, str]]] = []
  seen = 0
  for chunk in chunks:
    fill = min(len(chunk), max(k - seen, 0))
    kept += [(seen + i, chunk[i]) for i in range(fill)]
    if fill < len(chunk):  # pair i (0-based, i >= k) replaces slot j when j < k
      index = np.arange(seen + fill, seen + len(chunk))
      slot = rng.integers(0, index + 1)
      for i in np.flatnonzero(slot < k):
        kept[slot[i]] = (int(index[i]), chunk[fill + i])
    seen += len(chunk)
  return [pair for _, pair in sorted(kept, key=lambda item: item[0])]


def _train_tokenizers(
  settings: DataSettings, val_pairs: Callable[[], Pairs]
) -> tuple[tokenizers.Tokenizer, tokenizers.Tokenizer]:
  """SentencePiece on a sample of `tokenizer.sample` training pairs (streamed); word
  tokens on all of them."""
  tok = settings.tokenizer
  chunks = settings.pairs(settings.train_split)
  if tok.kind == 'sentencepiece' and tok.sample > 0:
    pairs = sample_pairs(chunks, tok.sample)
  else:
    pairs = [pair for chunk in chunks for pair in chunk]
  if not pairs:
    raise errors.DataError(f'the training split {settings.train_split!r} is empty')
  if tok.with_validation:
    pairs += val_pairs()
  return tokenizers.train(
    tok.kind,
    pairs,
    min_freq=tok.min_freq,
    num_steps=tok.num_steps or None,
    vocab_size=tok.vocab_size,
  )


def tokenizer_dir(
  settings: DataSettings, store: Store, workdir: str | None, val_pairs: Callable[[], Pairs]
) -> Path:
  """Where the tokenizers are: the workdir's (a resumed run) or the prepared ones,
  trained now when they were not before (and copied into `workdir`)."""
  kind = settings.tokenizer.kind
  if workdir and all(p.exists() for p in tokenizers.paths(workdir, kind)):
    return Path(workdir)
  directory = store.tokenizer_dir()
  if not splitfiles.complete(directory):

    def write_tokenizers(tmp: Path) -> dict:
      trained = _train_tokenizers(settings, val_pairs)
      for tok, path in zip(trained, tokenizers.paths(tmp, kind), strict=True):
        tok.save(path)
      return {'settings': tokenizer_key(settings), 'source': store.content_key}

    settings.source.build()  # TFDS's preparation, timed and logged on its own
    t0 = time.perf_counter()
    logging.info('data: training the %s tokenizers (once for this source)', kind)
    splitfiles.write_atomically(directory, write_tokenizers)
    logging.info('data: trained the tokenizers in %.1f s', time.perf_counter() - t0)
  if workdir:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    for path in tokenizers.paths(directory, kind):
      shutil.copyfile(path, Path(workdir) / path.name)
  return directory


def encoded_dir(
  settings: DataSettings,
  store: Store,
  toks: tuple[tokenizers.Tokenizer, tokenizers.Tokenizer],
  tokenizer_files: str,
  val_pairs: Callable[[], Pairs],
) -> Path:
  """Where the encoded training and validation splits are, encoded now when they were
  not before (the training split streamed, padded a chunk of rows at a time)."""
  directory = store.encoded_dir(tokenizer_files)
  if splitfiles.complete(directory):
    logging.info('data: reusing the prepared splits in %s', directory)
    return directory

  def write_splits(tmp: Path) -> dict:
    dtype = encoding.id_dtype(toks[0].vocab_size, toks[1].vocab_size)
    src, tgt = encoding.encode_stream(settings.pairs(settings.train_split), *toks, dtype)
    if not len(src[1]):
      raise errors.DataError(f'the training split {settings.train_split!r} is empty')
    lengths = settings.lengths
    max_len = lengths.max_len_of(np.maximum(src[1], tgt[1]))
    splitfiles.save_ragged_split(
      tmp, 'train', src, tgt, num_steps=lengths.num_steps, max_len=max_len
    )
    del src, tgt
    val = encoding.encode_pairs(val_pairs(), *toks, num_steps=lengths.num_steps, max_len=max_len)
    splitfiles.save_split(tmp, 'val', val, with_text=True)
    key = encoding_key(settings, tokenizer_files)
    return {'max_len': max_len, 'settings': key, 'source': store.content_key}

  t0 = time.perf_counter()
  logging.info('data: encoding the training and validation splits (once for these settings)')
  splitfiles.write_atomically(directory, write_splits)
  logging.info('data: prepared the splits in %s in %.1f s', directory, time.perf_counter() - t0)
  return directory


def make_data(settings: DataSettings, workdir: str | None) -> Data:
  """The tokenizers and the encoded training and validation splits, from the prepared
  files (this module) when this source and these settings were prepared before, else
  prepared now (and saved there). Tokenizers saved in `workdir` (a resumed run) win."""
  kind = settings.tokenizer.kind
  store = Store(settings, settings.source.content_key())
  val_pairs = functools.cache(
    lambda: [pair for chunk in settings.pairs(settings.val_split) for pair in chunk]
  )
  tok_dir = tokenizer_dir(settings, store, workdir, val_pairs)
  toks = tokenizers.load(tok_dir, kind)
  tok_files = textfiles.file_digest(*tokenizers.paths(tok_dir, kind))
  enc_dir = encoded_dir(settings, store, toks, tok_files, val_pairs)
  val_pairs.cache_clear()  # no corpus text is kept beyond this point
  splitfiles.release_memory()
  meta = json.loads((enc_dir / 'meta.json').read_text())
  data = Data(
    *toks,
    splitfiles.load_split(enc_dir, 'train'),
    splitfiles.load_split(enc_dir, 'val'),
    int(meta['max_len']),
    settings.source.tgt_lang,
  )
  sources.report_slice(settings.source, settings.train_split)  # a small config's slice
  logging.info(
    'data: %d training pairs, %d validation pairs, max length %d, vocabularies %d (%s) / %d (%s)',
    len(data.train),
    len(data.val),
    data.max_len,
    data.src_tok.vocab_size,
    settings.source.src_lang,
    data.tgt_tok.vocab_size,
    data.tgt_lang,
  )
  return data
