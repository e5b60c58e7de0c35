"""Ensembles, sampling and output length limits in the searches, on small random models:
an ensemble of one is the model, an ensemble's step is the mean of its members'
log-probabilities, beam 1 of an ensemble is its greedy; samples are reproducible,
follow the model's distribution and do not depend on the batch; the ratio limit cuts
each sentence at its own length."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.data import text
from seq2seq_jax.decoding import beam_search, ensemble, greedy_search, interface
from tests.test_beam_search import EOS_BIAS, _model, _sources

VOCAB, MAX_LEN = 7, 8


@functools.cache
def _members(decoder: str, n: int) -> tuple[object, list]:
  """`n` random models of one shape (different seeds), with the test's output scaling."""
  model, first = _model(decoder, tgt_vocab=VOCAB, eos_bias=EOS_BIAS[decoder])
  src = jnp.ones((1, 4), jnp.int32)
  params = [first]
  for seed in range(2, n + 1):
    p = jax.jit(model.init)(jax.random.key(seed), src, jnp.array([4]), src)['params']
    p['decoder']['dense'] = jax.tree.map(lambda x: x * 3.0, p['decoder']['dense'])
    params.append(p)
  return model, params


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_an_ensemble_of_one_is_the_model(decoder: str) -> None:
  model, (params,) = _members(decoder, 1)
  one = ensemble.Ensemble(model, 1)
  stacked = ensemble.stack([params])
  src, src_len = _sources(batch=12, time=6)
  np.testing.assert_array_equal(
    greedy_search.make_greedy(one, MAX_LEN)(stacked, src, src_len),
    greedy_search.make_greedy(model, MAX_LEN)(params, src, src_len),
  )
  seqs, scores = beam_search.make_beam_search(model, beam_size=3, max_len=MAX_LEN)(
    params, src, src_len
  )
  e_seqs, e_scores = beam_search.make_beam_search(one, beam_size=3, max_len=MAX_LEN)(
    stacked, src, src_len
  )
  np.testing.assert_array_equal(e_seqs, seqs)
  np.testing.assert_allclose(e_scores, scores, rtol=1e-5, atol=1e-5)


def test_an_ensembles_step_is_the_mean_of_its_members_log_probabilities() -> None:
  model, params = _members('attention', 3)
  ens = ensemble.Ensemble(model, 3)
  src, src_len = _sources(batch=5, time=6, seed=1)
  tokens = jnp.asarray([3, 4, 5, 6, 2], jnp.int32)
  single = interface.decodable(model)
  init, step = single.init, single.step
  expected = np.mean(
    [jax.nn.log_softmax(step(p, tokens, init(p, src, src_len))[0]) for p in params], axis=0
  )
  stacked = ensemble.stack(params)
  logits, state = jax.jit(ens.step)(stacked, tokens, jax.jit(ens.init)(stacked, src, src_len))
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
  # The state keeps the batch first (beam search gathers rows of axis 0), members second.
  assert all(x.shape[:2] == (5, 3) for x in jax.tree.leaves(state))
  members_disagree = np.asarray(
    [np.argmax(step(p, tokens, init(p, src, src_len))[0], -1) for p in params]
  )
  assert (members_disagree != members_disagree[0]).any(), 'want members that differ'


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_beam_one_of_an_ensemble_is_its_greedy(decoder: str) -> None:
  model, params = _members(decoder, 2)
  ens, stacked = ensemble.Ensemble(model, 2), ensemble.stack(params)
  src, src_len = _sources(batch=16, time=6, seed=2)
  greedy = greedy_search.make_greedy(ens, MAX_LEN)(stacked, src, src_len)
  best = beam_search.make_best(ens, beam_size=1, max_len=MAX_LEN, alpha=0.0)(stacked, src, src_len)
  np.testing.assert_array_equal(best, greedy)
  ended = np.any(np.asarray(greedy) == text.EOS_ID, axis=1)
  assert ended.any()


def _lengths(ids: np.ndarray) -> np.ndarray:
  """Output lengths: up to and including `<eos>`, else every non-padding token."""
  ids = np.asarray(ids)
  has_eos = (ids == text.EOS_ID).any(-1)
  return np.where(has_eos, np.argmax(ids == text.EOS_ID, -1) + 1, (ids != 0).sum(-1))


