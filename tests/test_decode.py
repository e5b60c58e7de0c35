"""Tests for greedy decoding: equal to a step-by-step Python loop, padding, early stop,
and the same translation for a sentence alone or in a batch."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import models
from seq2seq_jax.data import input_pipeline, text
from seq2seq_jax.decoding import greedy_search

SRC_VOCAB, TGT_VOCAB, MAX_LEN, WIDTH = 19, 23, 8, 7

# The book's four examples, as made-up training pairs that cover their words.
BOOK = ['go .', 'i lost .', "he's calm .", "i'm home ."]
PAIRS = [
  ('Go.', 'Va !'),
  ('I lost.', "J'ai perdu."),
  ("He's calm.", 'Il est calme.'),
  ("I'm home.", 'Je suis chez moi.'),
  ('I lost the game.', "J'ai perdu la partie."),
  ("He's home.", 'Il est chez lui.'),
  ('Go home.', 'Rentre chez toi.'),
  ("I'm calm.", 'Je suis calme.'),
]


class CountingDecoder(models.Seq2SeqDecoder):
  """The seed's decoder, counting its calls (one per greedy step) on the host."""

  def __call__(self, tgt_in: jax.Array, state: dict, *, train: bool = False) -> tuple:
    jax.debug.callback(lambda t: CALLS.append(t.shape), tgt_in)
    return super().__call__(tgt_in, state, train=train)


CALLS: list = []


@functools.cache
def _model(decoder: str) -> models.EncoderDecoder:
  model = models.build_model(
    src_vocab_size=SRC_VOCAB,
    tgt_vocab_size=TGT_VOCAB,
    embed_size=8,
    num_hiddens=16,
    num_layers=2,
    decoder=decoder,
  )
  if decoder == 'plain':
    sizes = dict(vocab_size=TGT_VOCAB, embed_size=8, num_hiddens=16, num_layers=2)
    model = model.clone(decoder=CountingDecoder(**sizes))
  return model


@functools.cache
def _greedy(decoder: str) -> Callable:
  """One compiled greedy decoder per model, shared by the tests (fewer compilations)."""
  return greedy_search.make_greedy(_model(decoder), MAX_LEN)


def _params(model: models.EncoderDecoder, draw: Callable, seed: int, eos_bias: float) -> Any:
  ids = jnp.ones((2, WIDTH), jnp.int32)
  return _shift_bias(draw(model, ids, jnp.array([WIDTH, 3]), ids, seed=seed, scale=1.0), eos_bias)


def _shift_bias(params: Any, eos_bias: float) -> Any:
  """A shift of the <eos> logit sets how soon sentences end; like a trained model, this one
  never predicts <pad> or <bos> (they are never targets)."""
  bias = params['decoder']['dense']['bias'].at[text.EOS_ID].add(eos_bias)
  bias = bias.at[jnp.array([text.PAD_ID, text.BOS_ID])].add(-50.0)
  dense = {**params['decoder']['dense'], 'bias': bias}
  return {**params, 'decoder': {**params['decoder'], 'dense': dense}}


def _lengths(out: np.ndarray) -> list[int]:
  return [int((row != text.PAD_ID).sum()) for row in out]


def _find_params(
  decoder: str, draw: Callable, src: np.ndarray, src_len: np.ndarray, accept: Callable
) -> tuple[Any, np.ndarray]:
  """Random models mostly say the same thing for every source: search a few for one whose
  greedy output `accept`s (sentences of several lengths), so that the tests see variety."""
  for seed in range(20):
    base = _params(_model(decoder), draw, seed, 0.0)
    for eos_bias in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
      params = _shift_bias(base, eos_bias)
      out = np.asarray(_greedy(decoder)(params, src, src_len))
      if accept(out):
        return params, out
  raise AssertionError('no random model with varied output found')


def _varied(out: np.ndarray) -> bool:
  return len(set(_lengths(out))) >= 3


def _all_end_early(out: np.ndarray) -> bool:
  lengths = _lengths(out)
  return len(set(lengths)) >= 2 and 3 <= max(lengths) < MAX_LEN


def _sources(seed: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, WIDTH + 1, batch)
  ids = [list(rng.integers(4, SRC_VOCAB, n - 1)) + [text.EOS_ID] for n in lengths]
  return input_pipeline.make_source_batch(ids, WIDTH)


