"""The decoding interface: all that greedy decoding, sampling, beam search and ensembles
know of a model. Any model that offers it is decoded and ensembled by them unchanged.

Two levels:
  - `DecodingModel`, what a model family's Flax module implements: `init_decoder(src,
    src_len, max_steps=N)` runs the encoder and returns the initial decoder state for at
    most N decoding steps (a model with a cache, the Transformer's, sizes it by N);
    `decode_step(tokens, state)` feeds one token per sentence and returns the next
    token's logits and the new state. (`models.EncoderDecoder` implements it for both
    families.)
  - `Decodable`, what the searches call: the same two as pure functions of the parameters,
    `init(params, src, src_len, max_steps)` and `step(params, tokens, state)`. `decodable(model)`
    adapts a `DecodingModel`; an `ensemble.Ensemble` implements `Decodable` itself.

The contract (shapes for `batch` sentences, `vocab` target tokens):
  - src: int32 [batch, time] source ids padded with 0; src_len: int32 [batch] real lengths
    (`<eos>` included). Nothing past a sentence's length may change its decoding.
  - max_steps: a Python int, the most `step` calls that follow `init` (a search's
    `max_len`); a search never steps past it.
  - tokens: int32 [batch]; the first step gets `text.BOS_ID`, then the chosen tokens.
  - state: any pytree of arrays whose leaves all have the batch on axis 0. A search may
    repeat, reorder or gather rows (beam search keeps `batch * beam` rows and takes the
    surviving beams' rows), so each row must depend only on its own sentence. `step`
    returns a state of the same structure, shapes and dtypes (it is a `lax.while_loop`
    carry); a leaf it returns untouched may be passed through without a gather.
  - logits: float32 [batch, vocab]; softmax of a row is the next-token distribution (raw
    logits or log-probabilities: the searches take `argmax` or `log_softmax`).
  - Static (fixed when a search is compiled): the model object itself (its fields, e.g.
    sizes, the ensemble's size), `max_steps` and the shapes. Traced (may change without
    recompiling): params, src, src_len, tokens and the state's values. Both functions are
    pure: no randomness (decoding runs without dropout) and no side effects.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

Array = jax.Array
State = Any  # a pytree of arrays, each [batch, ...]


@runtime_checkable
class DecodingModel(Protocol):
  """A model family's module (Flax), decoded through `apply(..., method=NAME)`."""

  def init_decoder(
    self, src: Array, src_len: Array, *, train: bool = False, max_steps: int = 0
  ) -> State:
    """src [batch, time], src_len [batch] -> the initial decoder state for `max_steps`
    decoding steps (0: training's whole target at once)."""
    ...

  def decode_step(self, tokens: Array, state: State) -> tuple[Array, State]:
    """tokens [batch] -> logits [batch, vocab], the new state."""
    ...

  def apply(self, variables: Any, *args: Any, method: Any = None, **kwargs: Any) -> Any: ...


class Decodable(Protocol):
  """What a search calls: `init` once per batch, then `step` once per output token."""

  def init(self, params: Any, src: Array, src_len: Array, max_steps: int) -> State:
    """src [batch, time], src_len [batch] -> the initial decoder state for at most
    `max_steps` calls of `step`."""
    ...

  def step(self, params: Any, tokens: Array, state: State) -> tuple[Array, State]:
    """tokens [batch] -> float32 logits [batch, vocab], the new state."""
    ...


@dataclasses.dataclass(frozen=True)
class ModelSteps:
  """A `DecodingModel` as a `Decodable` (its own logits, in float32)."""

  model: DecodingModel

  def init(self, params: Any, src: Array, src_len: Array, max_steps: int = 0) -> State:
    return self.model.apply(
      {'params': params}, src, src_len, method='init_decoder', max_steps=max_steps
    )

  def step(self, params: Any, tokens: Array, state: State) -> tuple[Array, State]:
    logits, state = self.model.apply({'params': params}, tokens, state, method='decode_step')
    return logits.astype(jnp.float32), state


def decodable(model: DecodingModel | Decodable) -> Decodable:
  """The searches' view of a model (adapted) or of an ensemble (as it is)."""
  if isinstance(model, DecodingModel):
    return ModelSteps(model)
  return model


def output_limit(src_len: Array, max_len: int, max_len_ratio: float) -> Array:
  """Each sentence's output length limit [batch]: `max_len`, and with `max_len_ratio` > 0
  also at most ceil(ratio * source length) tokens (`<eos>` counted on both sides), at
  least 1."""
  limit = jnp.full(src_len.shape, max_len, jnp.int32)
  if max_len_ratio > 0:
    by_ratio = jnp.ceil(max_len_ratio * src_len.astype(jnp.float32)).astype(jnp.int32)
    limit = jnp.clip(by_ratio, 1, max_len)
  return limit
