"""The LSTM cell (`config.model.cell = 'lstm'`): PyTorch's equations, the encoder's state
at the last real token, step-by-step decoding equal to teacher forcing for both decoders,
and training, checkpoints and translation through the unchanged trainer."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from seq2seq_jax import inference, models
from seq2seq_jax.models import recurrent
from seq2seq_jax.train import checkpointing, loop
from tests import synthetic

V, E, H, L, B, T = 20, 8, 12, 2, 3, 5


def sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(p: dict, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple:
  """PyTorch's nn.LSTM equations, gate order (i, f, g, o), in NumPy."""
  outputs = []
  for t in range(x.shape[1]):
    gates = (
      x[:, t] @ p['input']['kernel']
      + p['input']['bias']
      + h @ p['cell']['hidden']['kernel']
      + p['cell']['hidden']['bias']
    )
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    outputs.append(h)
  return np.stack(outputs, 1), h, c


def test_lstm_layer_matches_pytorch_equations() -> None:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, T, E)).astype(np.float32)
  h0, c0 = (rng.normal(size=(B, H)).astype(np.float32) for _ in range(2))
  layer = recurrent.LSTMLayer(H)
  params = layer.init(jax.random.key(0), x, (h0, c0))['params']
  assert params['input']['kernel'].shape == (E, 4 * H)
  assert params['cell']['hidden']['kernel'].shape == (H, 4 * H)
  outputs, (h, c) = layer.apply({'params': params}, x, (h0, c0))
  p = jax.tree.map(np.asarray, params)
  ref_out, ref_h, ref_c = lstm_reference(p, x, h0, c0)
  np.testing.assert_allclose(outputs, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-5)


def build(decoder: str = 'plain') -> tuple[models.EncoderDecoder, dict]:
  model = models.build_model(
    src_vocab_size=V,
    tgt_vocab_size=V + 1,
    embed_size=E,
    num_hiddens=H,
    num_layers=L,
    decoder=decoder,
    cell='lstm',
  )
  ids = jnp.ones((2, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(1), ids, jnp.array([4, 2]), ids)['params']
  return model, params


def test_lstm_encoder_state_is_taken_at_the_last_real_token() -> None:
  model, params = build()
  rng = np.random.default_rng(1)
  src = rng.integers(4, V, (B, T)).astype(np.int32)
  src_len = np.array([5, 3, 1], np.int32)
  junk = np.where(np.arange(T)[None] < src_len[:, None], src, rng.integers(4, V, (B, T)))

  @jax.jit
  def encode(s: np.ndarray) -> tuple:
    return model.apply({'params': params}, s, src_len, method=lambda m, s, n: m.encoder(s, n))

  (out_a, (h_a, c_a)), (_, (h_b, c_b)) = encode(src), encode(junk.astype(np.int32))
  assert h_a.shape == c_a.shape == (L, B, H)
  np.testing.assert_array_equal(h_a, h_b)  # what follows a sentence's end is never read
  np.testing.assert_array_equal(c_a, c_b)
  # The final state is the top layer's output at the last real token.
  np.testing.assert_allclose(h_a[-1], out_a[np.arange(B), src_len - 1], rtol=1e-6)


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_lstm_decoding_step_by_step_equals_teacher_forcing(decoder: str) -> None:
  model, params = build(decoder)
  rng = np.random.default_rng(2)
  src = rng.integers(4, V, (B, T)).astype(np.int32)
  src_len = np.array([5, 4, 2], np.int32)
  tgt_in = rng.integers(4, V + 1, (B, 4)).astype(np.int32)
  variables = {'params': params}
  forced = jax.jit(model.apply)(variables, src, src_len, tgt_in)
  init = jax.jit(functools.partial(model.apply, method=models.EncoderDecoder.init_decoder))
  step = jax.jit(functools.partial(model.apply, method=models.EncoderDecoder.decode_step))
  state = init(variables, src, src_len)
  assert all(leaf.shape[0] == B for leaf in jax.tree.leaves(state))  # what beam search needs
  assert isinstance(state['hidden'][0], tuple) and len(state['hidden'][0]) == 2  # (h, c)
  stepped = []
  for t in range(tgt_in.shape[1]):
    logits, state = step(variables, tgt_in[:, t], state)
    stepped.append(logits)
  np.testing.assert_allclose(np.stack(stepped, 1), forced, rtol=1e-5, atol=1e-5)


def test_lstm_bad_cell_name_is_rejected() -> None:
  with pytest.raises(ValueError, match="model.cell must be one of \\['gru', 'lstm'\\]"):
    models.build_model(
      src_vocab_size=V, tgt_vocab_size=V, embed_size=E, num_hiddens=H, num_layers=L, cell='rnn'
    )


def test_lstm_trains_and_translates_through_the_unchanged_trainer(tmp_path: Path) -> None:
  data_dir = synthetic.write_fra_txt(tmp_path / 'data', n=80)
  config = tiny.get_config()
  config.data.manual_dir = str(data_dir)
  config.data.data_dir = str(data_dir / 'tfds')
  config.model.cell = 'lstm'
  config.train.num_epochs = 3
  config.train.learning_rate = 0.02
  workdir = tmp_path / 'run'
  result = loop.train_and_evaluate(config, str(workdir))
  assert result['step'] == 12
  translator = inference.load(workdir, 'latest', beam_size=2)
  assert translator.config.model.cell == 'lstm'
  assert translator.params['encoder']['layers_0']['input']['kernel'].shape == (16, 64)
  out = translator.translate(['I see the cat.', '', 'We like the dog!'])
  assert len(out) == 3 and out[1] == '' and out[0]
  # The checkpoint knows its cell: resuming it as a GRU fails with a clear message.
  config.model.cell = 'gru'
  with pytest.raises(checkpointing.CheckpointError, match="cell: checkpoint 'lstm' vs config"):
    loop.train_and_evaluate(config, str(workdir))
