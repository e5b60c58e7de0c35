"""The book's Bahdanau decoder: additive attention over the encoder outputs at every step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models import ops
from seq2seq_jax.models.recurrent import CELLS, carry_hidden, layer_carry
from seq2seq_jax.models.seq2seq import RecurrentDecoder

Array = jax.Array
Dtype = Any
NEG_INF = -1e9


class AdditiveAttention(nn.Module):
  """Bahdanau attention: score(q, k) = w_v . tanh(W_q q + W_k k), padding masked.

  The keys arrive projected (`W_k k`, computed once per sentence by the decoder)."""

  num_hiddens: int
  dtype: Dtype = jnp.float32

  def setup(self) -> None:
    h = self.num_hiddens
    self.w_q = ops.dense(h, h, use_bias=False, dtype=self.dtype)
    self.w_v = ops.dense(1, h, use_bias=False, dtype=self.dtype)

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
    cell = CELLS[self.cell]
    context, weights = AdditiveAttention(self.num_hiddens, self.dtype, name='attention')(
      h_top, memory['keys'], memory['values'], memory['mask']
    )
    fan_in0 = self.embed_size + self.num_hiddens
    x_proj = emb_proj + ops.dense(
      cell.gates * self.num_hiddens, fan_in0, use_bias=False, dtype=self.dtype, name='context_proj'
    )(context).astype(jnp.float32)
    new_carry = []
    x = None
    for i in range(self.num_layers):
      if i > 0:
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x_proj = ops.dense(
          cell.gates * self.num_hiddens,
          self.num_hiddens,
          bias_fan_in=self.num_hiddens,
          dtype=self.dtype,
          name=f'input_{i}',
        )(x).astype(jnp.float32)
      h, out = cell.step(self.num_hiddens, self.dtype, name=f'cell_{i}')(carry[i], (x_proj, None))
      new_carry.append(h)
      x = out
    return tuple(new_carry), (x, weights)


class Seq2SeqAttentionDecoder(RecurrentDecoder):
  """The book's Bahdanau decoder: every step attends over the encoder outputs (source
  padding masked) with the previous top-layer state as the query. Attention weights
  are sown into the 'intermediates' collection (free unless it is made mutable)."""

  def setup(self) -> None:
    super().setup()
    fan_in0 = self.embed_size + self.num_hiddens
    self.key_proj = ops.dense(self.num_hiddens, self.num_hiddens, use_bias=False, dtype=self.dtype)
    self.embed_proj = ops.dense(
      CELLS[self.cell].gates * self.num_hiddens,
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

  has_attention = True  # `attention_plot` can show its weights

  def init_state(
    self, enc_all_outputs: tuple[Array, Array], src_len: Array, max_steps: int = 0
  ) -> dict:
    del max_steps  # no cache: the state does not grow
    outputs, enc_state = enc_all_outputs
    mask = jnp.arange(outputs.shape[1])[None, :] < src_len[:, None]
    return {
      'values': outputs,
      'keys': self.key_proj(outputs).astype(jnp.float32),
      'mask': mask,
      'hidden': tuple(layer_carry(enc_state, i) for i in range(self.num_layers)),
    }

  def features(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """The top layer's outputs [batch, time, hidden]; sows the attention weights."""
    emb_proj = self.embed_proj(self.embedding(tgt_in)).astype(jnp.float32)
    memory = {k: state[k] for k in ('keys', 'values', 'mask')}
    hidden, (x, weights) = self.step(state['hidden'], emb_proj, memory, train)
    self.sow('intermediates', 'attention', weights)  # [batch, tgt time, src time]
    return x, {**state, 'hidden': hidden}
