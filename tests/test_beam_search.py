"""Beam search: beam size 1 without length normalisation is greedy decoding, a wide beam
finds the brute-force best hypotheses, the scores it returns are the model's, it stops only
when no alive hypothesis can still win, and it works for both decoders."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import models
from seq2seq_jax.data import text
from seq2seq_jax.decoding import beam_search, ensemble, greedy_search

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
  """Without length normalisation beam 1 is greedy decoding exactly; with it, beam 1 may go
  on past greedy's `<eos>`, and only to a hypothesis that scores at least as high."""
  model, params = _model(decoder, tgt_vocab=7, eos_bias=EOS_BIAS[decoder])
  src, src_len = _sources(batch=24, time=6)
  greedy = greedy_search.make_greedy(model, max_len=8)(params, src, src_len)
  seqs, scores = _beam(model, params, src, src_len, beam_size=1, max_len=8, alpha=0.0)
  assert seqs.shape == (24, 1, 8) and scores.shape == (24, 1)
  np.testing.assert_array_equal(np.asarray(seqs[:, 0]), np.asarray(greedy))
  ended = np.any(np.asarray(greedy) == text.EOS_ID, axis=1)
  assert 0 < ended.sum() < len(ended), 'want sentences that end and some that run to max_len'
  _, scores = _beam(model, params, src, src_len, beam_size=1, max_len=8, alpha=0.75)
  greedy_scores = _rescore(model, 0.75)(params, src, src_len, greedy)
  assert np.all(np.asarray(scores[:, 0]) >= np.asarray(greedy_scores) - 1e-5)


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_beam_never_scores_below_greedy(decoder: str) -> None:
  """256 sources, beams of 2 to 4: the best hypothesis scores at least as high as greedy's
  under the same scoring. (Beam search may in general lose the greedy path when k other
  prefixes outrank it; on these models it does not, and a search that stopped once k
  hypotheses had ended lost to greedy on up to 30 of the 256 here.)"""
  model, params = _model(decoder, tgt_vocab=7, eos_bias=EOS_BIAS[decoder])
  src, src_len = _sources(batch=256, time=6, seed=5)
  greedy = greedy_search.make_greedy(model, max_len=10)(params, src, src_len)
  greedy_scores = np.asarray(_rescore(model, 0.75)(params, src, src_len, greedy))
  for k in (2, 3, 4):
    _, scores = _beam(model, params, src, src_len, beam_size=k, max_len=10, alpha=0.75)
    best = np.asarray(scores[:, 0])
    assert np.all(best >= greedy_scores - 1e-5), (k, np.flatnonzero(best < greedy_scores - 1e-5))


class Bigram(ensemble.Ensemble):
  """A made-up model for hand-computed searches: the next token's probabilities depend only
  on the last token (`table[last]`), whatever the source."""

  def __init__(self, table: np.ndarray) -> None:
    super().__init__(model=None, size=1)
    object.__setattr__(self, 'logits', jnp.log(jnp.asarray(table, jnp.float32)))

  def init(self, params, src, src_len, max_steps=0):  # noqa: ANN001, ANN201
    return {'unused': jnp.zeros(src.shape[0])}

  def step(self, params, tokens, state):  # noqa: ANN001, ANN201
    return self.logits[tokens], state


def _bigram() -> Bigram:
  """Tokens 0 pad, 1 bos, 2 eos, 3 A, 4 B, 5 C. From `<bos>`: A 0.6, `<eos>` 0.3, B 0.1;
  A: C 0.95, `<eos>` 0.05; B: `<eos>`; C: `<eos>`. With a beam of 2, step 1 finishes
  `<eos>` (log 0.3) and keeps A and B; step 2 finishes B `<eos>` (log 0.1) and keeps A C:
  two hypotheses have ended, but A C `<eos>` (log 0.57) is still to come and beats both."""
  table = np.full((6, 6), 1e-9)
  table[text.BOS_ID, [3, text.EOS_ID, 4]] = [0.6, 0.3, 0.1]
  table[3, [5, text.EOS_ID]] = [0.95, 0.05]
  table[[0, text.EOS_ID, 4, 5], text.EOS_ID] = 1.0
  return Bigram(table / table.sum(1, keepdims=True))


