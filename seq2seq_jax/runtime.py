"""A trained model's two compiled searches and its tokenizers, outside the training stack.

`Searcher` is what the server (`seq2seq_jax.serving`) and the exported-model runner
(`seq2seq_jax.exported`) decode with. It holds
  - `greedy(params, src, src_len) -> ids [batch, out_len]`, and
  - `beam(params, src, src_len) -> (ids [batch, beam_size, out_len], scores [batch, beam_size])`
    (the n-best list, best first; scores `log P / len**alpha`, -inf for an empty slot),
either the programs of an exported folder (`exported.load`) or the searches of a trained
workdir compiled here (`from_workdir`, which needs the training stack). This module itself
imports only JAX, NumPy and the tokenizers, so that an exported model runs without Flax.

Batches are padded to a few shapes, each compiled once: rows to the next of `row_buckets`
(powers of 2) and source columns to the next of `length_buckets`. `compile()` compiles them
all up front (a server is ready only then); `compiles` counts the compiled programs, so a
test can check that nothing compiles after that.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seq2seq_jax import errors
from seq2seq_jax.data import text

MIN_LENGTH_BUCKET = 4


@dataclasses.dataclass(frozen=True)
class Hypothesis:
  """One translation: its text and, from beam search, its score (`log P / len**alpha`;
  NaN from greedy search)."""

  text: str
  score: float = math.nan


def row_buckets(max_batch: int, factor: int = 2) -> tuple[int, ...]:
  """Batch sizes that batches are padded to: 1, factor, factor**2, ... and `max_batch`
  itself (1, 2, 4, ..., 64; with factor 4: 1, 4, 16, 64). Powers of 2 by default: padding
  17 sentences to 64 rows cost a greedy batch of the 30-minute GRU 59 ms against 28 ms at
  16 (docs/serving.md); the extra programs are compiled once, before a server is ready."""
  if max_batch < 1:
    raise errors.ConfigError(f'the largest batch must be at least 1 sentence, got {max_batch}')
  sizes, n = [], 1
  while n < max_batch:
    sizes.append(n)
    n *= factor
  return (*sizes, max_batch)


def length_buckets(max_len: int) -> tuple[int, ...]:
  """Source widths that batches are padded to: `max_len`, and halves of it (rounded up)
  down to `MIN_LENGTH_BUCKET` tokens: 18 -> (5, 9, 18)."""
  widths = [max_len]
  while math.ceil(widths[-1] / 2) >= MIN_LENGTH_BUCKET:
    widths.append(math.ceil(widths[-1] / 2))
  return tuple(sorted(widths))


def bucket(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds n (the largest when none does)."""
  for b in buckets:
    if n <= b:
      return b
  return buckets[-1]


