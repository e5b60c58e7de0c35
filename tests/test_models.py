"""Tests for the Flax modules: shapes, PyTorch GRU equations, initialisation, invariants."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import models
from seq2seq_jax.models import ops, recurrent

Array = jax.Array

# The seed's shape check uses these sizes.
VOCAB, EMBED, HIDDEN, LAYERS, BATCH, STEPS = 10, 8, 16, 2, 4, 9
# The other tests share one model per decoder, large enough for statistics on its init.
V, E, H, L = 64, 32, 32, 2
TGT_STEPS = 6


def _ids(seed: int, shape: tuple[int, ...], low: int = 4, high: int = V) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).integers(low, high, shape), jnp.int32)


class Setup(NamedTuple):
  decoder: str
  model: models.EncoderDecoder
  params: Any
  run: Callable[..., tuple[Array, Array, Array, Any]]  # (src, src_len, tgt_in) -> ...


def _build(**fields: Any) -> models.EncoderDecoder:
  """A model of the shared sizes (target vocabulary V + 1), with other `fields`."""
  sizes = dict(src_vocab_size=V, tgt_vocab_size=V + 1, embed_size=E, num_hiddens=H, num_layers=L)
  return models.build_model(**{**sizes, **fields})


def _init(model: models.EncoderDecoder) -> Any:
  """`model`'s initial parameters. The initializers do not depend on the PRNG;
  'unsafe_rbg' only compiles much faster on CPU than the default threefry."""
  ids = jnp.ones((2, 4), jnp.int32)
  key = jax.random.key(0, impl='unsafe_rbg')
  return jax.jit(model.init)(key, ids, jnp.array([4, 2]), ids)['params']


@pytest.fixture(scope='module', params=['plain', 'attention'])
def setup(request: pytest.FixtureRequest) -> Setup:
  decoder = request.param
  model = _build(decoder=decoder)
  params = _init(model)

  def run(params: Any, src: Array, src_len: Array, tgt_in: Array) -> tuple:
    """Encoder outputs, encoder state, teacher-forced logits and attention weights."""

    def body(m: models.EncoderDecoder) -> tuple:
      outputs, state = m.encoder(src, src_len)
      return outputs, state, m(src, src_len, tgt_in)

    (outputs, state, logits), inter = model.apply(
      {'params': params}, mutable=['intermediates'], method=body
    )
    weights = inter.get('intermediates', {}).get('decoder', {}).get('attention', (None,))[-1]
    return outputs, state, logits, weights

  return Setup(decoder, model, params, jax.jit(functools.partial(run, params)))


def test_seed_encoder_shapes() -> None:
  """The seed's check: (9, 4, 16) time-major there is (4, 9, 16) batch-major here."""
  encoder = models.Seq2SeqEncoder(VOCAB, EMBED, HIDDEN, LAYERS)
  src = jnp.zeros((BATCH, STEPS), jnp.int32)
  src_len = jnp.full((BATCH,), STEPS)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), src, src_len)
  outputs, state = jax.eval_shape(encoder.apply, variables, src, src_len)
  assert outputs.shape == (BATCH, STEPS, HIDDEN)
  assert state.shape == (LAYERS, BATCH, HIDDEN)


@pytest.mark.parametrize('decoder', ['plain', 'attention'])
def test_seed_decoder_shapes(decoder: str) -> None:
  model = models.build_model(
    src_vocab_size=VOCAB,
    tgt_vocab_size=VOCAB,
    embed_size=EMBED,
    num_hiddens=HIDDEN,
    num_layers=LAYERS,
    decoder=decoder,
  )
  x = jnp.zeros((BATCH, STEPS), jnp.int32)
  src_len = jnp.full((BATCH,), STEPS)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, src_len, x)

  def decode(m: models.EncoderDecoder) -> tuple:
    state = m.init_decoder(x, src_len)
    return state, *m.decoder(x, state)

  state, logits, new_state = jax.eval_shape(lambda v: model.apply(v, method=decode), variables)
  assert logits.shape == (BATCH, STEPS, VOCAB)
  assert logits.dtype == jnp.float32
  assert len(new_state['hidden']) == LAYERS
  for h in [*state['hidden'], *new_state['hidden']]:
    assert h.shape == (BATCH, HIDDEN)
  for leaf in jax.tree.leaves(state):  # decoding relies on the batch being axis 0
    assert leaf.shape[0] == BATCH


