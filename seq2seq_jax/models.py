"""Flax modules: the seed's encoder-decoder with GRU layers built from `nn.scan`.

Shape convention: batch-major. Token ids are `[batch, time]`; encoder outputs are
`[batch, time, hidden]` (the seed's PyTorch code is time-major, `[time, batch, hidden]`);
the encoder's final state is `[layers, batch, hidden]` exactly as the seed's. Decoder
states are dicts whose leaves all have the batch on axis 0, so that decoding (greedy and
beam search) can gather and reorder them without knowing what they hold.

The GRU follows PyTorch/cuDNN:
  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  h' = (1 - z) * n + z * h
The input projections of all time steps are one matmul outside the scan; the scan body
does only the `[batch, hidden] x [hidden, 3 hidden]` recurrent matmul. Initialisation is
the seed's `init_seq2seq` (Xavier-uniform weights) with PyTorch's defaults elsewhere.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any
NEG_INF = -1e9


def xavier_uniform(fan_in: int, fan_out: int) -> nn.initializers.Initializer:
  """Xavier-uniform with explicit fans: a kernel split in parts keeps the whole's scale."""
  return _uniform(math.sqrt(6.0 / (fan_in + fan_out)))


def _uniform(bound: float) -> nn.initializers.Initializer:
  def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_bias(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return _uniform(1.0 / math.sqrt(fan_in))


def sigmoid(x: Array) -> Array:
  """The logistic function as `0.5 * tanh(0.5 x) + 0.5`: the same values to float32
  rounding, and on CPU about twice as fast as XLA's `1 / (1 + exp(-x))` (one vectorised
  tanh instead of an exp and a division), which matters in the GRU's per-step gates."""
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def first_argmax(x: Array, block: int = 256) -> Array:
  """`jnp.argmax(x, axis=-1)` (the first maximal index) for finite x, ~10x faster on CPU.

  XLA's CPU argmax is one reduction over (value, index) pairs at a few ns per element;
  here the maxima of blocks of `block` entries (a plain windowed max, no copy) pick the
  first block holding the maximum, and argmax runs only inside that block."""
  size = x.shape[-1]
  if size <= block:
    return jnp.argmax(x, axis=-1).astype(jnp.int32)
  lead = (1,) * (x.ndim - 1)
  padding = [(0, 0)] * (x.ndim - 1) + [(0, -size % block)]
  maxima = jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, lead + (block,), lead + (block,), padding
  )
  # The last window ends at `size`, overlapping the block before it: that block's entries
  # there are below the maximum (else it would have been chosen), so the index is exact.
  start = jnp.minimum(jnp.argmax(maxima, axis=-1).astype(jnp.int32) * block, size - block)
  window = jnp.take_along_axis(x, start[..., None] + jnp.arange(block, dtype=jnp.int32), -1)
  return start + jnp.argmax(window, axis=-1).astype(jnp.int32)


