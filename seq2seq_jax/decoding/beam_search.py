"""Batched beam search as a pure, compiled function of `(params, src, src_len)`.

Every sentence keeps `beam_size` alive hypotheses (beams) and its `beam_size` best
finished ones. Each step expands every alive beam by every token (`beam_size * vocab`
candidates, ranked by their summed log-probability, which is fair since all alive beams
have the same length):
  - a candidate that ends in `<eos>` and ranks among the top `beam_size` is a finished
    hypothesis, kept when it beats the worst of the sentence's finished ones;
  - the best `beam_size` candidates that do not end in `<eos>` stay alive;
  - at a sentence's last step (`max_len`, or earlier with `max_len_ratio`) the top
    `beam_size` candidates are finished whatever their last token.
Finished hypotheses are ranked by the length-normalised score of the book,
`log P(y_1..y_L | x) / L**alpha`, with L counting the tokens produced (`<eos>` included).

A sentence is done when no alive beam can still beat the worst of its `beam_size`
finished hypotheses, or at its last step. Log-probabilities only fall as a hypothesis
grows, so the best any alive beam can still reach is its log-probability now divided by
the largest normaliser it could end with, `limit**alpha` (the bound of the careful
implementations, e.g. tensor2tensor's and Flax's WMT example); a sentence whose `beam_size`
hypotheses finished early keeps searching while a longer one could still win. Once done,
nothing more enters a sentence's finished list, so its result never depends on the other
sentences of the batch; the loop stops when every sentence is done or at `max_len`. With
`alpha=0` and `beam_size=1` this is exactly greedy decoding (the single beam ends at the
first arg-max `<eos>`, and no continuation can score higher); with `alpha > 0` beam 1
may go on past greedy's `<eos>` to a longer hypothesis that scores higher. `model` is
anything `interface.decodable` accepts: a model (`interface.DecodingModel`, e.g. an
`EncoderDecoder`) or an `ensemble.Ensemble` (the mean of its members' log-probabilities).

The decoder state is a pytree whose leaves all have the batch on axis 0 (the contract in
`interface`); here the batch axis holds `batch * beam_size` rows, and surviving beams are
gathered with one `jax.tree.map`. The loop is a `lax.while_loop`, so the whole search
compiles once per (batch, source length) shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seq2seq_jax import errors
from seq2seq_jax.data import text
from seq2seq_jax.decoding import interface

Array = jax.Array
Model = interface.DecodingModel | interface.Decodable
NEG_INF = float('-inf')


def length_penalty(length: Array | int, alpha: float) -> Array:
  """The book's normaliser `L**alpha`."""
  return jnp.asarray(length, jnp.float32) ** alpha


def _gather_beams(tree: Any, old: Any, rows: Array) -> Any:
  """Takes rows `rows` ([batch * beam] indices) of every leaf of `tree`.

  A leaf that the decoder step returned untouched (the same traced value as in `old`,
  e.g. the attention decoder's encoder outputs) holds the same values in all the beams of
  a sentence, so gathering it would only copy; it is passed through instead."""
  old_leaves = jax.tree.leaves(old)
  leaves, treedef = jax.tree.flatten(tree)
  if len(old_leaves) != len(leaves):
    old_leaves = [None] * len(leaves)
  out = [
    x if x is o else jnp.take(x, rows, axis=0) for x, o in zip(leaves, old_leaves, strict=True)
  ]
  return jax.tree.unflatten(treedef, out)


