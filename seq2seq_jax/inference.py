"""A trained workdir as a translator: config, tokenizers and a checkpoint's parameters."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from seq2seq_jax import errors, models
from seq2seq_jax.data import input_pipeline, text, tokenizers
from seq2seq_jax.decoding import beam_search, greedy_search
from seq2seq_jax.train import checkpointing, steps

MAX_LINE_WARNINGS = 5  # long input lines named one by one; then only their count


@dataclasses.dataclass
class Translator:
  """Translates raw sentences with a trained model (batched, compiled): greedy with
  `beam_size=1`, beam search with length normalisation `alpha` otherwise."""

  model: models.EncoderDecoder
  params: Any
  src_tok: text.WordTokenizer
  tgt_tok: text.WordTokenizer
  max_len: int
  config: ml_collections.ConfigDict
  step: int
  batch_size: int = 256
  beam_size: int = 1
  alpha: float = 0.75

  def __post_init__(self) -> None:
    if self.beam_size < 1:
      raise errors.UserError(f'the beam size must be at least 1, got {self.beam_size}')
    if self.beam_size == 1:
      self._decode = greedy_search.make_greedy(self.model, self.max_len)
    else:
      self._decode = beam_search.make_best(
        self.model, beam_size=self.beam_size, max_len=self.max_len, alpha=self.alpha
      )

  @property
  def decoder(self) -> str:
    """'plain' or 'attention'."""
    return str(self.config.model.get('decoder', 'plain'))

  def source_tokens(self, sentence: str) -> list[str]:
    """The source tokens the model sees, `<eos>` included (for plots: unknown words as
    written with the word tokenizer, pieces with SentencePiece)."""
    if hasattr(self.src_tok, 'vocab'):
      return text.tokenize(text.preprocess(sentence))[: self.max_len]
    return _token_strings(self.src_tok, self.src_tok.encode(sentence)[: self.max_len])

  def output_tokens(self, ids: np.ndarray) -> list[str]:
    """Output ids -> one token per decoding step: up to and including `<eos>`, or all
    `max_len` of them when the model never produced `<eos>`."""
    ids = [int(i) for i in ids]
    if text.EOS_ID in ids:
      ids = ids[: ids.index(text.EOS_ID) + 1]
    return _token_strings(self.tgt_tok, ids)

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

  def translate_ids(self, src_ids: list[list[int]]) -> list[np.ndarray]:
    outputs = []
    for start in range(0, len(src_ids), self.batch_size):
      chunk = src_ids[start : start + self.batch_size]
      size = min(self.batch_size, _round_up(len(chunk)))  # few shapes, little padding
      src, src_len = input_pipeline.make_source_batch(
        chunk + [[0]] * (size - len(chunk)), self.max_len
      )
      out = np.asarray(self._decode(self.params, src, src_len))
      outputs.extend(out[: len(chunk)])
    return outputs

  def nbest(self, sentences: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The k best translations of each sentence with their scores (`log P / len**alpha`),
    best first, by beam search with a beam of max(k, beam_size); [] for a blank line."""
    if k < 1:
      raise errors.UserError(f'--nbest must be at least 1, got {k}')
    beam = max(k, self.beam_size)
    if getattr(self, '_nbest_beam', None) != beam:
      self._nbest_fn = beam_search.make_beam_search(
        self.model, beam_size=beam, max_len=self.max_len, alpha=self.alpha
      )
      self._nbest_beam = beam
    keep = [i for i, s in enumerate(sentences) if s.strip()]
    src_ids = self.encode(sentences)
    result: list[list[tuple[str, float]]] = [[] for _ in sentences]
    for start in range(0, len(keep), self.batch_size):
      rows = keep[start : start + self.batch_size]
      size = min(self.batch_size, _round_up(len(rows)))
      src, src_len = input_pipeline.make_source_batch(
        [src_ids[i] for i in rows] + [[0]] * (size - len(rows)), self.max_len
      )
      seqs, scores = (np.asarray(x) for x in self._nbest_fn(self.params, src, src_len))
      for j, i in enumerate(rows):
        result[i] = [
          (self.tgt_tok.decode(seqs[j, r]), float(scores[j, r]))
          for r in range(k)
          if np.isfinite(scores[j, r]) and scores[j, r] > -1e8  # a slot no hypothesis filled
        ]
    return result

  def translate(self, sentences: Sequence[str]) -> list[str]:
    """Translations, one per sentence; an empty (or blank) sentence gives ''."""
    keep = [i for i, s in enumerate(sentences) if s.strip()]
    src_ids = self.encode(sentences)  # warnings name the sentence's place in the input
    outs = self.translate_ids([src_ids[i] for i in keep])
    result = [''] * len(sentences)
    for i, out in zip(keep, outs, strict=True):
      result[i] = self.tgt_tok.decode(out)
    return result


def _token_strings(tok: Any, ids: Sequence[int]) -> list[str]:
  """Ids -> token strings: the word vocabulary's, or SentencePiece's pieces."""
  if hasattr(tok, 'vocab'):
    return [tok.vocab.idx_to_token[int(i)] for i in ids]
  return [tok.sp.id_to_piece(int(i)) for i in ids]


def _round_up(n: int) -> int:
  """The next power of two (at least 8): batch shapes that compile once each."""
  size = 8
  while size < n:
    size *= 2
  return size


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
  path = Path(workdir) / 'config.json'
  if not path.exists():
    raise errors.UserError(f'{workdir} is not a training workdir (no config.json)')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def abstract_state(config: ml_collections.ConfigDict, model: models.EncoderDecoder) -> Any:
  """The shapes and dtypes of a workdir's `TrainState` (the tree Orbax restores into)."""
  tx = steps.make_optimizer(
    learning_rate=1.0,
    grad_clip=config.train.grad_clip,
    schedule=config.train.schedule,
    warmup_steps=config.train.warmup_steps,
    weight_decay=config.train.weight_decay,
  )
  return jax.eval_shape(lambda: steps.init_state(model, tx, jax.random.key(0)))


def load(
  workdir: str | Path,
  checkpoint: str = 'best',
  batch_size: int = 256,
  *,
  beam_size: int = 1,
  alpha: float = 0.75,
) -> Translator:
  """Loads a workdir written by `train.py`: its best (or latest, or a given) checkpoint.
  `beam_size` > 1 translates with beam search (`alpha`: the length-normalisation exponent)."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise errors.UserError(f'workdir {workdir} does not exist')
  config = load_config(workdir)
  src_tok, tgt_tok = tokenizers.load(workdir, config.data.tokenizer)
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  _, meta = ckpts.read_meta(checkpoint)
  model_cfg = dict(config.model)
  model = models.build_model(
    **model_cfg, src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size
  )
  signature = checkpointing.signature(
    model_cfg, src_tok.vocab_size, tgt_tok.vocab_size, config.data.tokenizer
  )
  checkpointing.check_compatible(meta['signature'], signature)
  step, state, meta = ckpts.restore(checkpoint, abstract_state(config, model))
  ckpts.close()
  return Translator(
    model,
    state.params,
    src_tok,
    tgt_tok,
    int(meta['max_len']),
    config,
    step,
    batch_size,
    beam_size,
    alpha,
  )