@dataclasses.dataclass
class Searcher:
  """A model's searches, parameters and tokenizers; see the module docstring.

  `max_len`: the source tokens the model reads (longer sources are cut, with a warning by
  `encode`); `beam_size`: the hypotheses beam search keeps (the longest n-best list).
  `source_lang`/`target_lang`: the direction, as language codes."""

  greedy: Callable[..., Any]
  beam: Callable[..., Any]
  params: Any
  src_tok: Any
  tgt_tok: Any
  max_len: int
  beam_size: int
  source_lang: str
  target_lang: str
  max_batch: int = 64
  attend: Callable[..., Any] | None = None  # (params, src, src_len, ids) -> [b, out, src]
  description: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    self.row_buckets = row_buckets(self.max_batch)
    self.length_buckets = length_buckets(self.max_len)

  def encode(self, sentence: str) -> tuple[list[int], bool]:
    """Source ids (`<eos>` included) cut to `max_len`, and whether they were cut."""
    ids = self.src_tok.encode(sentence)
    return ids[: self.max_len], len(ids) > self.max_len

  @property
  def has_attention(self) -> bool:
    """Whether `attention` works: a model with attention (not an ensemble)."""
    return self.attend is not None

  def shapes(self) -> list[tuple[int, int]]:
    """Every (rows, columns) shape a batch is padded to."""
    return [(r, w) for r in self.row_buckets for w in self.length_buckets]

  def pad(self, src_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sources -> src int32 [rows, width] (padded with 0; extra rows hold `<eos>` alone)
    and src_len int32 [rows], at the bucket shapes."""
    if not 0 < len(src_ids) <= self.max_batch:
      raise ValueError(f'a batch holds 1 to {self.max_batch} sources, got {len(src_ids)}')
    rows = bucket(len(src_ids), self.row_buckets)
    width = bucket(max(len(s) for s in src_ids), self.length_buckets)
    src = np.zeros((rows, width), np.int32)
    src_len = np.ones((rows,), np.int32)
    src[:, 0] = text.EOS_ID
    for i, ids in enumerate(src_ids):
      src[i, : len(ids)] = ids
      src_len[i] = len(ids)
    return src, src_len

  def search(self, src_ids: Sequence[Sequence[int]], beam: bool = False) -> list[list[Hypothesis]]:
    """One compiled call for up to `max_batch` sources (ids from `encode`): for each, its
    greedy translation, or with `beam` its `beam_size` best, best first (slots that no
    hypothesis filled are left out)."""
    src, src_len = self.pad(src_ids)
    n = len(src_ids)
    if not beam:
      ids = np.asarray(self.greedy(self.params, src, src_len))
      return [[Hypothesis(self.tgt_tok.decode(ids[i]))] for i in range(n)]
    seqs, scores = (np.asarray(x) for x in self.beam(self.params, src, src_len))
    return [
      [
        Hypothesis(self.tgt_tok.decode(seqs[i, r]), float(scores[i, r]))
        for r in range(seqs.shape[1])
        if np.isfinite(scores[i, r]) and scores[i, r] > -1e8
      ]
      for i in range(n)
    ]

  def translate(
    self, sentences: Sequence[str], beam: bool = False, nbest: int = 1
  ) -> list[list[Hypothesis]]:
    """Any number of sentences: sorted by length into batches of `max_batch`, searched,
    answered in input order. A blank sentence gives [Hypothesis('')]; `nbest` (with `beam`)
    keeps that many hypotheses a sentence."""
    if nbest > 1 and not beam:
      raise errors.ConfigError('n-best lists come from beam search: set beam')
    if nbest > self.beam_size:
      raise errors.ConfigError(f'this model keeps {self.beam_size} hypotheses, asked {nbest}')
    out: list[list[Hypothesis]] = [[Hypothesis('')] for _ in sentences]
    encoded = {}
    cut = 0
    for i, s in enumerate(sentences):
      if not text.is_blank(s):
        encoded[i], was_cut = self.encode(s)
        cut += was_cut
    if cut:
      print(
        f'warning: {cut} of {len(sentences)} sentences were longer than the {self.max_len} '
        'tokens the model reads and were cut',
        file=sys.stderr,
      )
    order = sorted(encoded, key=lambda i: len(encoded[i]))
    for start in range(0, len(order), self.max_batch):
      chunk = order[start : start + self.max_batch]
      for i, hyps in zip(chunk, self.search([encoded[i] for i in chunk], beam), strict=True):
        out[i] = hyps[:nbest]
    return out

  def attention(self, sentence: str, beam: bool = False) -> dict:
    """One sentence's translation (greedy, or with `beam` the best of beam search: the one
    `search` gives) with the attention of each output token over the source tokens:
    {'translation', 'source_tokens', 'target_tokens', 'weights' [target][source]} (the
    Bahdanau decoder's weights, or the Transformer's last-block cross-attention averaged
    over heads)."""
    if self.attend is None:
      raise errors.UserError('this model has no attention weights (a plain decoder or an ensemble)')
    ids, _ = self.encode(sentence)
    src, src_len = self.pad([ids])
    if beam:
      out = np.asarray(self.beam(self.params, src, src_len)[0])[:, 0]
    else:
      out = np.asarray(self.greedy(self.params, src, src_len))
    weights = np.asarray(self.attend(self.params, src, src_len, out))[0]
    out_ids = until_eos(out[0])
    return {
      'translation': self.tgt_tok.decode(out_ids),
      'source_tokens': token_strings(self.src_tok, ids, sentence),
      'target_tokens': token_strings(self.tgt_tok, out_ids),
      'weights': weights[: len(out_ids), : len(ids)].round(4).tolist(),
    }

  def compile(self, beam: Sequence[bool] = (False, True)) -> int:
    """Compiles every batch shape for the searches in `beam` (False: greedy, True: beam
    search) by running each once, and `attention`'s shapes (one row); returns the number
    of programs compiled."""
    before = self.compiles
    for b in beam:
      for rows, width in self.shapes():
        src = np.full((rows, width), text.EOS_ID, np.int32)
        out = (self.beam if b else self.greedy)(self.params, src, np.ones((rows,), np.int32))
        _block(out)
    if self.attend is not None:
      for width in self.length_buckets:
        src = np.full((1, width), text.EOS_ID, np.int32)
        out = np.asarray(self.greedy(self.params, src, np.ones((1,), np.int32)))  # as `attention`
        _block(self.attend(self.params, src, np.ones((1,), np.int32), out))
    return self.compiles - before

  @property
  def compiles(self) -> int:
    """Programs compiled so far (one per search and shape): constant once `compile` ran."""
    return sum(_cache_size(f) for f in (self.greedy, self.beam, self.attend) if f is not None)


def until_eos(ids: Sequence[int]) -> list[int]:
  """Output ids up to and including the first `<eos>` (all of them when there is none)."""
  ids = [int(i) for i in ids]
  return ids[: ids.index(text.EOS_ID) + 1] if text.EOS_ID in ids else ids


def token_strings(tok: Any, ids: Sequence[int], sentence: str | None = None) -> list[str]:
  """Ids -> one string per token: the word vocabulary's (source words as written when a
  `sentence` is given, so unknown words show), or SentencePiece's pieces."""
  if hasattr(tok, 'vocab'):
    if sentence is not None:
      return text.tokenize(text.preprocess(sentence))[: len(ids)]
    return [tok.vocab.idx_to_token[int(i)] for i in ids]
  return [tok.sp.id_to_piece(int(i)) for i in ids]


