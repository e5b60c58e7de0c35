"""Ensembles: models of one shape decoded together as one `interface.Decodable`.

An `Ensemble` holds one model (any `interface.DecodingModel` or `Decodable`) and the number of its
members, whose parameters are stacked on a leading axis (`stack`) and run with one
`jax.vmap`. Its logits are the mean of the members' log-probabilities (a product of
experts: softmax of it renormalises). An ensemble of one gives the model's own
log-probabilities, so every search decodes exactly as with the model alone.

The decoder state of an ensemble keeps the batch on axis 0 and the members on axis 1, so
beam search gathers its beams the same way for both.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from seq2seq_jax.decoding import interface

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """`size` copies of `model`, decoded together: pass parameters stacked with `stack`."""

  model: interface.DecodingModel | interface.Decodable
  size: int

  def init(self, params: Any, src: Array, src_len: Array, max_steps: int = 0) -> interface.State:
    init = functools.partial(interface.decodable(self.model).init, max_steps=max_steps)
    return jax.vmap(init, in_axes=(0, None, None), out_axes=1)(params, src, src_len)

  def step(self, params: Any, tokens: Array, state: interface.State) -> tuple[Array, Any]:
    step = interface.decodable(self.model).step

    def member(p: Any, s: Any) -> tuple[Array, Any]:
      logits, s = step(p, tokens, s)
      return jax.nn.log_softmax(logits, axis=-1), s

    logp, state = jax.vmap(member, in_axes=(0, 1), out_axes=(0, 1))(params, state)
    return jnp.mean(logp, axis=0), state


def stack(params: Sequence[Any]) -> Any:
  """Members' parameter trees (one structure and shape) -> one tree, members first."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *params)
