"""Decoding as pure, compiled functions of `(params, src, src_len)`.

Greedy decoding runs the decoder one token at a time inside `lax.while_loop` and stops
as soon as every sentence in the batch has produced `<eos>`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from seq2seq_jax import models
from seq2seq_jax.data import text
from seq2seq_jax.models import ops

Array = jax.Array


def greedy_decode(
  model: models.EncoderDecoder, params: dict, src: Array, src_len: Array, *, max_len: int
) -> Array:
  """Greedy translation. src: [batch, time] ids; src_len: [batch].

  Returns [batch, max_len] ids: each row is the argmax continuation up to and including
  its `<eos>`, then padding (0).
  """
  batch = src.shape[0]
  variables = {'params': params}
  state = model.apply(variables, src, src_len, method=models.EncoderDecoder.init_decoder)

  def cond(carry: tuple) -> Array:
    i, _, _, _, done = carry
    return (i < max_len) & ~jnp.all(done)

  def body(carry: tuple) -> tuple:
    i, tokens, state, out, done = carry
    logits, state = model.apply(variables, tokens, state, method=models.EncoderDecoder.decode_step)
    nxt = ops.first_argmax(logits)  # jnp.argmax, ~5x faster on CPU
    nxt = jnp.where(done, text.PAD_ID, nxt)
    out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
    return i + 1, nxt, state, out, done | (nxt == text.EOS_ID)

  init = (
    jnp.asarray(0),
    jnp.full((batch,), text.BOS_ID, jnp.int32),
    state,
    jnp.zeros((batch, max_len), jnp.int32),
    jnp.zeros((batch,), bool),
  )
  return jax.lax.while_loop(cond, body, init)[3]


def make_greedy(model: nn.Module, max_len: int) -> Callable[[dict, Array, Array], Array]:
  """A jitted `(params, src, src_len) -> ids` for one model and output length."""
  return jax.jit(functools.partial(greedy_decode, model, max_len=max_len))