def _block(tree: Any) -> None:
  for x in tree if isinstance(tree, tuple) else (tree,):
    np.asarray(x)


def _cache_size(fn: Any) -> int:
  size = getattr(fn, '_cache_size', None)
  return int(size()) if callable(size) else 0


def from_workdir(
  workdir: Any, checkpoint: str = 'auto', beam_size: int = 4, alpha: float = 0.75, **kw: Any
) -> Searcher:
  """A `Searcher` for trained workdirs (several: an ensemble), compiled here (needs the
  training stack: Flax, Orbax). `kw`: `Searcher`'s `max_batch`."""
  import functools

  import jax

  from seq2seq_jax import attention_plot, inference

  translator = inference.load(workdir, checkpoint)
  model, out_len = translator.model, translator.output_len
  config = translator.config
  attend = None
  if translator.has_attention and translator.ensemble_size == 1:
    attend = jax.jit(functools.partial(attention_plot.attention_weights, model))
  return Searcher(
    greedy=inference._search(model, out_len, 1, alpha, 0.0, None),
    beam=inference._nbest_search(model, out_len, beam_size, alpha, 0.0),
    params=translator.params,
    src_tok=translator.src_tok,
    tgt_tok=translator.tgt_tok,
    max_len=translator.max_len,
    beam_size=beam_size,
    source_lang=config.data.src_lang,
    target_lang=config.data.tgt_lang,
    attend=attend,
    description={'workdirs': list(translator.workdirs), 'step': translator.step},
    **kw,
  )
