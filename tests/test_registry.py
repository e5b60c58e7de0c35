"""The model registry and the decoding interface: a family registered in a test (a toy
bigram model, no encoder) is built from `model.arch` and decoded by the unchanged greedy,
sampling, beam and ensemble searches; an unknown arch names the registered families;
the recurrent decoders keep the parameter trees of their checkpoints."""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from seq2seq_jax import errors, models
from seq2seq_jax.data import text
from seq2seq_jax.decoding import beam_search, ensemble, greedy_search, interface
from seq2seq_jax.models import registry

SRC_VOCAB, VOCAB, MAX_LEN = 6, 7, 6


class ToyBigram(nn.Module):
  """A whole model family in a dozen lines: the next token's logits are `table[last
  token]` plus a bias summed over the source's tokens. Its state is that bias and a step
  counter, both batch first, as the decoding interface asks."""

  src_vocab_size: int
  tgt_vocab_size: int

  def setup(self) -> None:
    self.table = self.param('table', nn.initializers.normal(1.0), (self.tgt_vocab_size,) * 2)
    self.source = nn.Embed(
      self.src_vocab_size, self.tgt_vocab_size, embedding_init=nn.initializers.normal(1.0)
    )

  def init_decoder(
    self, src: jax.Array, src_len: jax.Array, *, train: bool = False, max_steps: int = 0
  ) -> dict:
    real = jnp.arange(src.shape[1])[None, :] < src_len[:, None]
    bias = jnp.sum(jnp.where(real[..., None], self.source(src), 0.0), axis=1)
    return {'bias': bias, 'steps': jnp.zeros(src.shape[:1], jnp.int32)}

  def decode_step(self, tokens: jax.Array, state: dict) -> tuple[jax.Array, dict]:
    return self.table[tokens] + state['bias'], {**state, 'steps': state['steps'] + 1}

  def __call__(self, src: jax.Array, src_len: jax.Array, tgt_in: jax.Array) -> jax.Array:
    return self.table[tgt_in] + self.init_decoder(src, src_len)['bias'][:, None]


def build_toy(model_cfg: Any, *, src_vocab_size: int, tgt_vocab_size: int) -> ToyBigram:
  assert model_cfg['arch'] == 'toy'
  return ToyBigram(src_vocab_size, tgt_vocab_size)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyBigram:
  """'toy' registered for this test only (the registry is restored afterwards)."""
  monkeypatch.setattr(registry, '_FAMILIES', dict(registry._FAMILIES))
  registry.register('toy')(build_toy)
  return models.build({'arch': 'toy'}, src_vocab_size=SRC_VOCAB, tgt_vocab_size=VOCAB)


def _params(model: ToyBigram, seed: int) -> Any:
  src = jnp.ones((1, 3), jnp.int32)
  return model.init(jax.random.key(seed), src, jnp.array([3]), src)['params']


def _sources() -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(0)
  src_len = rng.integers(1, 6, 12)
  src = np.where(np.arange(5)[None] < src_len[:, None], rng.integers(3, SRC_VOCAB, (12, 5)), 0)
  return jnp.asarray(src, jnp.int32), jnp.asarray(src_len, jnp.int32)


def _reference_greedy(next_logits: Any, batch: int) -> np.ndarray:
  """Greedy decoding in NumPy: `next_logits(last tokens [batch]) -> [batch, vocab]`."""
  out, done = np.zeros((batch, MAX_LEN), np.int32), np.zeros(batch, bool)
  last = np.full(batch, text.BOS_ID)
  for i in range(MAX_LEN):
    last = np.argmax(next_logits(last), axis=-1)
    out[:, i] = np.where(done, text.PAD_ID, last)
    done |= last == text.EOS_ID
  return out


def _toy_logits(params: Any, src: jax.Array, src_len: jax.Array) -> Any:
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  real = np.arange(src.shape[1])[None, :] < np.asarray(src_len)[:, None]
  bias = (p['source']['embedding'][np.asarray(src)] * real[..., None]).sum(1)
  return lambda last: p['table'][last] + bias


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_a_registered_family_is_built_from_its_arch(toy: ToyBigram) -> None:
  assert isinstance(toy, ToyBigram) and (toy.src_vocab_size, toy.tgt_vocab_size) == (6, 7)
  assert {'rnn', 'toy'} <= set(models.families())
  assert isinstance(toy, interface.DecodingModel)
  assert not isinstance(ensemble.Ensemble(toy, 2), interface.DecodingModel)


def test_the_searches_decode_a_new_family_unchanged(toy: ToyBigram) -> None:
  params = _params(toy, 2)
  src, src_len = _sources()
  expected = _reference_greedy(_toy_logits(params, src, src_len), len(src))
  assert len({tuple(row) for row in expected}) > 3, 'want varied outputs'
  greedy = np.asarray(greedy_search.make_greedy(toy, MAX_LEN)(params, src, src_len))
  np.testing.assert_array_equal(greedy, expected)
  top1 = greedy_search.make_sampler(toy, MAX_LEN, greedy_search.Sampling(top_k=1))
  keys = jax.random.split(jax.random.key(0), len(src))
  np.testing.assert_array_equal(top1(params, src, src_len, keys), expected)
  best = beam_search.make_best(toy, beam_size=1, max_len=MAX_LEN, alpha=0.0)
  np.testing.assert_array_equal(best(params, src, src_len), expected)
  # A wider beam: its scores are the model's (rescored token by token), best first.
  search = beam_search.make_beam_search(toy, beam_size=3, max_len=MAX_LEN, alpha=0.75)
  seqs, scores = search(params, src, src_len)
  rescore = jax.jit(lambda ids: beam_search.sequence_scores(toy, params, src, src_len, ids, 0.75))
  for j in range(3):
    np.testing.assert_allclose(scores[:, j], rescore(seqs[:, j]), rtol=1e-5, atol=1e-5)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)
  assert np.all(np.asarray(scores[:, 0]) >= np.asarray(rescore(jnp.asarray(expected))) - 1e-5)


