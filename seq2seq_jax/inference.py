"""The one translation path: a `Translator` made from parts (model, parameters,
tokenizers, limits), used by `translate`, `evaluate`, evaluation during training and the
API; and `load`, which makes one from a trained workdir (or several: an ensemble)."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from seq2seq_jax import build, errors, models, runtime
from seq2seq_jax.data import input_pipeline, text, tokenizers
from seq2seq_jax.decoding import beam_search, ensemble, greedy_search
from seq2seq_jax.train import checkpointing, population

Array = jax.Array

MAX_LINE_WARNINGS = 5  # long input lines named one by one; then only their count


@dataclasses.dataclass
class Translator:
  """Translates raw sentences with a model (or an ensemble) and its parameters, batched and
  compiled: greedy with `beam_size=1`, beam search with length normalisation `alpha`
  otherwise, or sampling (`sample`, with `temperature` and `top_k`; each sentence's key is
  the seed folded with its place in the input, so samples are reproducible and independent
  of batching). Outputs stop at `max_output_len` tokens (0: `max_len`, the longest source
  the model reads) and, with `max_len_ratio` > 0, at ceil(ratio * source tokens).

  Made from parts (`Translator(model, params, src_tok, tgt_tok, max_len)`) or from a
  workdir (`load`); `config` and `step` describe a workdir's model (None and 0 otherwise).
  Sentences go in batches of at most `batch_size`, padded to a power of two rows (at
  least 8): few compiled shapes, little padding. A blank sentence gives ''."""

  model: models.EncoderDecoder | ensemble.Ensemble
  params: Any
  src_tok: text.WordTokenizer
  tgt_tok: text.WordTokenizer
  max_len: int
  config: ml_collections.ConfigDict | None = None
  step: int = 0
  batch_size: int = 256
  beam_size: int = 1
  alpha: float = 0.75
  max_output_len: int = 0
  max_len_ratio: float = 0.0
  sample: bool = False
  temperature: float = 1.0
  top_k: int = 0
  seed: int = 0
  workdirs: tuple[str, ...] = ()  # an ensemble's members

  def __post_init__(self) -> None:
    if self.batch_size < 1:
      raise errors.ConfigError(f'the batch size must be at least 1, got {self.batch_size}')
    if self.beam_size < 1:
      raise errors.ConfigError(f'the beam size must be at least 1, got {self.beam_size}')
    if self.max_output_len < 0 or self.max_len_ratio < 0:
      raise errors.ConfigError('the output length limits must not be negative')
    if self.sample and self.beam_size > 1:
      raise errors.ConfigError('sampling draws one translation a sentence: use --beam_size=1')
    sampling = None
    if self.sample:
      try:
        sampling = greedy_search.Sampling(self.temperature, self.top_k)
      except ValueError as e:
        raise errors.ConfigError(str(e)) from None
    self._decode = _search(
      self.model, self.output_len, self.beam_size, self.alpha, self.max_len_ratio, sampling
    )

  def with_params(self, params: Any, **changes: Any) -> Translator:
    """This translator with other parameters of the same model (and other `changes` of
    its fields); the compiled searches are shared."""
    return dataclasses.replace(self, params=params, **changes)

  @property
  def output_len(self) -> int:
    """The longest output, in tokens (`<eos>` included)."""
    return self.max_output_len or self.max_len

  @property
  def ensemble_size(self) -> int:
    return self.model.size if isinstance(self.model, ensemble.Ensemble) else 1

  @property
  def has_attention(self) -> bool:
    """Whether the model sows attention weights (the Bahdanau decoder, the Transformer;
    an ensemble: no, plots show one model)."""
    return bool(getattr(self.model, 'has_attention', False))

  def source_tokens(self, sentence: str) -> list[str]:
    """The source tokens the model sees, `<eos>` included (for plots: unknown words as
    written with the word tokenizer, pieces with SentencePiece)."""
    return runtime.token_strings(self.src_tok, self.encode([sentence], warn=False)[0], sentence)

  def output_tokens(self, ids: np.ndarray) -> list[str]:
    """Output ids -> one token per decoding step: up to and including `<eos>`, or all
    `max_len` of them when the model never produced `<eos>`."""
    return runtime.token_strings(self.tgt_tok, runtime.until_eos(ids))

  def encode(self, sentences: Sequence[str], warn: bool = True) -> list[list[int]]:
    """Source ids, trimmed to the model's maximum length (with a warning naming the first
    few such lines, then their count)."""
    ids, cut = [], 0
    for i, s in enumerate(sentences):
      s_ids = self.src_tok.encode(s)
      if len(s_ids) > self.max_len:
        cut += 1
        if warn and cut <= MAX_LINE_WARNINGS:
          print(
            f'warning: line {i + 1} has {len(s_ids)} tokens; the model reads at most '
            f'{self.max_len}, so only its first {self.max_len} are translated',
            file=sys.stderr,
          )
        s_ids = s_ids[: self.max_len]
      ids.append(s_ids)
    if warn and cut > MAX_LINE_WARNINGS:
      print(
        f'warning: {cut} of {len(sentences)} lines in all had more than {self.max_len} '
        'tokens and were cut',
        file=sys.stderr,
      )
    return ids

  def _batches(self, src_ids: list[list[int]]) -> Iterator[tuple[int, int, Array, Array]]:
    """(start, count, src, src_len) for each batch of `src_ids`: at most `batch_size`
    rows, padded to a power of two (at least 8)."""
    for start in range(0, len(src_ids), self.batch_size):
      chunk = src_ids[start : start + self.batch_size]
      size = min(self.batch_size, _round_up(len(chunk)))
      src, src_len = input_pipeline.make_source_batch(
        chunk + [[0]] * (size - len(chunk)), self.max_len
      )
      yield start, len(chunk), src, src_len

  def translate_ids(self, src_ids: list[list[int]], positions: Sequence[int] = ()) -> list:
    """Output ids [output_len] for each source; `positions` (the sentences' places in the
    input, default 0, 1, ...) choose the sampling keys."""
    positions = list(positions) or list(range(len(src_ids)))
    outputs = []
    for start, count, src, src_len in self._batches(src_ids):
      if self.sample:
        rows = positions[start : start + count]
        rows += [0] * (src.shape[0] - count)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
          jax.random.key(self.seed), np.asarray(rows, np.uint32)
        )
        out = np.asarray(self._decode(self.params, src, src_len, keys))
      else:
        out = np.asarray(self._decode(self.params, src, src_len))
      outputs.extend(out[:count])
    return outputs

  def nbest(self, sentences: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The k best translations of each sentence with their scores (`log P / len**alpha`),
    best first, by beam search with a beam of max(k, beam_size); [] for a blank line."""
    if k < 1:
      raise errors.ConfigError(f'--nbest must be at least 1, got {k}')
    if self.sample:
      raise errors.ConfigError('--nbest lists come from beam search, not from sampling')
    search = _nbest_search(
      self.model, self.output_len, max(k, self.beam_size), self.alpha, self.max_len_ratio
    )
    keep = nonblank(sentences)
    src_ids = self.encode(sentences)
    result: list[list[tuple[str, float]]] = [[] for _ in sentences]
    for start, count, src, src_len in self._batches([src_ids[i] for i in keep]):
      seqs, scores = (np.asarray(x) for x in search(self.params, src, src_len))
      for j, i in enumerate(keep[start : start + count]):
        result[i] = [
          (self.tgt_tok.decode(seqs[j, r]), float(scores[j, r]))
          for r in range(k)
          if np.isfinite(scores[j, r]) and scores[j, r] > -1e8  # a slot no hypothesis filled
        ]
    return result

  def translate(self, sentences: Sequence[str], warn: bool = True) -> list[str]:
    """Translations, one per sentence; a blank sentence gives ''. `warn`: name the lines
    longer than the model reads (on standard error)."""
    keep = nonblank(sentences)
    src_ids = self.encode(sentences, warn)  # warnings name the sentence's place in the input
    outs = self.translate_ids([src_ids[i] for i in keep], keep)
    return scatter(len(sentences), keep, [self.tgt_tok.decode(o) for o in outs], '')