def test_the_ratio_limit_cuts_each_sentence_at_its_own_length() -> None:
  """max_len_ratio=0.5: a sentence of n source tokens gets at most ceil(n / 2) output
  tokens; within that limit greedy outputs are the unlimited ones, cut; beam search keeps
  every hypothesis within its sentence's limit."""
  model, params = _model('plain', tgt_vocab=VOCAB)  # no <eos> bias: long outputs
  src, src_len = _sources(batch=24, time=7, seed=3)
  limit = np.ceil(0.5 * np.asarray(src_len)).astype(int)
  free = np.asarray(greedy_search.make_greedy(model, MAX_LEN)(params, src, src_len))
  cut = np.asarray(
    greedy_search.make_greedy(model, MAX_LEN, max_len_ratio=0.5)(params, src, src_len)
  )
  assert (_lengths(free) > limit).any(), 'want outputs longer than the limit'
  assert (_lengths(cut) <= limit).all()
  for row, n in enumerate(limit):
    np.testing.assert_array_equal(cut[row, :n], free[row, :n])
    assert not cut[row, n:].any()
  seqs, scores = beam_search.make_beam_search(
    model, beam_size=3, max_len=MAX_LEN, max_len_ratio=0.5
  )(params, src, src_len)
  assert np.isfinite(scores).all()
  assert (_lengths(np.asarray(seqs).reshape(-1, MAX_LEN)).reshape(24, 3) <= limit[:, None]).all()
  np.testing.assert_array_equal(interface.output_limit(src_len, 3, 0.5), np.minimum(limit, 3))


def _keys(seed: int, rows: list[int]) -> jax.Array:
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), jnp.asarray(rows))


def test_samples_are_reproducible_and_do_not_depend_on_the_batch() -> None:
  model, params = _model('attention', tgt_vocab=VOCAB, sharpen=1.0)
  src, src_len = _sources(batch=16, time=6, seed=4)
  sample = greedy_search.make_sampler(model, MAX_LEN, greedy_search.Sampling(temperature=1.0))
  keys = _keys(0, list(range(16)))
  a = np.asarray(sample(params, src, src_len, keys))
  np.testing.assert_array_equal(a, sample(params, src, src_len, keys))
  other = np.asarray(sample(params, src, src_len, _keys(1, list(range(16)))))
  assert (a != other).any()
  # Rows 3..10 alone, and in reverse order, with their own keys: the same samples.
  part = np.asarray(sample(params, src[3:11], src_len[3:11], keys[3:11]))
  np.testing.assert_array_equal(part, a[3:11])
  rev = np.asarray(sample(params, src[3:11][::-1], src_len[3:11][::-1], keys[3:11][::-1]))
  np.testing.assert_array_equal(rev[::-1], a[3:11])
  # top_k=1 is greedy; so is a temperature near 0.
  greedy = np.asarray(greedy_search.make_greedy(model, MAX_LEN)(params, src, src_len))
  for sampling in (greedy_search.Sampling(top_k=1), greedy_search.Sampling(temperature=1e-4)):
    got = greedy_search.make_sampler(model, MAX_LEN, sampling)(params, src, src_len, keys)
    np.testing.assert_array_equal(got, greedy)
  with pytest.raises(ValueError, match='temperature'):
    greedy_search.Sampling(temperature=0.0)


def test_samples_follow_the_models_distribution_within_top_k() -> None:
  """4,000 first tokens of one sentence, at temperature 2 and top_k 3: only the 3 likeliest
  tokens, in the proportions of softmax(logits / 2) renormalised over them."""
  model, params = _model('attention', tgt_vocab=VOCAB, sharpen=1.0)
  src, src_len = _sources(batch=1, time=5, seed=5)
  n = 4000
  many_src, many_len = jnp.repeat(src, n, 0), jnp.repeat(src_len, n, 0)
  sampling = greedy_search.Sampling(temperature=2.0, top_k=3)
  first = np.asarray(
    greedy_search.make_sampler(model, 1, sampling)(
      params, many_src, many_len, _keys(7, list(range(n)))
    )
  )[:, 0]
  single = interface.decodable(model)
  init, step = single.init, single.step
  logits = np.asarray(step(params, jnp.asarray([text.BOS_ID]), init(params, src, src_len))[0][0])
  top = np.argsort(-logits)[:3]
  p = np.exp((logits[top] - logits[top].max()) / 2.0)
  p /= p.sum()
  counts = np.bincount(first, minlength=VOCAB)
  assert counts.sum() == counts[top].sum() == n  # nothing outside the top 3
  # Each frequency within 4.5 standard deviations of its probability.
  freq = counts[top] / n
  assert (np.abs(freq - p) <= 4.5 * np.sqrt(p * (1 - p) / n)).all(), (freq, p)
  assert p.min() > 0.05, 'want three tokens each drawn often'