def beam_search(
  model: Model,
  params: Any,
  src: Array,
  src_len: Array,
  *,
  beam_size: int,
  max_len: int,
  alpha: float = 0.75,
  max_len_ratio: float = 0.0,
) -> tuple[Array, Array]:
  """Beam search translation. src: [batch, time] ids; src_len: [batch].

  Returns the finished hypotheses [batch, beam, max_len] (each up to and including its
  `<eos>`, then padding 0), best first, and their length-normalised scores [batch, beam]
  (-inf for a slot no hypothesis filled, possible only when the vocabulary is tiny).
  With `max_len_ratio` > 0 a sentence's hypotheses also end after ceil(ratio * src_len)
  tokens (`interface.output_limit`): its "last step" comes earlier.
  """
  if beam_size < 1:
    raise errors.ConfigError(f'the beam size (--beam_size) must be at least 1, got {beam_size}')
  if max_len < 1:
    raise errors.ConfigError(f'the output max_len must be at least 1, got {max_len}')
  batch, k = src.shape[0], beam_size
  decoder = interface.decodable(model)
  state = decoder.init(params, src, src_len, max_len)
  limit = interface.output_limit(src_len, max_len, max_len_ratio)[:, None]  # [batch, 1]
  # [batch, ...] -> [batch * beam, ...]: beam j of sentence b is row b * beam + j.
  state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state)
  base = (jnp.arange(batch) * k)[:, None]  # [batch, 1]: each sentence's first row

  def cond(carry: dict) -> Array:
    return (carry['i'] < max_len) & ~jnp.all(carry['done'])

  def body(carry: dict) -> dict:
    i = carry['i']
    logits, new_state = decoder.step(params, carry['tokens'].reshape(-1), carry['state'])
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1).reshape(batch, k, vocab)
    cand = (carry['alive_logp'][:, :, None] + logp).reshape(batch, k * vocab)
    is_eos = (jnp.arange(k * vocab) % vocab == text.EOS_ID)[None, :]
    last = i + 1 >= limit  # [batch, 1]: each sentence's last step

    def extend(flat: Array) -> tuple[Array, Array, Array]:
      """Candidate indices [batch, n] -> their source beams, tokens and sequences."""
      beam, token = flat // vocab, (flat % vocab).astype(jnp.int32)
      seqs = jnp.take_along_axis(carry['alive_seq'], beam[:, :, None], axis=1)
      seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token[:, :, None], i, axis=2)
      return beam, token, seqs

    # Finished: `<eos>` candidates among the top k (all of the top k at the last step),
    # merged with the finished ones so far; the best k stay.
    top_scores, top_idx = jax.lax.top_k(cand, k)
    _, top_tok, top_seqs = extend(top_idx)
    ends = ((top_tok == text.EOS_ID) | last) & jnp.isfinite(top_scores) & ~carry['done'][:, None]
    new_fin = jnp.where(ends, top_scores / length_penalty(i + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([carry['fin_score'], new_fin], axis=1)
    all_seqs = jnp.concatenate([carry['fin_seq'], top_seqs], axis=1)
    fin_score, keep = jax.lax.top_k(all_scores, k)
    fin_seq = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)

    # Alive: the best k candidates that do not end in `<eos>`. A sentence is done at its
    # last step or once they cannot win; its beams go on being computed with the batch
    # (their values kept: top_k over rows of equal values is very slow on CPU), but
    # nothing they reach is kept.
    alive_logp, alive_idx = jax.lax.top_k(jnp.where(is_eos, NEG_INF, cand), k)
    done = carry['done'] | last[:, 0]
    # (max and min, not [:, 0] and [:, -1]: a slice of top_k's output makes XLA on CPU
    # sort all k * vocab candidates instead of its top-k kernel, ~20x slower here)
    best_alive, worst_finished = jnp.max(alive_logp, axis=1), jnp.min(fin_score, axis=1)
    done |= ~can_still_win(best_alive, worst_finished, i + 1, limit[:, 0])
    beam, token, alive_seq = extend(alive_idx)
    state = _gather_beams(new_state, carry['state'], (base + beam).reshape(-1))
    return {
      'i': i + 1,
      'tokens': token,
      'state': state,
      'alive_seq': alive_seq,
      'alive_logp': alive_logp,
      'fin_seq': fin_seq,
      'fin_score': fin_score,
      'done': done,
    }

  def can_still_win(best_alive: Array, worst_finished: Array, length: Array, limit: Array):
    """Whether a beam of log-probability `best_alive` and `length` tokens could still end
    above `worst_finished`: its log-probability can only fall, so its best normalised
    score is at the longest length it may reach (or, were the log-probability above 0 by
    rounding, at the shortest)."""
    longest = best_alive / length_penalty(limit, alpha)
    shortest = best_alive / length_penalty(jnp.minimum(length + 1, limit), alpha)
    return jnp.maximum(longest, shortest) > worst_finished

  init = {
    'i': jnp.asarray(0),
    'tokens': jnp.full((batch, k), text.BOS_ID, jnp.int32),
    'state': state,
    'alive_seq': jnp.zeros((batch, k, max_len), jnp.int32),
    # Only the first beam is real at the start; the others are copies that must not win.
    'alive_logp': jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1)),
    'fin_seq': jnp.zeros((batch, k, max_len), jnp.int32),
    'fin_score': jnp.full((batch, k), NEG_INF, jnp.float32),
    'done': jnp.zeros((batch,), bool),
  }
  out = jax.lax.while_loop(cond, body, init)
  return out['fin_seq'], out['fin_score']


def make_beam_search(
  model: Model,
  *,
  beam_size: int,
  max_len: int,
  alpha: float = 0.75,
  max_len_ratio: float = 0.0,
) -> Callable[[Any, Array, Array], tuple[Array, Array]]:
  """A jitted `(params, src, src_len) -> (hypotheses, scores)` (see `beam_search`)."""
  return jax.jit(
    functools.partial(
      beam_search,
      model,
      beam_size=beam_size,
      max_len=max_len,
      alpha=alpha,
      max_len_ratio=max_len_ratio,
    )
  )


def make_best(model: Model, **settings: Any) -> Callable[[Any, Array, Array], Array]:
  """A jitted `(params, src, src_len) -> ids [batch, max_len]`: the best hypothesis of each
  sentence, in the same form as `greedy_search.greedy_decode`'s output. `settings` are
  `make_beam_search`'s (`beam_size`, `max_len`, `alpha`, `max_len_ratio`)."""
  search = functools.partial(beam_search, model, **settings)
  return jax.jit(lambda params, src, src_len: search(params, src, src_len)[0][:, 0])


def sequence_scores(
  model: Model, params: Any, src: Array, src_len: Array, ids: Array, alpha: float
) -> Array:
  """The length-normalised score beam search gives each hypothesis ids [batch, max_len]
  (as `beam_search` returns them), computed by feeding the hypothesis to the decoder one
  token at a time (`interface.Decodable.step`): for checks and rescoring."""
  decoder = interface.decodable(model)
  length = jnp.where(
    jnp.any(ids == text.EOS_ID, axis=1),
    jnp.argmax(ids == text.EOS_ID, axis=1) + 1,
    ids.shape[1],
  )
  tokens_in = jnp.concatenate([jnp.full((ids.shape[0], 1), text.BOS_ID, ids.dtype), ids[:, :-1]], 1)

  def one(state: Any, tokens: tuple[Array, Array]) -> tuple[Any, Array]:
    logits, state = decoder.step(params, tokens[0], state)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return state, jnp.take_along_axis(logp, tokens[1][:, None], axis=-1)[:, 0]

  state = decoder.init(params, src, src_len, ids.shape[1])
  _, token_logp = jax.lax.scan(one, state, (tokens_in.T, ids.T))  # [time, batch]
  real = jnp.arange(ids.shape[1])[:, None] < length[None, :]
  return jnp.sum(jnp.where(real, token_logp, 0.0), axis=0) / length_penalty(length, alpha)