def _torch_gru(
  x: np.ndarray,
  h0: np.ndarray,
  w_ih: np.ndarray,
  w_hh: np.ndarray,
  b_ih: np.ndarray,
  b_hh: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """PyTorch's `nn.GRU` equations (docs), time loop in NumPy. x: [batch, time, in];
  w_ih: [3 hidden, in] (gates r, z, n in PyTorch's order); returns outputs and last h."""
  sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
  w_ir, w_iz, w_in = np.split(w_ih, 3)
  w_hr, w_hz, w_hn = np.split(w_hh, 3)
  b_ir, b_iz, b_in = np.split(b_ih, 3)
  b_hr, b_hz, b_hn = np.split(b_hh, 3)
  h, outputs = h0.astype(np.float64), []
  for t in range(x.shape[1]):
    xt = x[:, t].astype(np.float64)
    r = sigmoid(xt @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = sigmoid(xt @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = np.tanh(xt @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    h = (1.0 - z) * n + z * h
    outputs.append(h)
  return np.stack(outputs, 1), h


def _torch_weights(params: Any) -> tuple[np.ndarray, ...]:
  """A GRULayer's parameters in PyTorch's layout (weights [3 hidden, in])."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  return (
    p['input']['kernel'].T,
    p['cell']['hidden']['kernel'].T,
    p['input']['bias'],
    p['cell']['hidden']['bias'],
  )


def test_gru_layer_matches_pytorch_equations(random_params: Callable) -> None:
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
  h0 = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
  layer = recurrent.GRULayer(7)
  params = random_params(layer, x, h0)
  outputs, h = layer.apply({'params': params}, x, h0)
  ref_out, ref_h = _torch_gru(np.asarray(x), np.asarray(h0), *_torch_weights(params))
  assert outputs.shape == (3, 6, 7)
  np.testing.assert_allclose(outputs, ref_out, atol=1e-5)
  np.testing.assert_allclose(h, ref_h, atol=1e-5)
  # The reset gate multiplies (W_hn h + b_hn): moving b_hn into b_in (another GRU variant)
  # gives different outputs, so the comparison above does tell the variants apart.
  w_ih, w_hh, b_ih, b_hh = _torch_weights(params)
  b_ih_alt, b_hh_alt = b_ih.copy(), b_hh.copy()
  b_ih_alt[14:] += b_hh[14:]
  b_hh_alt[14:] = 0.0
  alt_out, _ = _torch_gru(np.asarray(x), np.asarray(h0), w_ih, w_hh, b_ih_alt, b_hh_alt)
  assert np.abs(alt_out - ref_out).max() > 1e-3


def test_gru_layer_mask_holds_state_and_extra_adds_to_input(random_params: Callable) -> None:
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 4)), jnp.float32)
  h0 = jnp.zeros((2, 6), jnp.float32)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  extra = jnp.asarray(rng.normal(size=(2, 18)), jnp.float32)
  layer = recurrent.GRULayer(6)
  params = random_params(layer, x, h0, mask, extra, seed=1)
  outputs, h = layer.apply({'params': params}, x, h0, mask)
  w_ih, w_hh, b_ih, b_hh = _torch_weights(params)
  ref3, ref3_h = _torch_gru(np.asarray(x[:1, :3]), np.zeros((1, 6)), w_ih, w_hh, b_ih, b_hh)
  np.testing.assert_allclose(h[0], ref3_h[0], atol=1e-5)
  np.testing.assert_allclose(outputs[0, :3], ref3[0], atol=1e-5)
  # Past the end the state stays as it was (and is what the padded steps output).
  np.testing.assert_array_equal(outputs[0, 3:], np.broadcast_to(h[0], (2, 6)))
  ref5, _ = _torch_gru(np.asarray(x[1:]), np.zeros((1, 6)), w_ih, w_hh, b_ih, b_hh)
  np.testing.assert_allclose(outputs[1], ref5[0], atol=1e-5)
  # `extra` is a constant addition to every step's input projection, i.e. a bias.
  out_extra, _ = layer.apply({'params': params}, x, h0, extra=extra)
  for row in range(2):
    ref, _ = _torch_gru(
      np.asarray(x[row : row + 1]), np.zeros((1, 6)), w_ih, w_hh, b_ih + extra[row], b_hh
    )
    np.testing.assert_allclose(out_extra[row], ref[0], atol=1e-5)


def _bound(fan_in: int, fan_out: int) -> float:
  return math.sqrt(6.0 / (fan_in + fan_out))


def _check_uniform(array: Any, bound: float, name: str) -> None:
  a = np.abs(np.asarray(array))
  assert a.max() <= bound + 1e-7, f'{name}: max {a.max()} > bound {bound}'
  # Not much narrower either (the wrong, larger fan would pass the first check).
  assert a.max() >= 0.85 * bound, f'{name}: max {a.max()} far below bound {bound}'


def test_initialisation_xavier_and_normal_embeddings(setup: Setup) -> None:
  enc, dec = setup.params['encoder'], setup.params['decoder']
  h3 = 3 * H
  _check_uniform(enc['layers_0']['input']['kernel'], _bound(E, h3), 'enc input 0')
  _check_uniform(enc['layers_1']['input']['kernel'], _bound(H, h3), 'enc input 1')
  for i in range(L):
    _check_uniform(enc[f'layers_{i}']['cell']['hidden']['kernel'], _bound(H, h3), 'enc W_h')
    # Biases keep PyTorch's GRU default U(-1/sqrt(hidden), 1/sqrt(hidden)).
    _check_uniform(enc[f'layers_{i}']['input']['bias'], 1 / math.sqrt(H), 'enc b_i')
    _check_uniform(enc[f'layers_{i}']['cell']['hidden']['bias'], 1 / math.sqrt(H), 'enc b_h')
  # Layer 0 of the decoder reads [embedding; context]: its fan_in is embed + hidden.
  joint = _bound(E + H, h3)
  if setup.decoder == 'plain':
    _check_uniform(dec['layers_0']['input']['kernel'], joint, 'dec input 0')
    _check_uniform(dec['context_proj']['kernel'], joint, 'dec context')
    _check_uniform(dec['layers_1']['input']['kernel'], _bound(H, h3), 'dec input 1')
    cells = [dec[f'layers_{i}']['cell']['hidden']['kernel'] for i in range(L)]
  else:
    step = dec['step']
    _check_uniform(dec['embed_proj']['kernel'], joint, 'dec embed proj')
    _check_uniform(step['context_proj']['kernel'], joint, 'dec context')
    _check_uniform(step['input_1']['kernel'], _bound(H, h3), 'dec input 1')
    _check_uniform(dec['key_proj']['kernel'], _bound(H, H), 'W_k')
    _check_uniform(step['attention']['w_q']['kernel'], _bound(H, H), 'W_q')
    assert np.abs(step['attention']['w_v']['kernel']).max() <= _bound(H, 1)
    cells = [step[f'cell_{i}']['hidden']['kernel'] for i in range(L)]
  for kernel in cells:
    _check_uniform(kernel, _bound(H, h3), 'dec W_h')
  _check_uniform(dec['dense']['kernel'], _bound(H, V + 1), 'output dense')
  _check_uniform(dec['dense']['bias'], 1 / math.sqrt(H), 'output bias')
  for emb in [enc['embedding']['embedding'], dec['embedding']['embedding']]:
    emb = np.asarray(emb)
    assert abs(emb.std() - 1.0) < 0.08
    assert abs(emb.mean()) < 0.08
    assert np.abs(emb).max() > 2.5  # a normal, not a bounded uniform


def _short_and_padded() -> tuple[Array, Array, Array, Array, Array]:
  """Four sources of lengths 3, 5, 1, 4: src_len, their mask [4, 5], the ids [4, 5]
  padded with 0, the same padded to 9 steps with junk ids past each end (the mask must
  hide them), and target inputs."""
  src_len = jnp.array([3, 5, 1, 4])
  real5 = jnp.arange(5)[None] < src_len[:, None]
  short = jnp.where(real5, _ids(0, (BATCH, 5)), 0)
  real9 = jnp.arange(STEPS)[None] < src_len[:, None]
  long = jnp.where(real9, jnp.pad(short, ((0, 0), (0, 4))), _ids(1, (BATCH, STEPS)))
  return src_len, real5, short, long, _ids(2, (BATCH, TGT_STEPS))


def test_padding_invariance(setup: Setup) -> None:
  src_len, real5, short, long, tgt_in = _short_and_padded()
  out5, state5, logits5, _ = setup.run(short, src_len, tgt_in)
  out9, state9, logits9, _ = setup.run(long, src_len, tgt_in)
  assert out9.shape == (BATCH, STEPS, H) and state9.shape == (L, BATCH, H)
  np.testing.assert_allclose(state5, state9, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(out5)[np.asarray(real5)], np.asarray(out9)[:, :5][np.asarray(real5)], atol=1e-6
  )
  np.testing.assert_allclose(logits5, logits9, atol=1e-5)
  # The state is the top layer's output at each sequence's last real token.
  for b, n in enumerate(np.asarray(src_len)):
    np.testing.assert_allclose(state9[-1, b], out9[b, n - 1], atol=1e-6)


def test_decoder_is_causal(setup: Setup) -> None:
  src, src_len = _ids(3, (BATCH, STEPS)), jnp.array([9, 3, 5, 2])
  tgt_in = _ids(4, (BATCH, TGT_STEPS))
  base = setup.run(src, src_len, tgt_in)[2]
  for t in [0, 2, TGT_STEPS - 1]:
    changed = tgt_in.at[:, t].set((tgt_in[:, t] - 3) % (V - 4) + 4)
    logits = setup.run(src, src_len, changed)[2]
    np.testing.assert_array_equal(logits[:, :t], base[:, :t])
    assert np.abs(np.asarray(logits[:, t]) - np.asarray(base[:, t])).min() > 0.0


def test_decode_step_matches_teacher_forcing(setup: Setup) -> None:
  model = setup.model
  src, src_len = _ids(5, (BATCH, STEPS)), jnp.array([6, 2, 9, 5])
  tgt_in = _ids(6, (BATCH, TGT_STEPS))

  @jax.jit
  def stepwise(params: Any) -> Array:
    state = model.apply({'params': params}, src, src_len, method=model.init_decoder)
    logits = []
    for t in range(TGT_STEPS):
      step_logits, state = model.apply(
        {'params': params}, tgt_in[:, t], state, method=models.EncoderDecoder.decode_step
      )
      logits.append(step_logits)
    return jnp.stack(logits, 1)

  np.testing.assert_allclose(stepwise(setup.params), setup.run(src, src_len, tgt_in)[2], atol=1e-5)


def test_attention_masks_padding_and_normalises(setup: Setup) -> None:
  src_len = jnp.array([9, 1, 4, 6])
  weights = setup.run(_ids(7, (BATCH, STEPS)), src_len, _ids(8, (BATCH, TGT_STEPS)))[3]
  if setup.decoder == 'plain':
    assert weights is None  # the plain decoder does not attend
    return
  weights = np.asarray(weights)
  assert weights.shape == (BATCH, TGT_STEPS, STEPS)
  real = np.arange(STEPS)[None, :] < np.asarray(src_len)[:, None]  # [batch, src time]
  for b in range(BATCH):
    assert np.all(weights[b][:, ~real[b]] == 0.0)
    np.testing.assert_allclose(weights[b][:, real[b]].sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[b][:, real[b]] > 0.0)
  np.testing.assert_allclose(weights[1, :, 0], 1.0, atol=1e-6)  # one real token takes all


def _variant(setup: Setup, **fields: Any) -> models.EncoderDecoder:
  """The fixture's model with other encoder and decoder fields (same parameters)."""
  model = setup.model
  return model.clone(encoder=model.encoder.clone(**fields), decoder=model.decoder.clone(**fields))


@pytest.mark.parametrize('setup', ['plain'], indirect=True)  # both use the same dropout
def test_dropout_only_in_training(setup: Setup) -> None:
  model = _variant(setup, dropout=0.5)
  src, src_len = _ids(9, (BATCH, STEPS)), jnp.full((BATCH,), STEPS)
  tgt_in = _ids(10, (BATCH, TGT_STEPS))
  train = jax.jit(
    lambda key: model.apply(
      {'params': setup.params}, src, src_len, tgt_in, train=True, rngs={'dropout': key}
    )
  )
  key = lambda seed: jax.random.key(seed, impl='unsafe_rbg')  # fast to compile on CPU
  train_a, train_b = train(key(0)), train(key(0))
  np.testing.assert_array_equal(train_a, train_b)
  # Evaluation (train=False, the default) is the dropout-free model.
  evaluated = setup.run(src, src_len, tgt_in)[2]
  assert np.abs(np.asarray(train_a) - np.asarray(evaluated)).max() > 1e-2
  assert np.abs(np.asarray(train_a) - np.asarray(train(key(1)))).max() > 1e-2


@pytest.mark.parametrize('unroll', [0, 2])
def test_unrolled_scans_compute_the_same(setup: Setup, unroll: int) -> None:
  """`unroll` (0: whole sequences, no loop) changes the program, not the numbers."""
  model = _variant(setup, unroll=unroll)
  src, src_len, tgt_in = _ids(13, (BATCH, STEPS)), jnp.array([STEPS, 3, 1, 5]), _ids(14, (4, 5))
  logits = jax.jit(model.apply)({'params': setup.params}, src, src_len, tgt_in)
  np.testing.assert_allclose(logits, setup.run(src, src_len, tgt_in)[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('setup', ['plain'], indirect=True)
def test_bfloat16_model_keeps_float32_params_and_logits(setup: Setup) -> None:
  model16 = _variant(setup, dtype=jnp.bfloat16)
  src, src_len, tgt_in = _ids(11, (BATCH, STEPS)), jnp.full((BATCH,), 5), _ids(12, (4, 6))
  shapes = jax.eval_shape(model16.init, jax.random.key(0), src, src_len, tgt_in)
  assert jax.tree.map(lambda p: p.shape, shapes['params']) == jax.tree.map(jnp.shape, setup.params)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
  logits16 = jax.jit(model16.apply)({'params': setup.params}, src, src_len, tgt_in)
  logits32 = setup.run(src, src_len, tgt_in)[2]
  assert logits16.dtype == jnp.float32
  assert np.abs(np.asarray(logits16) - np.asarray(logits32)).max() < 0.1 * np.abs(logits32).max()
  assert np.abs(np.asarray(logits16) - np.asarray(logits32)).max() > 0.0  # bf16 was used


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(decoder='transformer'), 'model.decoder'),
    (dict(dropout=1.5), 'model.dropout'),
    (dict(dropout=1.0), 'model.dropout'),
    (dict(dropout=-0.1), 'model.dropout'),
    (dict(num_layers=0), 'model.num_layers'),
    (dict(embed_size=0), 'model.embed_size'),
    (dict(num_hiddens=-1), 'model.num_hiddens'),
    (dict(unroll=-1), 'model.unroll'),
    (dict(dtype='float16'), 'model.dtype'),
  ],
)
def test_build_model_rejects_bad_values(kwargs: dict, match: str) -> None:
  args = dict(src_vocab_size=V, tgt_vocab_size=V, embed_size=E, num_hiddens=H, num_layers=1)
  with pytest.raises(ValueError, match=match):
    models.build_model(**{**args, **kwargs})


def test_build_model_fields() -> None:
  model = models.build_model(
    src_vocab_size=11, tgt_vocab_size=13, embed_size=4, num_hiddens=6, num_layers=3, dropout=0.2
  )
  assert isinstance(model.encoder, models.Seq2SeqEncoder)
  assert isinstance(model.decoder, models.Seq2SeqDecoder)
  assert (model.encoder.vocab_size, model.decoder.vocab_size) == (11, 13)
  assert model.encoder.num_layers == model.decoder.num_layers == 3
  assert model.encoder.dropout == model.decoder.dropout == 0.2
  attention = models.build_model(
    src_vocab_size=11,
    tgt_vocab_size=13,
    embed_size=4,
    num_hiddens=6,
    num_layers=1,
    decoder='attention',
  )
  assert isinstance(attention.decoder, models.Seq2SeqAttentionDecoder)


def test_reverse_within_length_keeps_padding_in_place() -> None:
  x = jnp.arange(2 * 5).reshape(2, 5)[..., None]  # [batch, time, 1]
  got = recurrent.reverse_within_length(x, jnp.array([3, 5]))[..., 0]
  np.testing.assert_array_equal(got, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
  np.testing.assert_array_equal(
    recurrent.reverse_within_length(
      recurrent.reverse_within_length(x, jnp.array([3, 5])), jnp.array([3, 5])
    ),
    x,
  )


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_bidirectional_encoder_is_padding_invariant_and_reads_backwards(cell: str) -> None:
  """model.bidirectional: the backward layers reverse each source within its own length,
  so padding (with junk ids past the end) changes nothing; the first position's output
  depends on the last real token (a forward-only encoder's cannot); the decoder sees the
  usual sizes ([layers, batch, hidden] states, hidden-sized outputs)."""
  model = _build(decoder='attention', cell=cell, bidirectional=True)
  params = _init(model)
  assert params['encoder']['output_proj']['kernel'].shape == (2 * H, H)

  @jax.jit
  def run(src: Array, src_len: Array, tgt_in: Array) -> tuple:
    def body(m: models.EncoderDecoder) -> tuple:
      outputs, state = m.encoder(src, src_len)
      return outputs, state, m(src, src_len, tgt_in)

    return model.apply({'params': params}, method=body)

  src_len, real5, short, long, tgt_in = _short_and_padded()
  out5, state5, logits5 = run(short, src_len, tgt_in)
  out9, state9, logits9 = run(long, src_len, tgt_in)
  h5, h9 = (s[0] if cell == 'lstm' else s for s in (state5, state9))
  assert out9.shape == (BATCH, STEPS, H) and h9.shape == (L, BATCH, H)
  for a, b in zip(jax.tree.leaves(state5), jax.tree.leaves(state9), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  mask = np.asarray(real5)
  np.testing.assert_allclose(np.asarray(out5)[mask], np.asarray(out9)[:, :5][mask], atol=1e-6)
  np.testing.assert_allclose(logits5, logits9, atol=1e-5)
  # Another last real token (row 1 has 5): the first position's output changes.
  changed = short.at[1, 4].set((short[1, 4] + 1) % V)
  out_changed, _, _ = run(changed, src_len, tgt_in)
  assert float(jnp.abs(out_changed[1, 0] - out5[1, 0]).max()) > 1e-4
  np.testing.assert_allclose(out_changed[0], out5[0], atol=1e-6)  # other rows untouched


@pytest.mark.parametrize(('decoder', 'embed'), [('plain', E), ('attention', 16)])
def test_tied_embeddings_reuse_the_target_table(decoder: str, embed: int) -> None:
  """model.tie_embeddings: no output kernel; logits = features (projected to the embedding
  size when it differs from the hidden size) @ table.T + bias; the table's gradient gets
  the output layer's share too."""
  model = _build(embed_size=embed, decoder=decoder, tie_embeddings=True)
  params = _init(model)
  out = params['decoder']['dense']
  assert 'kernel' not in out and out['bias'].shape == (V + 1,)
  assert ('proj' in out) == (embed != H)
  src, src_len, tgt_in = _ids(0, (BATCH, 5)), jnp.array([5, 3, 1, 4]), _ids(1, (BATCH, TGT_STEPS))
  logits = jax.jit(model.apply)({'params': params}, src, src_len, tgt_in)
  feats = model.apply(
    {'params': params}, src, src_len, tgt_in, method=models.EncoderDecoder.features
  )
  if embed != H:
    feats = feats @ out['proj']['kernel']
  table = params['decoder']['embedding']['embedding']
  np.testing.assert_allclose(logits, feats @ table.T + out['bias'], rtol=1e-4, atol=1e-4)

  def output_only(t: Array) -> Array:  # the table through the output layer alone
    p = {**params, 'decoder': {**params['decoder'], 'embedding': {'embedding': t}}}
    return model.apply({'params': p}, src, src_len, tgt_in).sum()

  grad = jax.jit(jax.grad(output_only))(table)
  assert float(jnp.abs(grad[V]).max()) > 0  # id V never appears in tgt_in: output share


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_cpu_and_plain_kernel_forms_give_the_same_values_and_gradients(
  setup: Setup, dtype: str
) -> None:
  """The CPU forms (tanh sigmoid, block argmax, bias folded into the matmul, bfloat16
  backward with row-major copies) against the plain ones (jax.nn.sigmoid, jnp.argmax,
  jnp.dot + bias): the same logits and parameter gradients, to float32 rounding (in
  bfloat16 within its rounding: the folded bias is rounded to bfloat16 too)."""
  model = _variant(setup, dtype=dtype)
  src, src_len, tgt_in = _ids(21, (BATCH, STEPS)), jnp.array([STEPS, 3, 1, 5]), _ids(22, (4, 6))
  weights = jax.random.normal(jax.random.key(3), (BATCH, 6, V + 1))

  def loss(params: Any) -> Array:
    logits = model.apply({'params': params}, src, src_len, tgt_in)
    return jnp.sum(logits * weights), logits

  results = {}
  for name in ('cpu', 'plain'):
    with ops.use_forms(name) as chosen:
      assert ops.forms() is chosen
      (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(setup.params)
      x = jax.random.normal(jax.random.key(4), (6, 1000))
      results[name] = (logits, grads, jax.jit(ops.sigmoid)(x), jax.jit(ops.first_argmax)(x))
  assert ops.forms() is ops.CPU_FORMS  # this CPU, outside the blocks
  (cpu_logits, cpu_grads, cpu_sig, cpu_arg), (logits, grads, sig, arg) = results.values()
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == 'float32' else dict(rtol=0.05, atol=0.02)
  np.testing.assert_allclose(cpu_logits, logits, **tol)
  for a, b in zip(jax.tree.leaves(cpu_grads), jax.tree.leaves(grads), strict=True):
    scale = max(float(np.abs(np.asarray(b)).max()), 1e-6)
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, **tol)
  np.testing.assert_allclose(cpu_sig, sig, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(cpu_arg, arg)
  assert ops.forms('gpu') is ops.PLAIN_FORMS and ops.forms('tpu') is ops.PLAIN_FORMS


def test_auto_dtype_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
  amd = 'processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n'
  intel = 'processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n'
  arm = 'processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n'
  assert not ops.cpu_has_native_bf16(amd)
  assert ops.cpu_has_native_bf16(intel) and ops.cpu_has_native_bf16(arm)
  assert ops.auto_dtype('gpu') == ops.auto_dtype('tpu') == 'bfloat16'
  for cpuinfo, expected in ((amd, jnp.float32), (intel, jnp.bfloat16)):
    monkeypatch.setattr(ops, 'cpu_has_native_bf16', lambda info=cpuinfo: 'bf16' in info)
    assert ops.auto_dtype('cpu') == jnp.dtype(expected).name
    model = models.build_model(
      src_vocab_size=V, tgt_vocab_size=V, embed_size=E, num_hiddens=H, num_layers=1, dtype='auto'
    )
    assert model.encoder.dtype == model.decoder.dtype == expected
