"""Batched beam search as a pure, compiled function of `(params, src, src_len)`.

Every sentence keeps `beam_size` alive hypotheses (beams) and up to `beam_size` finished
ones. Each step expands every alive beam by every token (`beam_size * vocab` candidates,
ranked by their summed log-probability, which is fair since all alive beams have the
same length):
  - a candidate that ends in `<eos>` and ranks among the top `beam_size` is finished;
  - the best `beam_size` candidates that do not end in `<eos>` stay alive;
  - at a sentence's last step (`max_len`, or earlier with `max_len_ratio`) the top
    `beam_size` candidates are finished whatever their last token.
Finished hypotheses are ranked by the length-normalised score of the book,
`log P(y_1..y_L | x) / L**alpha`, with L counting the tokens produced (`<eos>` included).
A sentence is done when `beam_size` of its hypotheses have ended; the loop stops when
every sentence is done or at `max_len`. With `beam_size=1` this is exactly greedy
decoding: the single beam ends at the first arg-max `<eos>`. `model` is an
`EncoderDecoder` or an `ensemble.Ensemble` (the mean of its members' log-probabilities).

The decoder's recurrent state is a dict whose leaves all have the batch on axis 0 (see
`models`); here the batch axis holds `batch * beam_size` rows, and surviving beams are
gathered with one `jax.tree.map`. The loop is a `lax.while_loop`, so the whole search
compiles once per (batch, source length) shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seq2seq_jax import models
from seq2seq_jax.data import text
from seq2seq_jax.decoding import ensemble

Array = jax.Array
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
  model: models.EncoderDecoder | ensemble.Ensemble,
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
  tokens (`ensemble.output_limit`): its "last step" comes earlier.
  """
  if beam_size < 1:
    raise ValueError(f'beam_size must be at least 1, got {beam_size}')
  if max_len < 1:
    raise ValueError(f'max_len must be at least 1, got {max_len}')
  batch, k = src.shape[0], beam_size
  init_fn, step_fn = ensemble.steps(model)
  state = init_fn(params, src, src_len)
  limit = ensemble.output_limit(src_len, max_len, max_len_ratio)[:, None]  # [batch, 1]
  # [batch, ...] -> [batch * beam, ...]: beam j of sentence b is row b * beam + j.
  state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state)
  base = (jnp.arange(batch) * k)[:, None]  # [batch, 1]: each sentence's first row

  def cond(carry: dict) -> Array:
    return (carry['i'] < max_len) & ~jnp.all(carry['num_finished'] >= k)

  def body(carry: dict) -> dict:
    i = carry['i']
    logits, new_state = step_fn(params, carry['tokens'].reshape(-1), carry['state'])
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

    # Finished: `<eos>` candidates among the top k (all of the top k at the last step).
    top_scores, top_idx = jax.lax.top_k(cand, k)
    _, top_tok, top_seqs = extend(top_idx)
    ends = (top_tok == text.EOS_ID) | last
    ends &= jnp.isfinite(top_scores) & (carry['num_finished'] < k)[:, None]
    new_fin = jnp.where(ends, top_scores / length_penalty(i + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([carry['fin_score'], new_fin], axis=1)
    all_seqs = jnp.concatenate([carry['fin_seq'], top_seqs], axis=1)
    fin_score, keep = jax.lax.top_k(all_scores, k)
    fin_seq = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)
    num_finished = carry['num_finished'] + jnp.sum(ends, axis=1)

    # Alive: the best k candidates that do not end in `<eos>`.
    alive_logp, alive_idx = jax.lax.top_k(jnp.where(is_eos, NEG_INF, cand), k)
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
      'num_finished': num_finished,
    }

  init = {
    'i': jnp.asarray(0),
    'tokens': jnp.full((batch, k), text.BOS_ID, jnp.int32),
    'state': state,
    'alive_seq': jnp.zeros((batch, k, max_len), jnp.int32),
    # Only the first beam is real at the start; the others are copies that must not win.
    'alive_logp': jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1)),
    'fin_seq': jnp.zeros((batch, k, max_len), jnp.int32),
    'fin_score': jnp.full((batch, k), NEG_INF, jnp.float32),
    'num_finished': jnp.zeros((batch,), jnp.int32),
  }
  out = jax.lax.while_loop(cond, body, init)
  return out['fin_seq'], out['fin_score']


def make_beam_search(
  model: models.EncoderDecoder | ensemble.Ensemble,
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


def make_best(
  model: models.EncoderDecoder | ensemble.Ensemble,
  *,
  beam_size: int,
  max_len: int,
  alpha: float = 0.75,
  max_len_ratio: float = 0.0,
) -> Callable[[Any, Array, Array], Array]:
  """A jitted `(params, src, src_len) -> ids [batch, max_len]`: the best hypothesis of each
  sentence, in the same form as `greedy_search.greedy_decode`'s output."""
  search = make_beam_search(
    model, beam_size=beam_size, max_len=max_len, alpha=alpha, max_len_ratio=max_len_ratio
  )
  return jax.jit(lambda params, src, src_len: search(params, src, src_len)[0][:, 0])


def sequence_scores(
  model: models.EncoderDecoder, params: Any, src: Array, src_len: Array, ids: Array, alpha: float
) -> Array:
  """The length-normalised score beam search gives each hypothesis ids [batch, max_len]
  (as `beam_search` returns them), computed by teacher forcing: for checks and rescoring."""
  length = jnp.where(
    jnp.any(ids == text.EOS_ID, axis=1),
    jnp.argmax(ids == text.EOS_ID, axis=1) + 1,
    ids.shape[1],
  )
  tgt_in = jnp.concatenate([jnp.full((ids.shape[0], 1), text.BOS_ID, ids.dtype), ids[:, :-1]], 1)
  logits = model.apply({'params': params}, src, src_len, tgt_in)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_logp = jnp.take_along_axis(logp, ids[:, :, None], axis=-1)[..., 0]
  real = jnp.arange(ids.shape[1])[None, :] < length[:, None]
  return jnp.sum(jnp.where(real, token_logp, 0.0), axis=1) / length_penalty(length, alpha)
