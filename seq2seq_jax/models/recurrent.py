"""Recurrent cells and layers: GRU and LSTM steps, each layer one `nn.scan` over its step.

The GRU follows PyTorch/cuDNN:
  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  h' = (1 - z) * n + z * h
The input projections of all time steps are one matmul outside the scan; the scan body
does only the `[batch, hidden] x [hidden, 3 hidden]` recurrent matmul.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models import ops

Array = jax.Array
Dtype = Any


class GRUStep(nn.Module):
  """One GRU time step given the precomputed input projection `W_i x + b_i`."""

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, inputs: tuple[Array, Array | None]) -> tuple[Array, Array]:
    x_proj, mask = inputs  # [batch, 3 hidden], [batch] or None
    h_proj = ops.dense(
      3 * self.hidden, self.hidden, bias_fan_in=self.hidden, dtype=self.dtype, name='hidden'
    )(h)
    xr, xz, xn = jnp.split(x_proj.astype(jnp.float32), 3, axis=-1)
    hr, hz, hn = jnp.split(h_proj.astype(jnp.float32), 3, axis=-1)
    r = ops.sigmoid(xr + hr)
    z = ops.sigmoid(xz + hz)
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
    x_proj = ops.dense(
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
    i, f, o = ops.sigmoid(W_i* x + b_i* + W_h* h + b_h*);  g = tanh(W_ig x + b_ig + W_hg h + b_hg)
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
    h_proj = ops.dense(
      4 * self.hidden, self.hidden, bias_fan_in=self.hidden, dtype=self.dtype, name='hidden'
    )(h)
    gates = x_proj.astype(jnp.float32) + h_proj.astype(jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * jnp.tanh(g)
    h_new = ops.sigmoid(o) * jnp.tanh(c_new)
    if mask is not None:  # past a sequence's end the state stays as it was
      h_new = jnp.where(mask[:, None], h_new, h)
      c_new = jnp.where(mask[:, None], c_new, c)
    return (h_new, c_new), h_new


class LSTMLayer(RecurrentLayer):
  """An LSTM layer: `RecurrentLayer` over `LSTMStep` (carry (h, c))."""

  step: Any = LSTMStep
  gates: int = 4


class Cell(NamedTuple):
  """A recurrent cell: its layer over a sequence, its single step, and its gate blocks per
  hidden unit (the width of one input projection is `gates * hidden`)."""

  layer: type[RecurrentLayer]
  step: type[nn.Module]
  gates: int


# Recurrent cells by `model.cell` name.
CELLS = {'gru': Cell(GRULayer, GRUStep, 3), 'lstm': Cell(LSTMLayer, LSTMStep, 4)}


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


def reverse_within_length(x: Array, lengths: Array) -> Array:
  """Each row's first `length` steps reversed, its padding left in place: x [batch, time,
  ...]. Its own inverse, so it also maps a backward layer's outputs back in time."""
  time = jnp.arange(x.shape[1])[None, :]
  index = jnp.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)