@pytest.mark.parametrize('alpha', [0.0, 0.75])
def test_an_early_ending_loses_to_a_longer_hypothesis_found_later(alpha: float) -> None:
  src, src_len = jnp.ones((3, 2), jnp.int32), jnp.array([2, 2, 2])
  seqs, scores = beam_search.beam_search(
    _bigram(), {}, src, src_len, beam_size=2, max_len=6, alpha=alpha
  )
  eos = text.EOS_ID
  expected = [[3, 5, eos, 0, 0, 0], [eos, 0, 0, 0, 0, 0]]
  np.testing.assert_array_equal(seqs, [expected] * 3)
  logp = np.log([0.6 * 0.95 * 1.0, 0.3])
  want = logp / np.array([3.0, 1.0]) ** alpha
  np.testing.assert_allclose(scores, [want] * 3, rtol=1e-5)


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


def test_search_stops_once_no_alive_beam_can_win() -> None:
  """With `<eos>` far likelier than anything (every other token about -20 in log P), step 1
  ends the one real beam and step 2 the three alive ones (the worst finished: about
  -20 / 2**0.75). An alive beam of n tokens, about -20 n in log P, could at best end at the
  length limit with -20 n / 30**0.75: the search stops once that is below the worst
  finished, at n > (30 / 2)**0.75 = 7.6, after 8 or 9 steps of a possible 30."""
  model, params = _model('plain', tgt_vocab=7, eos_bias=EOS_BIAS['plain'])
  dense = dict(params['decoder']['dense'])
  dense['bias'] = dense['bias'].at[text.EOS_ID].add(20.0)
  params = {**params, 'decoder': {**params['decoder'], 'dense': dense}}
  sizes = dict(vocab_size=7, embed_size=8, num_hiddens=12, num_layers=2)
  model = model.clone(decoder=CountingDecoder(**sizes))
  src, src_len = _sources(batch=4, time=5, seed=4)
  CALLS.clear()
  seqs, scores = _beam(model, params, src, src_len, beam_size=3, max_len=30, alpha=0.75)
  jax.effects_barrier()
  assert 8 <= len(CALLS) <= 9 and set(CALLS) == {(12, 1)}
  np.testing.assert_array_equal(seqs[:, 0, :2], [[text.EOS_ID, 0]] * 4)
  assert np.all(np.isfinite(scores)) and np.all(scores[:, 0] > -1e-3)
  # Beam 1 (alpha 0) stops at the first step: nothing can beat an <eos> of log P ~ 0.
  CALLS.clear()
  _beam(model, params, src, src_len, beam_size=1, max_len=30, alpha=0.0)
  jax.effects_barrier()
  assert CALLS == [(4, 1)]


def test_bad_arguments_are_refused() -> None:
  model, params = _model('plain', tgt_vocab=7, eos_bias=EOS_BIAS['plain'])
  src, src_len = _sources(batch=1, time=3)
  with pytest.raises(ValueError, match='beam_size'):
    beam_search.beam_search(model, params, src, src_len, beam_size=0, max_len=3)


def test_the_compiled_search_uses_top_k_not_a_full_sort() -> None:
  """XLA on CPU turns `top_k` into a sort of all `beam * vocab` candidates when its output
  is sliced elsewhere (20x slower on a real vocabulary): the compiled search must not sort."""
  model, params = _model('attention', tgt_vocab=7, eos_bias=EOS_BIAS['attention'])
  src, src_len = _sources(batch=2, time=4, seed=6)
  search = beam_search.make_beam_search(model, beam_size=3, max_len=6, alpha=0.75)
  hlo = search.lower(params, src, src_len).compile().as_text()
  assert ' sort(' not in hlo