def _row_major_transpose(a: Array) -> Array:
  """`a.T` [n, m], copied row-major. XLA's CPU matmul library (YNNPACK) runs a matmul in
  bfloat16 only when both operands are row-major `[m, k] x [k, n]`; given a transpose, XLA
  folds it into the matmul and then runs that in float32 (or, for `x.T @ g`, in a slower
  fallback even in float32). The barrier keeps the copy (see docs/performance.md)."""
  return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(a.shape[::-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: Array, w: Array, dtype: Dtype) -> Array:
  """x [m, k] @ w [k, n] -> float32 [m, n]: `dtype` inputs, float32 accumulation.

  The gradient's two matmuls also take `dtype` inputs (the incoming gradient rounded to
  it) and accumulate in float32; the gradients returned are float32, like x and w."""
  return jnp.dot(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def _matmul_fwd(x: Array, w: Array, dtype: Dtype) -> tuple[Array, tuple[Array, Array]]:
  x, w = x.astype(dtype), w.astype(dtype)
  return jnp.dot(x, w, preferred_element_type=jnp.float32), (x, w)


def _matmul_bwd(dtype: Dtype, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
  x, w = res
  g = g.astype(dtype)
  # float32 runs `g @ w.T` natively; bfloat16 needs w.T row-major.
  w_t = w.T if jnp.dtype(dtype) == jnp.float32 else _row_major_transpose(w)
  dx = jnp.dot(g, w_t, preferred_element_type=jnp.float32)
  dw = jnp.dot(_row_major_transpose(x), g, preferred_element_type=jnp.float32)
  return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine(x: Array, w: Array, b: Array, dtype: Dtype) -> Array:
  """x [m, k] @ w [k, n] + b [n] -> float32 [m, n], as `_matmul`.

  The bias rides in the matmul as one more row of w against a column of ones in x: no
  separate pass over the [m, n] result adds it, and its gradient comes out of the weight
  gradient's matmul rather than a column reduction, which is slow on CPU."""
  return _affine_fwd(x, w, b, dtype)[0]


def _affine_fwd(x: Array, w: Array, b: Array, dtype: Dtype) -> tuple[Array, tuple[Array, Array]]:
  x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1).astype(dtype)
  wb = jnp.concatenate([w, b[None, :]], axis=0).astype(dtype)
  return jnp.dot(x1, wb, preferred_element_type=jnp.float32), (x1, w.astype(dtype))


def _affine_bwd(dtype: Dtype, res: tuple[Array, Array], g: Array) -> tuple[Array, Array, Array]:
  x1, w = res
  g = g.astype(dtype)
  w_t = w.T if jnp.dtype(dtype) == jnp.float32 else _row_major_transpose(w)
  dx = jnp.dot(g, w_t, preferred_element_type=jnp.float32)  # k, not k + 1: a faster shape
  dwb = jnp.dot(_row_major_transpose(x1), g, preferred_element_type=jnp.float32)
  return dx, dwb[:-1], dwb[-1]


_affine.defvjp(_affine_fwd, _affine_bwd)


class _Dense(nn.Module):
  """`nn.Dense`'s parameters ('kernel' [in, out], then 'bias' [out]) and results, through
  `_affine` / `_matmul`: `dtype` matmul inputs, float32 accumulation and result."""

  features: int
  use_bias: bool
  kernel_init: nn.initializers.Initializer
  bias_init: nn.initializers.Initializer
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
      y = _affine(flat, kernel, bias, self.dtype)
    else:
      y = _matmul(flat, kernel, self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))


def _dense(
  features: int,
  fan_in: int,
  *,
  use_bias: bool = True,
  bias_fan_in: int | None = None,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Module:
  return _Dense(
    features,
    use_bias=use_bias,
    kernel_init=xavier_uniform(fan_in, features),
    bias_init=torch_bias(bias_fan_in or fan_in),
    dtype=dtype,
    name=name,
  )


class GRUStep(nn.Module):
  """One GRU time step given the precomputed input projection `W_i x + b_i`."""

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, inputs: tuple[Array, Array | None]) -> tuple[Array, Array]:
    x_proj, mask = inputs  # [batch, 3 hidden], [batch] or None
    h_proj = _dense(
      3 * self.hidden, self.hidden, bias_fan_in=self.hidden, dtype=self.dtype, name='hidden'
    )(h)
    xr, xz, xn = jnp.split(x_proj.astype(jnp.float32), 3, axis=-1)
    hr, hz, hn = jnp.split(h_proj.astype(jnp.float32), 3, axis=-1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = (1.0 - z) * n + z * h
    if mask is not None:  # past a sequence's end the state stays as it was
      h_new = jnp.where(mask[:, None], h_new, h)
    return h_new, h_new


class RecurrentLayer(nn.Module):
  """One recurrent layer over a whole sequence: the input projections of all steps in one
  matmul, then an `nn.scan` over the cell's step (`GRUStep` or `LSTMStep`).

  `fan_in` is the size of the layer's whole input (for the Xavier scale) when part of the
  input is projected elsewhere (the decoder's constant context).
  """

  hidden: int
  fan_in: int | None = None
  dtype: Dtype = jnp.float32
  unroll: int = 1
  step: Any = None  # the step module class
  gates: int = 3  # gate blocks per hidden unit in one projection

  @nn.compact
  def __call__(
    self, x: Array, carry0: Any, mask: Array | None = None, extra: Array | None = None
  ) -> tuple[Array, Any]:
    """x: [batch, time, in]; carry0: the step's carry (h, or (h, c)), each [batch, hidden];
    mask: [batch, time] (True = real token); extra: [batch, gates * hidden] added to every
    step's input projection. Returns outputs [batch, time, hidden] and the final carry."""
    fan_in = self.fan_in or x.shape[-1]
    x_proj = _dense(
      self.gates * self.hidden, fan_in, bias_fan_in=self.hidden, dtype=self.dtype, name='input'
    )(x)
    if extra is not None:
      x_proj = x_proj + extra[:, None, :].astype(x_proj.dtype)
    scan = nn.scan(
      self.step,
      variable_broadcast='params',
      split_rngs={'params': False},
      in_axes=1,
      out_axes=1,
      unroll=self.unroll if self.unroll > 0 else True,  # 0: the whole sequence
    )
    carry, outputs = scan(self.hidden, self.dtype, name='cell')(carry0, (x_proj, mask))
    return outputs, carry


class GRULayer(RecurrentLayer):
  """A GRU layer: `RecurrentLayer` over `GRUStep` (carry h)."""

  step: Any = GRUStep
  gates: int = 3


class LSTMStep(nn.Module):
  """One LSTM time step given the precomputed input projection `W_i x + b_i`; PyTorch's
  equations and gate order (i, f, g, o), both biases kept:
    i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*);  g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    c' = f * c + i * g;  h' = o * tanh(c')
  The carry is (h, c), each [batch, hidden]."""

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, carry: tuple[Array, Array], inputs: tuple[Array, Array | None]
  ) -> tuple[tuple[Array, Array], Array]:
    h, c = carry
    x_proj, mask = inputs  # [batch, 4 hidden], [batch] or None
    h_proj = _dense(
      4 * self.hidden, self.hidden, bias_fan_in=self.hidden, dtype=self.dtype, name='hidden'
    )(h)
    gates = x_proj.astype(jnp.float32) + h_proj.astype(jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
    h_new = sigmoid(o) * jnp.tanh(c_new)
    if mask is not None:  # past a sequence's end the state stays as it was
      h_new = jnp.where(mask[:, None], h_new, h)
      c_new = jnp.where(mask[:, None], c_new, c)
    return (h_new, c_new), h_new


class LSTMLayer(RecurrentLayer):
  """An LSTM layer: `RecurrentLayer` over `LSTMStep` (carry (h, c))."""

  step: Any = LSTMStep
  gates: int = 4


# Recurrent cells by `cell` name: (layer over a sequence, one step, gates per hidden unit).
CELLS = {'gru': (GRULayer, GRUStep, 3), 'lstm': (LSTMLayer, LSTMStep, 4)}


def zero_carry(cell: str, batch: int, hidden: int) -> Any:
  """A layer's initial carry: h for a GRU, (h, c) for an LSTM."""
  h = jnp.zeros((batch, hidden), jnp.float32)
  return (h, h) if cell == 'lstm' else h


def carry_hidden(cell: str, carry: Any) -> Array:
  """The hidden state h of a carry (or of a stack of carries)."""
  return carry[0] if cell == 'lstm' else carry


def layer_carry(state: Any, i: int) -> Any:
  """Layer i's carry from the encoder's stacked final state."""
  return jax.tree.map(lambda s: s[i], state)


class Encoder(nn.Module):
  """The seed's encoder interface: a source sequence -> (outputs, state)."""

  def __call__(self, src: Array, src_len: Array, *, train: bool = False) -> tuple[Array, Array]:
    raise NotImplementedError


class Decoder(nn.Module):
  """The seed's decoder interface: `init_state` from the encoder, then `__call__(X, state)`."""

  def init_state(self, enc_all_outputs: tuple[Array, Array], src_len: Array) -> dict:
    raise NotImplementedError

  def __call__(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    raise NotImplementedError


class Seq2SeqEncoder(Encoder):
  """Embedding -> `num_layers` GRU (or LSTM: `cell`) layers with dropout between them."""

  vocab_size: int
  embed_size: int
  num_hiddens: int
  num_layers: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  unroll: int = 1
  cell: str = 'gru'  # 'gru' or 'lstm'

  def setup(self) -> None:
    self.embedding = nn.Embed(
      self.vocab_size, self.embed_size, embedding_init=nn.initializers.normal(1.0)
    )
    self.layers = [
      CELLS[self.cell][0](self.num_hiddens, dtype=self.dtype, unroll=self.unroll)
      for _ in range(self.num_layers)
    ]
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, src: Array, src_len: Array, *, train: bool = False) -> tuple[Array, Array]:
    """src: [batch, time] ids; src_len: [batch]. Returns outputs [batch, time, hidden] and
    the state [layers, batch, hidden] taken at each sequence's last real token (for an
    LSTM the pair (h, c) of such arrays)."""
    batch, steps = src.shape
    mask = jnp.arange(steps)[None, :] < src_len[:, None]
    x = self.embedding(src)
    states = []
    for i, layer in enumerate(self.layers):
      if i > 0:
        x = self.drop(x, deterministic=not train)
      x, h = layer(x, zero_carry(self.cell, batch, self.num_hiddens), mask)
      states.append(h)
    return x, jax.tree.map(lambda *s: jnp.stack(s), *states)


class Seq2SeqDecoder(Decoder):
  """The seed's decoder: the context (the encoder's top-layer final state) is joined to
  every step's embedding; GRU layers start from the encoder's final states."""

  vocab_size: int
  embed_size: int
  num_hiddens: int
  num_layers: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  unroll: int = 1
  cell: str = 'gru'  # 'gru' or 'lstm'

  def setup(self) -> None:
    fan_in0 = self.embed_size + self.num_hiddens
    self.embedding = nn.Embed(
      self.vocab_size, self.embed_size, embedding_init=nn.initializers.normal(1.0)
    )
    # The context is the same at every step: its share of layer 0's input projection is
    # computed once per sentence (in `init_state`), not once per step.
    gates = CELLS[self.cell][2] * self.num_hiddens
    self.context_proj = _dense(gates, fan_in0, use_bias=False, dtype=self.dtype)
    self.layers = [
      CELLS[self.cell][0](
        self.num_hiddens, fan_in=fan_in0 if i == 0 else None, dtype=self.dtype, unroll=self.unroll
      )
      for i in range(self.num_layers)
    ]
    self.drop = nn.Dropout(self.dropout)
    self.dense = _dense(self.vocab_size, self.num_hiddens, dtype=self.dtype)

  def init_state(self, enc_all_outputs: tuple[Array, Array], src_len: Array) -> dict:
    del src_len  # the encoder's state is already taken at the last real token
    _, enc_state = enc_all_outputs
    context = carry_hidden(self.cell, enc_state)[-1]
    return {
      'context_proj': self.context_proj(context).astype(jnp.float32),
      'hidden': tuple(layer_carry(enc_state, i) for i in range(self.num_layers)),
    }

  def features(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """The top layer's outputs [batch, time, hidden] before the output projection."""
    x = self.embedding(tgt_in)
    hidden = []
    for i, layer in enumerate(self.layers):
      if i > 0:
        x = self.drop(x, deterministic=not train)
      x, h = layer(x, state['hidden'][i], extra=state['context_proj'] if i == 0 else None)
      hidden.append(h)
    return x, {**state, 'hidden': tuple(hidden)}

  def __call__(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """tgt_in: [batch, time] ids. Returns logits [batch, time, vocab] and the new state."""
    x, state = self.features(tgt_in, state, train=train)
    return self.dense(x).astype(jnp.float32), state


class AdditiveAttention(nn.Module):
  """Bahdanau attention: score(q, k) = w_v . tanh(W_q q + W_k k), padding masked.

  The keys arrive projected (`W_k k`, computed once per sentence by the decoder)."""

  num_hiddens: int
  dtype: Dtype = jnp.float32

  def setup(self) -> None:
    h = self.num_hiddens
    self.w_q = _dense(h, h, use_bias=False, dtype=self.dtype)
    self.w_v = _dense(1, h, use_bias=False, dtype=self.dtype)

  def __call__(
    self, query: Array, keys_proj: Array, values: Array, mask: Array
  ) -> tuple[Array, Array]:
    """query [batch, hidden]; keys_proj, values [batch, time, hidden]; mask [batch, time].
    Returns the context [batch, hidden] and the weights [batch, time]."""
    features = jnp.tanh(self.w_q(query).astype(jnp.float32)[:, None, :] + keys_proj)
    scores = self.w_v(features)[..., 0].astype(jnp.float32)
    weights = jax.nn.softmax(jnp.where(mask, scores, NEG_INF), axis=-1)
    weights = jnp.where(mask, weights, 0.0)
    return jnp.einsum('bt,bth->bh', weights, values), weights


class AttentionStep(nn.Module):
  """One decoder step with attention: attend with the previous top-layer state, then
  run the GRU stack on [embedding; context]."""

  num_hiddens: int
  num_layers: int
  embed_size: int
  dropout: float
  dtype: Dtype = jnp.float32
  cell: str = 'gru'

  @nn.compact
  def __call__(
    self, carry: tuple[Array, ...], inputs: Array, memory: dict, train: bool
  ) -> tuple[tuple[Array, ...], tuple[Array, Array]]:
    emb_proj = inputs  # [batch, 3 hidden]: layer 0's projection of the embedding
    h_top = carry_hidden(self.cell, carry[-1])
    _, step_cls, gates = CELLS[self.cell]
    context, weights = AdditiveAttention(self.num_hiddens, self.dtype, name='attention')(
      h_top, memory['keys'], memory['values'], memory['mask']
    )
    fan_in0 = self.embed_size + self.num_hiddens
    x_proj = emb_proj + _dense(
      gates * self.num_hiddens, fan_in0, use_bias=False, dtype=self.dtype, name='context_proj'
    )(context).astype(jnp.float32)
    new_carry = []
    x = None
    for i in range(self.num_layers):
      if i > 0:
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x_proj = _dense(
          gates * self.num_hiddens,
          self.num_hiddens,
          bias_fan_in=self.num_hiddens,
          dtype=self.dtype,
          name=f'input_{i}',
        )(x).astype(jnp.float32)
      h, out = step_cls(self.num_hiddens, self.dtype, name=f'cell_{i}')(carry[i], (x_proj, None))
      new_carry.append(h)
      x = out
    return tuple(new_carry), (x, weights)


class Seq2SeqAttentionDecoder(Decoder):
  """The book's Bahdanau decoder: every step attends over the encoder outputs (source
  padding masked) with the previous top-layer state as the query. Attention weights
  are sown into the 'intermediates' collection (free unless it is made mutable)."""

  vocab_size: int
  embed_size: int
  num_hiddens: int
  num_layers: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  unroll: int = 1
  cell: str = 'gru'  # 'gru' or 'lstm'

  def setup(self) -> None:
    fan_in0 = self.embed_size + self.num_hiddens
    self.embedding = nn.Embed(
      self.vocab_size, self.embed_size, embedding_init=nn.initializers.normal(1.0)
    )
    self.key_proj = _dense(self.num_hiddens, self.num_hiddens, use_bias=False, dtype=self.dtype)
    self.embed_proj = _dense(
      CELLS[self.cell][2] * self.num_hiddens,
      fan_in0,
      bias_fan_in=self.num_hiddens,
      dtype=self.dtype,
    )
    scan = nn.scan(
      AttentionStep,
      variable_broadcast='params',
      split_rngs={'params': False, 'dropout': True},
      in_axes=(1, nn.broadcast, nn.broadcast),
      out_axes=1,
      unroll=self.unroll if self.unroll > 0 else True,
    )
    self.step = scan(
      self.num_hiddens, self.num_layers, self.embed_size, self.dropout, self.dtype, self.cell
    )
    self.dense = _dense(self.vocab_size, self.num_hiddens, dtype=self.dtype)

  def init_state(self, enc_all_outputs: tuple[Array, Array], src_len: Array) -> dict:
    outputs, enc_state = enc_all_outputs
    mask = jnp.arange(outputs.shape[1])[None, :] < src_len[:, None]
    return {
      'values': outputs,
      'keys': self.key_proj(outputs).astype(jnp.float32),
      'mask': mask,
      'hidden': tuple(layer_carry(enc_state, i) for i in range(self.num_layers)),
    }

  def features(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    emb_proj = self.embed_proj(self.embedding(tgt_in)).astype(jnp.float32)
    memory = {k: state[k] for k in ('keys', 'values', 'mask')}
    hidden, (x, weights) = self.step(state['hidden'], emb_proj, memory, train)
    self.sow('intermediates', 'attention', weights)  # [batch, tgt time, src time]
    return x, {**state, 'hidden': hidden}

  def __call__(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    x, state = self.features(tgt_in, state, train=train)
    return self.dense(x).astype(jnp.float32), state


class EncoderDecoder(nn.Module):
  """The seed's `EncoderDecoder`: wires an encoder and a decoder."""

  encoder: Encoder
  decoder: Decoder

  def __call__(self, src: Array, src_len: Array, tgt_in: Array, *, train: bool = False) -> Array:
    """Teacher-forced logits [batch, tgt time, tgt vocab]."""
    state = self.init_decoder(src, src_len, train=train)
    return self.decoder(tgt_in, state, train=train)[0]

  def features(self, src: Array, src_len: Array, tgt_in: Array, *, train: bool = False) -> Array:
    """Teacher-forced top-layer features [batch, tgt time, hidden] (the loss projects
    them itself, so that it can skip padded positions)."""
    state = self.init_decoder(src, src_len, train=train)
    return self.decoder.features(tgt_in, state, train=train)[0]

  def project(self, x: Array) -> Array:
    return self.decoder.dense(x).astype(jnp.float32)

  def init_decoder(self, src: Array, src_len: Array, *, train: bool = False) -> dict:
    """Runs the encoder; returns the decoder's initial state."""
    enc_all_outputs = self.encoder(src, src_len, train=train)
    return self.decoder.init_state(enc_all_outputs, src_len)

  def decode_step(self, tokens: Array, state: dict) -> tuple[Array, dict]:
    """One decoding step: tokens [batch] -> logits [batch, vocab], new state."""
    logits, state = self.decoder(tokens[:, None], state, train=False)
    return logits[:, 0], state


DECODERS = {'plain': Seq2SeqDecoder, 'attention': Seq2SeqAttentionDecoder}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build_model(
  *,
  src_vocab_size: int,
  tgt_vocab_size: int,
  embed_size: int,
  num_hiddens: int,
  num_layers: int,
  dropout: float = 0.0,
  decoder: str = 'plain',
  cell: str = 'gru',
  dtype: str = 'float32',
  unroll: int = 1,
) -> EncoderDecoder:
  """The seq2seq model from plain hyperparameters (`build_model(**config.model, ...)`)."""
  if cell not in CELLS:
    raise ValueError(f'model.cell must be one of {sorted(CELLS)}, got {cell!r}')
  if decoder not in DECODERS:
    raise ValueError(f'model.decoder must be one of {sorted(DECODERS)}, got {decoder!r}')
  if dtype not in DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
  for name, value in [
    ('embed_size', embed_size),
    ('num_hiddens', num_hiddens),
    ('num_layers', num_layers),
  ]:
    if value < 1:
      raise ValueError(f'model.{name} must be at least 1, got {value}')
  if unroll < 0:
    raise ValueError(f'model.unroll must be 0 (whole sequences) or positive, got {unroll}')
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f'model.dropout must be in [0, 1), got {dropout}')
  common = dict(
    embed_size=embed_size,
    num_hiddens=num_hiddens,
    num_layers=num_layers,
    dropout=dropout,
    dtype=DTYPES[dtype],
    unroll=unroll,
    cell=cell,
  )
  return EncoderDecoder(
    encoder=Seq2SeqEncoder(vocab_size=src_vocab_size, **common),
    decoder=DECODERS[decoder](vocab_size=tgt_vocab_size, **common),
  )