def test_an_ensemble_of_a_new_family_averages_its_members(toy: ToyBigram) -> None:
  members = [_params(toy, 2), _params(toy, 3)]
  src, src_len = _sources()
  fns = [_toy_logits(p, src, src_len) for p in members]
  expected = _reference_greedy(lambda last: sum(_log_softmax(f(last)) for f in fns), len(src))
  ens, stacked = ensemble.Ensemble(toy, 2), ensemble.stack(members)
  got = greedy_search.make_greedy(ens, MAX_LEN)(stacked, src, src_len)
  np.testing.assert_array_equal(got, expected)
  for member in members:  # the members disagree: the average is not one of them
    single = greedy_search.make_greedy(toy, MAX_LEN)(member, src, src_len)
    assert (np.asarray(single) != expected).any()
  best = beam_search.make_best(ens, beam_size=1, max_len=MAX_LEN, alpha=0.0)
  np.testing.assert_array_equal(best(stacked, src, src_len), expected)


def test_an_unknown_arch_is_a_config_error_naming_the_families() -> None:
  assert 'rnn' in models.families()
  message = f"model.arch must be one of {models.families()}, got 'nope'"
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    models.build({'arch': 'nope'}, src_vocab_size=5, tgt_vocab_size=5)


def test_the_rnn_family_is_built_from_the_config_and_checks_its_fields() -> None:
  config = tiny.get_config().model
  model = models.build(config, src_vocab_size=11, tgt_vocab_size=13)
  expected = models.build_model(
    **{k: config[k] for k in models.rnn.FIELDS}, src_vocab_size=11, tgt_vocab_size=13
  )
  assert model == expected and isinstance(model, models.EncoderDecoder)
  assert model.decoder.num_hiddens == config.num_hiddens
  with pytest.raises(errors.ConfigError, match=r"model\.cell must be one of .*got 'rnn'"):
    models.build({**config.to_dict(), 'cell': 'rnn'}, src_vocab_size=5, tgt_vocab_size=5)
  with pytest.raises(errors.ConfigError, match=r"model\.heads is not a field of model\.arch='rnn'"):
    models.build({**config.to_dict(), 'heads': 4}, src_vocab_size=5, tgt_vocab_size=5)


# The decoders' parameter trees, as checkpoints hold them (embed 6, hidden 8, 2 GRU layers,
# target vocabulary 13). A change here breaks loading every saved model: do not update it
# unless old checkpoints are converted.
PLAIN = {
  'context_proj/kernel': (8, 24),
  'dense/bias': (13,),
  'dense/kernel': (8, 13),
  'embedding/embedding': (13, 6),
  'layers_0/cell/hidden/bias': (24,),
  'layers_0/cell/hidden/kernel': (8, 24),
  'layers_0/input/bias': (24,),
  'layers_0/input/kernel': (6, 24),
  'layers_1/cell/hidden/bias': (24,),
  'layers_1/cell/hidden/kernel': (8, 24),
  'layers_1/input/bias': (24,),
  'layers_1/input/kernel': (8, 24),
}
ATTENTION = {
  'dense/bias': (13,),
  'dense/kernel': (8, 13),
  'embed_proj/bias': (24,),
  'embed_proj/kernel': (6, 24),
  'embedding/embedding': (13, 6),
  'key_proj/kernel': (8, 8),
  'step/attention/w_q/kernel': (8, 8),
  'step/attention/w_v/kernel': (8, 1),
  'step/cell_0/hidden/bias': (24,),
  'step/cell_0/hidden/kernel': (8, 24),
  'step/cell_1/hidden/bias': (24,),
  'step/cell_1/hidden/kernel': (8, 24),
  'step/context_proj/kernel': (8, 24),
  'step/input_1/bias': (24,),
  'step/input_1/kernel': (8, 24),
}
TIED = {'dense/bias': (13,), 'dense/proj/kernel': (8, 6)}  # replaces dense/{bias,kernel}


def _decoder_tree(decoder: str, tie_embeddings: bool) -> dict[str, tuple[int, ...]]:
  model = models.build_model(
    src_vocab_size=11,
    tgt_vocab_size=13,
    embed_size=6,
    num_hiddens=8,
    num_layers=2,
    decoder=decoder,
    tie_embeddings=tie_embeddings,
  )
  ids = jnp.ones((2, 4), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), ids, jnp.array([4, 2]), ids)
  flat = jax.tree_util.tree_flatten_with_path(shapes['params']['decoder'])[0]
  return {'/'.join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


@pytest.mark.parametrize('decoder, tree', [('plain', PLAIN), ('attention', ATTENTION)])
def test_the_decoders_keep_their_parameter_trees(decoder: str, tree: dict) -> None:
  assert _decoder_tree(decoder, tie_embeddings=False) == tree
  untied = {k: v for k, v in tree.items() if not k.startswith('dense/')}
  assert _decoder_tree(decoder, tie_embeddings=True) == {**untied, **TIED}