def nonblank(sentences: Sequence[str]) -> list[int]:
  """The places of the sentences to translate: a blank line (`text.is_blank`) is skipped,
  and its translation is empty."""
  return [i for i, s in enumerate(sentences) if not text.is_blank(s)]


def scatter(n: int, places: Sequence[int], values: Sequence[Any], empty: Any) -> list:
  """`n` entries: `values` at `places` (from `nonblank`), `empty` elsewhere."""
  out = [empty] * n
  for i, value in zip(places, values, strict=True):
    out[i] = value
  return out


@functools.lru_cache(maxsize=32)
def _search(
  model: Any,
  output_len: int,
  beam_size: int,
  alpha: float,
  max_len_ratio: float,
  sampling: greedy_search.Sampling | None,
) -> Callable:
  """The compiled search (one per model and settings, shared by translators)."""
  kw = {'max_len_ratio': max_len_ratio}
  if sampling is not None:
    return greedy_search.make_sampler(model, output_len, sampling, **kw)
  if beam_size == 1:
    return greedy_search.make_greedy(model, output_len, **kw)
  return beam_search.make_best(model, beam_size=beam_size, max_len=output_len, alpha=alpha, **kw)


@functools.lru_cache(maxsize=8)
def _nbest_search(
  model: Any, output_len: int, beam_size: int, alpha: float, max_len_ratio: float
) -> Callable:
  return beam_search.make_beam_search(
    model, beam_size=beam_size, max_len=output_len, alpha=alpha, max_len_ratio=max_len_ratio
  )


