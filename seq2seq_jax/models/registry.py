"""The model families: `model.arch` names one, and its module registers the builder that
turns the config's `model` fields and the vocabulary sizes into an encoder-decoder.

  @registry.register('rnn', fields=('num_hiddens', 'cell', ...))
  def build(model_cfg, *, src_vocab_size, tgt_vocab_size) -> EncoderDecoder: ...

One `model` config group serves every family: a family names the fields it reads, its
builder gets those (the ones the config has), and fields of other families are left
alone, so `--config.model.arch=transformer` works on any config. A field that no family
reads is a one-line `ConfigError` (a typo). A family registered without `fields` gets
the whole group. Checkpoints record the family's fields (`fields(arch)`) only.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seq2seq_jax import errors

Builder = Callable[..., Any]
_FAMILIES: dict[str, Builder] = {}
_FIELDS: dict[str, tuple[str, ...] | None] = {}


def register(arch: str, fields: Sequence[str] | None = None) -> Callable[[Builder], Builder]:
  """Decorator: `builder(model_cfg, *, src_vocab_size, tgt_vocab_size)` makes `arch` from
  its `fields` of the config's `model` group (None: the whole group, `arch` included)."""

  def add(builder: Builder) -> Builder:
    if arch in _FAMILIES and _FAMILIES[arch] is not builder:
      raise ValueError(f'model family {arch!r} is registered twice')
    _FAMILIES[arch] = builder
    _FIELDS[arch] = None if fields is None else tuple(fields)
    return builder

  return add


def fields(arch: str) -> tuple[str, ...] | None:
  """The `model` fields family `arch` reads (None: it reads the whole group)."""
  _check_arch(arch)
  return _FIELDS.get(arch)


def _check_arch(arch: str) -> None:
  if arch not in _FAMILIES:
    raise errors.ConfigError(f'model.arch must be one of {families()}, got {arch!r}')


def families() -> list[str]:
  """The registered `model.arch` names."""
  return sorted(_FAMILIES)


def build(model_cfg: Mapping[str, Any], *, src_vocab_size: int, tgt_vocab_size: int) -> Any:
  """The model of `model_cfg` (the config's `model` fields, `arch` among them)."""
  arch = model_cfg['arch']
  _check_arch(arch)
  own = _FIELDS.get(arch)
  if own is not None:
    known = {'arch'}.union(*(f for f in _FIELDS.values() if f is not None))
    unknown = sorted(set(model_cfg) - known)
    if unknown:
      raise errors.ConfigError(
        f'model.{unknown[0]} is not a field of model.arch={arch!r} (its fields: {list(own)})'
      )
    model_cfg = {k: model_cfg[k] for k in own if k in model_cfg}
  return _FAMILIES[arch](model_cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