def _python_greedy(model: models.EncoderDecoder, params: Any, src: Any, src_len: Any) -> np.ndarray:
  """The reference: `decode_step` and argmax one step at a time, bookkeeping in Python."""
  variables = {'params': params}
  state = jax.jit(lambda s, n: model.apply(variables, s, n, method=model.init_decoder))(
    src, src_len
  )
  step = jax.jit(
    lambda t, s: model.apply(variables, t, s, method=models.EncoderDecoder.decode_step)
  )
  batch = src.shape[0]
  out = np.zeros((batch, MAX_LEN), np.int32)
  done = np.zeros(batch, bool)
  tokens = jnp.full((batch,), text.BOS_ID, jnp.int32)
  for i in range(MAX_LEN):
    logits, state = step(tokens, state)
    nxt = np.asarray(logits).argmax(-1)
    out[:, i] = np.where(done, 0, nxt)
    done |= nxt == text.EOS_ID
    tokens = jnp.asarray(nxt, jnp.int32)
  return out


def _check_padding_after_eos(out: np.ndarray) -> None:
  for row in out:
    eos = np.flatnonzero(row == text.EOS_ID)
    if len(eos):
      assert np.all(row[eos[0] + 1 :] == text.PAD_ID), row
      assert np.all(row[: eos[0]] != text.PAD_ID), row
    else:
      assert np.all(row != text.PAD_ID), row


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_greedy_equals_python_loop(decoder: str, random_params: Callable) -> None:
  src, src_len = _sources(0, 6)
  params, out = _find_params(decoder, random_params, src, src_len, _varied)
  assert out.shape == (6, MAX_LEN) and out.dtype == np.int32
  np.testing.assert_array_equal(out, _python_greedy(_model(decoder), params, src, src_len))
  _check_padding_after_eos(out)
  assert text.BOS_ID not in out


@pytest.mark.parametrize('eos_bias, steps', [(50.0, 1), (-50.0, MAX_LEN)])
def test_greedy_stops_when_every_row_is_done(
  eos_bias: float, steps: int, random_params: Callable
) -> None:
  params = _params(_model('plain'), random_params, seed=0, eos_bias=eos_bias)
  src, src_len = _sources(1, 6)
  CALLS.clear()
  out = np.asarray(_greedy('plain')(params, src, src_len))
  jax.effects_barrier()
  assert out.shape == (6, MAX_LEN)  # always max_len columns
  assert len(CALLS) == steps  # one decoder call per step, no more
  if eos_bias > 0:  # <eos> first everywhere: then only padding
    np.testing.assert_array_equal(out[:, 0], text.EOS_ID)
    np.testing.assert_array_equal(out[:, 1:], text.PAD_ID)
  else:  # no <eos> at all: max_len real tokens
    assert np.all(out != text.PAD_ID) and np.all(out != text.EOS_ID)


def test_greedy_stops_at_the_last_rows_eos(random_params: Callable) -> None:
  src, src_len = _sources(2, 6)
  params, out = _find_params('plain', random_params, src, src_len, _all_end_early)
  CALLS.clear()
  np.testing.assert_array_equal(_greedy('plain')(params, src, src_len), out)
  jax.effects_barrier()
  _check_padding_after_eos(out)
  assert np.all((out == text.EOS_ID).sum(1) == 1)
  assert len(CALLS) == max(_lengths(out)) < MAX_LEN  # up to the last row's <eos>, no further


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_batching_invariance_on_the_books_examples(decoder: str, random_params: Callable) -> None:
  src_tok = text.WordTokenizer.train((en for en, _ in PAIRS), min_freq=1)
  assert src_tok.vocab_size <= SRC_VOCAB
  greedy = _greedy(decoder)
  book_ids = [src_tok.encode(s) for s in BOOK]
  assert all(text.UNK_ID not in ids for ids in book_ids)
  # The book's four among two other sentences (of other lengths).
  others = [src_tok.encode(en) for en, _ in PAIRS[4:6]]
  rows = [*book_ids, *others]
  src, src_len = input_pipeline.make_source_batch(rows, WIDTH)
  params, together = _find_params(decoder, random_params, src, src_len, _varied)
  # Each alone, in a batch of one.
  for i, sentence in enumerate(BOOK):
    alone = np.asarray(greedy(params, src[i : i + 1], src_len[i : i + 1]))
    np.testing.assert_array_equal(alone[0], together[i], err_msg=sentence)
  # In another order.
  order = [4, 2, 5, 0, 3, 1]
  shuffled_src, shuffled_len = input_pipeline.make_source_batch([rows[i] for i in order], WIDTH)
  np.testing.assert_array_equal(greedy(params, shuffled_src, shuffled_len), together[order])
  # With more source padding.
  wide_src, wide_len = input_pipeline.make_source_batch(rows, WIDTH + 5)
  np.testing.assert_array_equal(greedy(params, wide_src, wide_len), together)