def _round_up(n: int) -> int:
  """The next power of two (at least 8): batch shapes that compile once each."""
  size = 8
  while size < n:
    size *= 2
  return size


@dataclasses.dataclass(frozen=True)
class Member:
  """One trained workdir's checkpoint, read for translation."""

  workdir: Path
  config: ml_collections.ConfigDict
  src_tok: Any
  tgt_tok: Any
  model: models.EncoderDecoder
  signature: dict
  step: int
  params: Any
  max_len: int


def read_member(workdir: str | Path, checkpoint: str = 'auto') -> Member:
  """A workdir's config, tokenizers, model and one checkpoint's parameters."""
  workdir = Path(workdir)
  config = build.workdir_config(workdir)
  src_tok, tgt_tok = tokenizers.load(workdir, config.data.tokenizer)
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    _, meta = ckpts.read_meta(checkpoint)
    model = build.model(config, src_tok.vocab_size, tgt_tok.vocab_size)
    signature = checkpointing.signature(config, src_tok.vocab_size, tgt_tok.vocab_size)
    checkpointing.check_compatible(meta['signature'], signature)
    step, state, meta = ckpts.restore(checkpoint, build.abstract_state(config, model))
  finally:
    ckpts.close()
  return Member(
    workdir, config, src_tok, tgt_tok, model, signature, step, state.params, int(meta['max_len'])
  )


def expand_workdirs(workdirs: str | Path | Sequence[str | Path]) -> list[Path]:
  """Workdirs to translate with: a population's workdir stands for all its members."""
  if isinstance(workdirs, str | Path):
    workdirs = [workdirs]
  out = []
  for w in map(Path, workdirs):
    members = w / population.MEMBERS_DIR
    if not (w / 'checkpoints').exists() and members.is_dir():
      found = sorted((d for d in members.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
      if not found:
        raise errors.UserError(f'{w} is a population workdir without members yet')
      out.extend(found)
    else:
      out.append(w)
  if not out:
    raise errors.ConfigError('no workdir given')
  return out


def check_ensemble(members: Sequence[Member]) -> None:
  """Members of one ensemble share vocabularies (same tokenizer files) and model shape."""
  first = members[0]
  first_files = [
    p.read_bytes() for p in tokenizers.paths(first.workdir, first.config.data.tokenizer)
  ]
  for m in members[1:]:
    kind = m.config.data.tokenizer
    files = [p.read_bytes() for p in tokenizers.paths(m.workdir, kind)]
    if kind != first.config.data.tokenizer or files != first_files:
      raise errors.UserError(
        f'an ensemble needs one vocabulary: {m.workdir} and {first.workdir} have different '
        'tokenizers or vocabularies'
      )
    diffs = [
      f'{k}: {first.signature.get(k)!r} vs {v!r}'
      for k, v in m.signature.items()
      if first.signature.get(k) != v
    ]
    if diffs:
      raise errors.UserError(
        f'ensemble members must have one model shape to be stacked: {m.workdir} differs from '
        f'{first.workdir} ({"; ".join(diffs)})'
      )


def load(
  workdir: str | Path | Sequence[str | Path],
  checkpoint: str = 'auto',
  batch_size: int = 256,
  **decoding: Any,
) -> Translator:
  """Loads a workdir written by `train.py`: its averaged checkpoint when the run wrote one
  at its end (`train.average_last`), else its best (or the `checkpoint` asked for:
  'best', 'latest', 'averaged' or a step). Several workdirs (or a population's workdir)
  load as an ensemble that
  decodes with the mean of the members' log-probabilities; they must share vocabularies
  and model shape. `decoding`: the `Translator`'s settings (`beam_size`, `alpha`,
  `max_output_len`, `max_len_ratio`, `sample`, `temperature`, `top_k`, `seed`)."""
  members = [read_member(w, checkpoint) for w in expand_workdirs(workdir)]
  check_ensemble(members)
  first = members[0]
  if len(members) == 1:
    model, params = first.model, first.params
  else:
    model = ensemble.Ensemble(first.model, len(members))
    params = ensemble.stack([m.params for m in members])
  return Translator(
    model,
    params,
    first.src_tok,
    first.tgt_tok,
    min(m.max_len for m in members),
    first.config,
    first.step,
    batch_size,
    workdirs=tuple(str(m.workdir) for m in members),
    **decoding,
  )
