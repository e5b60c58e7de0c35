"""Beam search: beam size 1 is greedy decoding, a wide beam finds the brute-force best
hypotheses, the scores it returns are the model's, and it works for both decoders."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import models
from seq2seq_jax.data import text
from seq2seq_jax.decoding import beam_search, greedy_search

SRC_VOCAB = 9
EOS_BIAS = {'plain': 1.25, 'attention': 0.5}  # random models whose sentences end at times


def _beam(model: models.EncoderDecoder, params: dict, src, src_len, **kw):  # noqa: ANN001, ANN202
  return beam_search.make_beam_search(model, **kw)(params, src, src_len)


def _rescore(model: models.EncoderDecoder, alpha: float):  # noqa: ANN202
  return jax.jit(lambda *args: beam_search.sequence_scores(model, *args, alpha=alpha))


@functools.cache
def _model(
  decoder: str, tgt_vocab: int, sharpen: float = 3.0, eos_bias: float = 0.0
) -> tuple[models.EncoderDecoder, dict]:
  """A small random model; its output layer is scaled up so that the next-token
  distributions are peaked as in a trained model, and `eos_bias` makes `<eos>` likelier."""
  model = models.build_model(
    src_vocab_size=SRC_VOCAB,
    tgt_vocab_size=tgt_vocab,
    embed_size=8,
    num_hiddens=12,
    num_layers=2,
    decoder=decoder,
  )
  src = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(1), src, jnp.array([4]), src)['params']
  dense = params['decoder']['dense']
  dense = jax.tree.map(lambda x: x * sharpen, dense)
  dense['bias'] = dense['bias'].at[text.EOS_ID].add(eos_bias)
  params['decoder']['dense'] = dense
  return model, params


def _sources(batch: int, time: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, time + 1, size=batch)
  src = rng.integers(3, SRC_VOCAB, size=(batch, time))
  src = np.where(np.arange(time)[None, :] < lengths[:, None], src, 0)
  return jnp.asarray(src, jnp.int32), jnp.asarray(lengths, jnp.int32)


def _all_hypotheses(vocab: int, max_len: int) -> np.ndarray:
  """Every sequence beam search may return: non-`<eos>` tokens then `<eos>`, or
  `max_len` tokens; padded with 0 to [n, max_len]."""
  others = [t for t in range(vocab) if t != text.EOS_ID]
  rows = []
  for length in range(1, max_len + 1):
    for prefix in itertools.product(others, repeat=length - 1):
      last = range(vocab) if length == max_len else [text.EOS_ID]
      for token in last:
        rows.append(list(prefix) + [token] + [0] * (max_len - length))
  return np.array(rows, np.int32)


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_beam_size_one_is_greedy(decoder: str) -> None:
  model, params = _model(decoder, tgt_vocab=7, eos_bias=EOS_BIAS[decoder])
  src, src_len = _sources(batch=24, time=6)
  greedy = greedy_search.make_greedy(model, max_len=8)(params, src, src_len)
  seqs, scores = _beam(model, params, src, src_len, beam_size=1, max_len=8, alpha=0.75)
  assert seqs.shape == (24, 1, 8) and scores.shape == (24, 1)
  np.testing.assert_array_equal(np.asarray(seqs[:, 0]), np.asarray(greedy))
  ended = np.any(np.asarray(greedy) == text.EOS_ID, axis=1)
  assert 0 < ended.sum() < len(ended), 'want sentences that end and some that run to max_len'


@pytest.mark.parametrize('decoder,alpha', [('plain', 0.75), ('attention', 0.0)])
def test_wide_beam_finds_the_brute_force_best(decoder: str, alpha: float) -> None:
  """Vocabulary 5, max_len 3: a beam of 20 holds every prefix, so the search is exact and
  its top 20 must be the brute-force top 20 of all 101 possible hypotheses."""
  vocab, max_len, beam = 5, 3, 20
  model, params = _model(decoder, tgt_vocab=vocab, sharpen=1.5)
  src, src_len = _sources(batch=3, time=5, seed=1)
  seqs, scores = _beam(model, params, src, src_len, beam_size=beam, max_len=max_len, alpha=alpha)
  hyps = _all_hypotheses(vocab, max_len)
  rescore = _rescore(model, alpha)
  assert len(hyps) == 1 + 4 + 16 * 5
  for b in range(src.shape[0]):
    n = len(hyps)
    brute = rescore(
      params, jnp.repeat(src[b : b + 1], n, 0), jnp.repeat(src_len[b : b + 1], n, 0), hyps
    )
    order = np.argsort(-np.asarray(brute), kind='stable')[:beam]
    np.testing.assert_allclose(scores[b], np.asarray(brute)[order], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seqs[b, 0], hyps[order[0]])


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_scores_are_the_models_and_sorted(decoder: str) -> None:
  """A narrow beam on a larger vocabulary: whatever it returns, each score is the
  length-normalised log-probability of its hypothesis, best first, and the best is at
  least as good as greedy's."""
  alpha, max_len = 0.75, 7
  model, params = _model(decoder, tgt_vocab=7, eos_bias=EOS_BIAS[decoder])
  src, src_len = _sources(batch=8, time=6, seed=2)
  seqs, scores = _beam(model, params, src, src_len, beam_size=3, max_len=max_len, alpha=alpha)
  rescore = _rescore(model, alpha)
  assert np.all(np.isfinite(scores))
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)
  for j in range(3):
    rescored = rescore(params, src, src_len, seqs[:, j])
    np.testing.assert_allclose(scores[:, j], rescored, rtol=1e-5, atol=1e-5)
  # Padding follows the first <eos>, and nothing but padding.
  for row in np.asarray(seqs).reshape(-1, max_len):
    if text.EOS_ID in row:
      end = list(row).index(text.EOS_ID)
      assert not row[end + 1 :].any()


