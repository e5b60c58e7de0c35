"""The model families: `model.arch` names one, and its module registers the builder that
turns the config's `model` fields and the vocabulary sizes into an encoder-decoder.

  @registry.register('rnn')
  def build(model_cfg, *, src_vocab_size, tgt_vocab_size) -> EncoderDecoder: ...

`build(config.model, src_vocab_size=..., tgt_vocab_size=...)` is the one place a model is
made from a config (training, inference, averaging and the API all come here).
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
