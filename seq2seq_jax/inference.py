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

from seq2seq_jax import checkpointing, decode, errors, input_pipeline, models, steps, text


@dataclasses.dataclass
class Translator:
  """Translates raw sentences with a trained model (greedy, batched, compiled)."""

  model: models.EncoderDecoder
  params: Any
  src_tok: text.WordTokenizer
  tgt_tok: text.WordTokenizer
  max_len: int
  config: ml_collections.ConfigDict
  step: int
  batch_size: int = 256

  def __post_init__(self) -> None:
    self._greedy = decode.make_greedy(self.model, self.max_len)

  def encode(self, sentences: Sequence[str], warn: bool = True) -> list[list[int]]:
    """Source ids, trimmed to the model's maximum length (with a warning)."""
    ids = []
    for i, s in enumerate(sentences):
      s_ids = self.src_tok.encode(s)
      if len(s_ids) > self.max_len:
        if warn:
          print(
            f'warning: sentence {i + 1} has {len(s_ids)} tokens; translating its first '
            f'{self.max_len}',
            file=sys.stderr,
          )
        s_ids = s_ids[: self.max_len]
      ids.append(s_ids)
    return ids

  def translate_ids(self, src_ids: list[list[int]]) -> list[np.ndarray]:
    outputs = []
    for start in range(0, len(src_ids), self.batch_size):
      chunk = src_ids[start : start + self.batch_size]
      size = min(self.batch_size, _round_up(len(chunk)))  # few shapes, little padding
      src, src_len = input_pipeline.make_source_batch(
        chunk + [[0]] * (size - len(chunk)), self.max_len
      )
      out = np.asarray(self._greedy(self.params, src, src_len))
      outputs.extend(out[: len(chunk)])
    return outputs

  def translate(self, sentences: Sequence[str]) -> list[str]:
    """Translations, one per sentence; an empty (or blank) sentence gives ''."""
    keep = [i for i, s in enumerate(sentences) if s.strip()]
    outs = self.translate_ids(self.encode([sentences[i] for i in keep]))
    result = [''] * len(sentences)
    for i, out in zip(keep, outs, strict=True):
      result[i] = self.tgt_tok.decode(out)
    return result


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


def load(workdir: str | Path, checkpoint: str = 'best', batch_size: int = 256) -> Translator:
  """Loads a workdir written by `train.py`: its best (or latest, or a given) checkpoint."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise errors.UserError(f'workdir {workdir} does not exist')
  config = load_config(workdir)
  for name in (input_pipeline.SRC_VOCAB, input_pipeline.TGT_VOCAB):
    if not (workdir / name).exists():
      raise errors.UserError(f'{workdir} has no vocabulary ({name} is missing)')
  src_tok = text.WordTokenizer.load(workdir / input_pipeline.SRC_VOCAB)
  tgt_tok = text.WordTokenizer.load(workdir / input_pipeline.TGT_VOCAB)
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
  tx = steps.make_optimizer(
    learning_rate=1.0,
    grad_clip=config.train.grad_clip,
    schedule=config.train.schedule,
    warmup_steps=config.train.warmup_steps,
    weight_decay=config.train.weight_decay,
  )
  abstract = jax.eval_shape(lambda: steps.init_state(model, tx, jax.random.key(0)))
  step, state, meta = ckpts.restore(checkpoint, abstract)
  ckpts.close()
  return Translator(
    model, state.params, src_tok, tgt_tok, int(meta['max_len']), config, step, batch_size
  )
