"""Greedy decoding and sampling as pure, compiled functions of `(params, src, src_len)`.

Both run the decoder one token at a time inside `lax.while_loop` and stop as soon as
every sentence in the batch has produced `<eos>` or reached its length limit. `model` is
anything `interface.decodable` accepts: a model (`interface.DecodingModel`, e.g. an
`EncoderDecoder`) or an `ensemble.Ensemble` (stacked parameters).

Sampling draws each token from `softmax(logits / temperature)`, restricted to the `top_k`
most likely tokens when `top_k` > 0. Each sentence has its own key (`keys[b]`, folded
with the step number), so a sentence's sample depends on its key only: not on the batch
it is decoded in.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from seq2seq_jax import errors
from seq2seq_jax.data import text
from seq2seq_jax.decoding import interface
from seq2seq_jax.models import ops

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Sampling settings: `temperature` > 0 scales the logits; `top_k` > 0 keeps only the
  k most likely tokens (0: all)."""

  temperature: float = 1.0
  top_k: int = 0

  def __post_init__(self) -> None:
    if not self.temperature > 0:
      raise errors.ConfigError(
        f'the sampling temperature (--temperature) must be positive, got {self.temperature}'
      )
    if self.top_k < 0:
      raise errors.ConfigError(
        f'the sampling top_k (--top_k) must be 0 (all tokens) or positive, got {self.top_k}'
      )

  def draw(self, logits: Array, keys: Array, i: Array) -> Array:
    """One token per row of logits [batch, vocab], with row keys [batch] at step i."""
    logits = logits / self.temperature
    if 0 < self.top_k < logits.shape[-1]:
      kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
      logits = jnp.where(logits >= kth, logits, -jnp.inf)
    draw = lambda key, row: jax.random.categorical(jax.random.fold_in(key, i), row)  # noqa: E731
    return jax.vmap(draw)(keys, logits).astype(jnp.int32)


def greedy_decode(
  model: interface.DecodingModel | interface.Decodable,
  params: dict,
  src: Array,
  src_len: Array,
  *,
  max_len: int,
  max_len_ratio: float = 0.0,
  sampling: Sampling | None = None,
  keys: Array | None = None,
) -> Array:
  """Greedy translation (or, with `sampling` and per-sentence `keys`, sampling).
  src: [batch, time] ids; src_len: [batch].

  Returns [batch, max_len] ids: each row is the argmax (or sampled) continuation up to
  and including its `<eos>`, then padding (0). With `max_len_ratio` > 0 a row also stops
  after ceil(ratio * src_len) tokens (`interface.output_limit`).
  """
  if sampling is not None and keys is None:
    raise ValueError('sampling needs one key per sentence (keys)')
  decoder = interface.decodable(model)
  batch = src.shape[0]
  state = decoder.init(params, src, src_len, max_len)
  limit = interface.output_limit(src_len, max_len, max_len_ratio)

  def cond(carry: tuple) -> Array:
    i, _, _, _, done = carry
    return (i < max_len) & ~jnp.all(done)

  def body(carry: tuple) -> tuple:
    i, tokens, state, out, done = carry
    logits, state = decoder.step(params, tokens, state)
    if sampling is None:
      nxt = ops.first_argmax(logits)  # jnp.argmax, ~5x faster on CPU
    else:
      nxt = sampling.draw(logits, keys, i)
    nxt = jnp.where(done, text.PAD_ID, nxt)
    out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
    return i + 1, nxt, state, out, done | (nxt == text.EOS_ID) | (i + 1 >= limit)

  init = (
    jnp.asarray(0),
    jnp.full((batch,), text.BOS_ID, jnp.int32),
    state,
    jnp.zeros((batch, max_len), jnp.int32),
    jnp.zeros((batch,), bool),
  )
  return jax.lax.while_loop(cond, body, init)[3]


def make_greedy(
  model: interface.DecodingModel | interface.Decodable, max_len: int, *, max_len_ratio: float = 0.0
) -> Callable[[dict, Array, Array], Array]:
  """A jitted `(params, src, src_len) -> ids` for one model (or ensemble) and length."""
  return jax.jit(
    functools.partial(greedy_decode, model, max_len=max_len, max_len_ratio=max_len_ratio)
  )


def make_sampler(
  model: interface.DecodingModel | interface.Decodable,
  max_len: int,
  sampling: Sampling,
  *,
  max_len_ratio: float = 0.0,
) -> Callable[[dict, Array, Array, Array], Array]:
  """A jitted `(params, src, src_len, keys) -> ids`: one sample per sentence, keys [batch]."""

  def sample(params: dict, src: Array, src_len: Array, keys: Array) -> Array:
    return greedy_decode(
      model,
      params,
      src,
      src_len,
      max_len=max_len,
      max_len_ratio=max_len_ratio,
      sampling=sampling,
      keys=keys,
    )

  return jax.jit(sample)
