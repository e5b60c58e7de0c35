"""What a search needs from a model, for one model or an ensemble of several.

Greedy decoding, sampling and beam search call two functions of the parameters:
`init(params, src, src_len) -> state` (run the encoder) and
`step(params, tokens, state) -> (logits [batch, vocab] float32, state)` (one decoder
step). `steps(model)` gives them for an `EncoderDecoder` (its raw logits) and for an
`Ensemble`: models of one shape whose parameters are stacked on a leading axis, run with
one `jax.vmap`, whose logits are the mean of the members' log-probabilities (a product of
experts: softmax of it renormalises). An ensemble of one gives the model's own
log-probabilities, so every search decodes exactly as with the model alone.

The decoder state of an ensemble keeps the batch on axis 0 and the members on axis 1, so
beam search gathers its beams the same way for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from seq2seq_jax import models

Array = jax.Array
InitFn = Callable[[Any, Array, Array], Any]
StepFn = Callable[[Any, Array, Any], tuple[Array, Any]]


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """`size` copies of `model`, decoded together: pass parameters stacked with `stack`."""

  model: models.EncoderDecoder
  size: int

  def init(self, params: Any, src: Array, src_len: Array) -> Any:
    init, _ = _model_steps(self.model)
    return jax.vmap(init, in_axes=(0, None, None), out_axes=1)(params, src, src_len)

  def step(self, params: Any, tokens: Array, state: Any) -> tuple[Array, Any]:
    _, step = _model_steps(self.model)

    def member(p: Any, s: Any) -> tuple[Array, Any]:
      logits, s = step(p, tokens, s)
      return jax.nn.log_softmax(logits, axis=-1), s

    logp, state = jax.vmap(member, in_axes=(0, 1), out_axes=(0, 1))(params, state)
    return jnp.mean(logp, axis=0), state


def stack(params: Sequence[Any]) -> Any:
  """Members' parameter trees (one structure and shape) -> one tree, members first."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *params)


def _model_steps(model: models.EncoderDecoder) -> tuple[InitFn, StepFn]:
  def init(params: Any, src: Array, src_len: Array) -> Any:
    return model.apply({'params': params}, src, src_len, method=models.EncoderDecoder.init_decoder)

  def step(params: Any, tokens: Array, state: Any) -> tuple[Array, Any]:
    logits, state = model.apply(
      {'params': params}, tokens, state, method=models.EncoderDecoder.decode_step
    )
    return logits.astype(jnp.float32), state

  return init, step


def steps(model: models.EncoderDecoder | Ensemble) -> tuple[InitFn, StepFn]:
  """(init, step) of a model or an ensemble (see the module's docstring)."""
  if isinstance(model, Ensemble):
    return model.init, model.step
  return _model_steps(model)


def output_limit(src_len: Array, max_len: int, max_len_ratio: float) -> Array:
  """Each sentence's output length limit [batch]: `max_len`, and with `max_len_ratio` > 0
  also at most ceil(ratio * source length) tokens (`<eos>` counted on both sides), at
  least 1."""
  limit = jnp.full(src_len.shape, max_len, jnp.int32)
  if max_len_ratio > 0:
    by_ratio = jnp.ceil(max_len_ratio * src_len.astype(jnp.float32)).astype(jnp.int32)
    limit = jnp.clip(by_ratio, 1, max_len)
  return limit