def test_make_best_returns_the_top_hypothesis_compiled() -> None:
  model, params = _model('attention', tgt_vocab=7, eos_bias=EOS_BIAS['attention'])
  src, src_len = _sources(batch=5, time=4, seed=3)
  best = beam_search.make_best(model, beam_size=4, max_len=6, alpha=0.75)(params, src, src_len)
  seqs, _ = beam_search.beam_search(model, params, src, src_len, beam_size=4, max_len=6, alpha=0.75)
  np.testing.assert_array_equal(best, seqs[:, 0])


class CountingDecoder(models.Seq2SeqDecoder):
  """The seed's decoder, counting its calls (one per search step) on the host."""

  def __call__(self, tgt_in: jax.Array, state: dict, *, train: bool = False) -> tuple:
    jax.debug.callback(lambda t: CALLS.append(t.shape), tgt_in)
    return super().__call__(tgt_in, state, train=train)


CALLS: list = []


def test_search_stops_when_every_sentence_has_beam_size_endings() -> None:
  """With `<eos>` far likelier than anything, the first step ends the one real beam and
  the second ends all 3 alive beams: 2 steps, not max_len."""
  model, params = _model('plain', tgt_vocab=7, eos_bias=EOS_BIAS['plain'])
  dense = dict(params['decoder']['dense'])
  dense['bias'] = dense['bias'].at[text.EOS_ID].add(20.0)
  params = {**params, 'decoder': {**params['decoder'], 'dense': dense}}
  sizes = dict(vocab_size=7, embed_size=8, num_hiddens=12, num_layers=2)
  model = model.clone(decoder=CountingDecoder(**sizes))
  src, src_len = _sources(batch=4, time=5, seed=4)
  CALLS.clear()
  seqs, scores = _beam(model, params, src, src_len, beam_size=3, max_len=10, alpha=0.75)
  jax.effects_barrier()
  assert CALLS == [(12, 1), (12, 1)]
  np.testing.assert_array_equal(seqs[:, 0, :2], [[text.EOS_ID, 0]] * 4)
  assert np.all(np.isfinite(scores)) and np.all(scores[:, 0] > -1e-3)


def test_bad_arguments_are_refused() -> None:
  model, params = _model('plain', tgt_vocab=7, eos_bias=EOS_BIAS['plain'])
  src, src_len = _sources(batch=1, time=3)
  with pytest.raises(ValueError, match='beam_size'):
    beam_search.beam_search(model, params, src, src_len, beam_size=0, max_len=3)
