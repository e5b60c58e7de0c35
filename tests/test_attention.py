"""The Bahdanau attention decoder: padding is masked (zero weight, and padding a source
changes nothing), weights are retrievable for any translation, heatmaps are written,
and a plain-decoder model gets a clear error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seq2seq_jax import attention_plot, errors, inference, models, translate
from seq2seq_jax.data import text
from seq2seq_jax.decoding import beam_search, greedy_search
from tests import fixtures_workdir
from tests.conftest import draw_params

SRC_VOCAB, TGT_VOCAB, MAX_LEN = 13, 11, 7


def _model(decoder: str = 'attention') -> models.EncoderDecoder:
  return models.build_model(
    src_vocab_size=SRC_VOCAB,
    tgt_vocab_size=TGT_VOCAB,
    embed_size=8,
    num_hiddens=16,
    num_layers=2,
    decoder=decoder,
  )


@pytest.fixture(scope='module')
def model_and_params() -> tuple[models.EncoderDecoder, Any]:
  model = _model()
  src = jnp.ones((1, 5), jnp.int32)
  return model, draw_params(model, src, jnp.array([5]), src, seed=3, scale=0.3)


def _batch(width: int, pad_id: Callable[[int], int] = lambda _: 0) -> tuple[jax.Array, jax.Array]:
  """Three sources of lengths 2, 4 and 5 padded to `width` with `pad_id(position)`."""
  rows = [[4, 2], [5, 6, 7, 2], [8, 9, 10, 11, 2]]
  src = [r + [pad_id(j) for j in range(len(r), width)] for r in rows]
  return jnp.asarray(src, jnp.int32), jnp.asarray([len(r) for r in rows], jnp.int32)


@functools.cache
def _compiled(model: models.EncoderDecoder) -> tuple[Any, Any, Any]:
  return (
    greedy_search.make_greedy(model, MAX_LEN),
    beam_search.make_best(model, beam_size=3, max_len=MAX_LEN, alpha=0.75),
    jax.jit(functools.partial(attention_plot.attention_weights, model)),
  )


def test_padding_keys_get_zero_weight(model_and_params) -> None:  # noqa: ANN001
  model, params = model_and_params
  greedy, _, weights_fn = _compiled(model)
  src, src_len = _batch(8)
  out = greedy(params, src, src_len)
  weights = np.asarray(weights_fn(params, src, src_len, out))  # [batch, out time, src time]
  assert weights.shape == (3, MAX_LEN, 8)
  for b, length in enumerate(np.asarray(src_len)):
    assert np.all(weights[b, :, length:] == 0.0)
    assert np.all(weights[b, :, :length] > 0.0)
    np.testing.assert_allclose(weights[b].sum(-1), 1.0, rtol=1e-5)


def test_padding_the_source_changes_nothing(model_and_params) -> None:  # noqa: ANN001
  """Wider padding, or junk token ids in the padded positions, give the same greedy and
  beam translations and the same attention over the real tokens."""
  model, params = model_and_params
  greedy, beam, weights_fn = _compiled(model)
  src, src_len = _batch(5)
  wide, _ = _batch(9)
  junk, _ = _batch(9, pad_id=lambda j: 3 + j)
  ref_out = np.asarray(greedy(params, src, src_len))
  ref_beam = np.asarray(beam(params, src, src_len))
  ref_w = np.asarray(weights_fn(params, src, src_len, ref_out))
  for other in (wide, junk):
    np.testing.assert_array_equal(greedy(params, other, src_len), ref_out)
    np.testing.assert_array_equal(beam(params, other, src_len), ref_beam)
    w = np.asarray(weights_fn(params, other, src_len, ref_out))
    np.testing.assert_allclose(w[:, :, :5], ref_w, atol=1e-6)
    assert np.all(w[:, :, 5:] == 0.0)


def test_weights_are_sown_only_when_asked(model_and_params) -> None:  # noqa: ANN001
  """Training applies the model without a mutable 'intermediates': nothing is kept."""
  model, params = model_and_params
  src, src_len = _batch(5)
  logits = model.apply({'params': params}, src, src_len, src)
  assert logits.shape == (3, 5, TGT_VOCAB)
  _, sown = model.apply({'params': params}, src, src_len, src, mutable=['intermediates'])
  assert sown['intermediates']['decoder']['attention'][0].shape == (3, 5, 5)


def test_the_plain_decoder_has_no_attention_to_plot(tmp_path: Path) -> None:
  model = _model('plain')
  src, src_len = _batch(5)
  params = draw_params(model, src, src_len, src)
  with pytest.raises(attention_plot.NoAttentionError, match='no attention'):
    attention_plot.attention_weights(model, params, src, src_len, src)
  vocab = text.Vocab(list(text.RESERVED) + [f'w{i}' for i in range(SRC_VOCAB - 4)])
  config = ml_collections.ConfigDict({'model': {'decoder': 'plain'}})
  tok = text.WordTokenizer(vocab)
  translator = inference.Translator(model, params, tok, tok, MAX_LEN, config, step=0)
  with pytest.raises(
    errors.UserError, match="model.decoder='attention'.*none .model.decoder='plain'"
  ):
    translate.make_translate_fn(translator, str(tmp_path / 'plots'))
  assert not (tmp_path / 'plots').exists()


@pytest.fixture(scope='module')
def translator(tmp_path_factory: pytest.TempPathFactory) -> inference.Translator:
  return inference.load(fixtures_workdir.trained_workdir(tmp_path_factory, 'attention'))


def test_heatmaps_are_written_for_a_trained_model(translator, tmp_path: Path) -> None:  # noqa: ANN001
  lines = ['I see the cat.', '', 'Zebras want an apple!', 'the dog ' * 500]
  plot = translate.make_translate_fn(translator, str(tmp_path / 'plots'))
  assert plot(lines) == translator.translate(lines)
  assert plot(['We have a book.']) == translator.translate(['We have a book.'])
  names = sorted(p.name for p in (tmp_path / 'plots').iterdir())
  assert names == [f'attention_00{i}.png' for i in (1, 3, 4, 5)]  # none for the empty line
  for name in names:
    data = (tmp_path / 'plots' / name).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 2000
  maps = attention_plot.attention_maps(translator, lines)
  assert maps[1] is None
  first = maps[0]
  assert first.src_tokens == ['i', 'see', 'the', 'cat', '.', '<eos>']
  assert first.weights.shape == (len(first.out_tokens), len(first.src_tokens))
  np.testing.assert_allclose(first.weights.sum(-1), 1.0, rtol=1e-5)
  assert maps[2].src_tokens[0] == 'zebras'  # unknown words keep their text on the plot
  assert len(maps[3].src_tokens) == translator.max_len


def test_an_ensemble_has_no_single_attention_to_plot(translator, tmp_path: Path) -> None:  # noqa: ANN001
  pair = inference.load([translator.workdirs[0]] * 2)
  with pytest.raises(errors.UserError, match='ensemble of 2'):
    translate.make_translate_fn(pair, str(tmp_path / 'plots'))
