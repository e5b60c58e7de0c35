"""The model families: `model.arch` names one, and its module registers the builder that
turns the config's `model` fields and the vocabulary sizes into an encoder-decoder.

  @registry.register('rnn')
  def build(model_cfg, *, src_vocab_size, tgt_vocab_size) -> EncoderDecoder: ...

`build(config.model, src_vocab_size=..., tgt_vocab_size=...)` is the one place a model is
made from a config (training, inference, averaging and the API all come here).

What a family's model provides (`seq2seq.EncoderDecoder` is the recurrent family's):
- training: `__call__(src, src_len, tgt_in, *, train)` -> teacher-forced float32 logits
  [batch, tgt time, tgt vocab] (`train.steps`);
- decoding: `init_decoder(src, src_len)` and `decode_step(tokens, state)`
  (`decoding/interface.py`: greedy, sampling, beam search, ensembles, the `Translator`);
- optional, for evaluation in bounded memory: `features(src, src_len, tgt_in, *, train)`
  -> [batch, tgt time, d], `project(features)` -> logits, and `tgt_vocab_size`; without
  them `train.steps.eval_step` computes the batch's logits in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from seq2seq_jax import errors

Builder = Callable[..., Any]
_FAMILIES: dict[str, Builder] = {}


def register(arch: str) -> Callable[[Builder], Builder]:
  """Decorator: `builder(model_cfg, *, src_vocab_size, tgt_vocab_size)` makes `arch`."""

  def add(builder: Builder) -> Builder:
    if arch in _FAMILIES and _FAMILIES[arch] is not builder:
      raise ValueError(f'model family {arch!r} is registered twice')
    _FAMILIES[arch] = builder
    return builder

  return add


def families() -> list[str]:
  """The registered `model.arch` names."""
  return sorted(_FAMILIES)


def build(model_cfg: Mapping[str, Any], *, src_vocab_size: int, tgt_vocab_size: int) -> Any:
  """The model of `model_cfg` (the config's `model` fields, `arch` among them)."""
  arch = model_cfg['arch']
  if arch not in _FAMILIES:
    raise errors.ConfigError(f'model.arch must be one of {families()}, got {arch!r}')
  return _FAMILIES[arch](model_cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
