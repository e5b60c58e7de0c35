"""The seed's encoder-decoder: the interfaces, the GRU encoder, the base of the recurrent
decoders (`RecurrentDecoder`) and the plain decoder.

Shape convention: batch-major. Token ids are `[batch, time]`; encoder outputs are
`[batch, time, hidden]` (the seed's PyTorch code is time-major, `[time, batch, hidden]`);
the encoder's final state is `[layers, batch, hidden]` exactly as the seed's. Decoder
states are dicts whose leaves all have the batch on axis 0, so that decoding (greedy and
beam search) can gather and reorder them without knowing what they hold: `EncoderDecoder`
offers `init_decoder` and `decode_step`, the interface of `decoding/interface.py`.

Initialisation is the seed's `init_seq2seq` (Xavier-uniform weights) with PyTorch's
defaults elsewhere. The recurrent layers are in `recurrent.py`, the kernels under them in
`ops.py`, the attention decoder (the book's next chapter) in `attention.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models import ops
from seq2seq_jax.models.recurrent import (
  CELLS,
  carry_hidden,
  layer_carry,
  reverse_within_length,
  zero_carry,
)

Array = jax.Array
Dtype = Any


class Encoder(nn.Module):
  """The seed's encoder interface: a source sequence -> what the decoder's `init_state`
  reads (the recurrent encoders: (outputs, state); the Transformer's: outputs)."""

  def __call__(self, src: Array, src_len: Array, *, train: bool = False) -> Any:
    raise NotImplementedError


class Decoder(nn.Module):
  """The decoder interface: `init_state` from the encoder, then `__call__(X, state)`, which
  is `features` (the top layer's outputs) followed by `logits` (the output layer)."""

  def init_state(self, enc_all_outputs: Any, src_len: Array, max_steps: int = 0) -> dict:
    """The decoding state from the encoder's result (the recurrent encoders' (outputs,
    state), the Transformer's outputs); every leaf [batch, ...]. `max_steps`: how many
    tokens will be fed one at a time (a decoder with a cache sizes it by this; 0: the
    target comes whole, as in training)."""
    raise NotImplementedError

  def features(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """tgt_in: [batch, time] ids -> top-layer features [batch, time, hidden], new state."""
    raise NotImplementedError

  def logits(self, x: Array) -> Array:
    """The output layer: features [..., hidden] -> float32 logits [..., vocab]."""
    raise NotImplementedError

  def __call__(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """tgt_in: [batch, time] ids. Returns logits [batch, time, vocab] and the new state."""
    x, state = self.features(tgt_in, state, train=train)
    return self.logits(x), state


class EncoderDecoder(nn.Module):
  """The seed's `EncoderDecoder`: wires an encoder and a decoder. `init_decoder` and
  `decode_step` are what the searches use (`decoding/interface.py`: `DecodingModel`)."""

  encoder: Encoder
  decoder: Decoder

  @property
  def has_attention(self) -> bool:
    """Whether the decoder sows attention weights (`attention_plot` can show them)."""
    return bool(getattr(self.decoder, 'has_attention', False))

  @property
  def max_positions(self) -> int | None:
    """The longest sequence the model can read or write (the Transformer's positional
    table); None: no limit (the recurrent family)."""
    return getattr(self.decoder, 'max_positions', None)

  @property
  def tgt_vocab_size(self) -> int:
    """The output vocabulary (what `train.steps.eval_step` sizes its logit slices by)."""
    return self.decoder.vocab_size

  def __call__(self, src: Array, src_len: Array, tgt_in: Array, *, train: bool = False) -> Array:
    """Teacher-forced logits [batch, tgt time, tgt vocab]."""
    state = self.init_decoder(src, src_len, train=train)
    return self.decoder(tgt_in, state, train=train)[0]

  def features(self, src: Array, src_len: Array, tgt_in: Array, *, train: bool = False) -> Array:
    """Teacher-forced top-layer features [batch, tgt time, hidden]. The training loss does
    not use them; `train.steps.eval_step` projects them with `project` a slice of rows
    at a time, so that an evaluation holds a bounded amount of logits."""
    state = self.init_decoder(src, src_len, train=train)
    return self.decoder.features(tgt_in, state, train=train)[0]

  def project(self, x: Array) -> Array:
    """The decoder's output layer: features [..., hidden] -> float32 logits [..., vocab]."""
    return self.decoder.logits(x)

  def init_decoder(
    self, src: Array, src_len: Array, *, train: bool = False, max_steps: int = 0
  ) -> dict:
    """Runs the encoder; returns the decoder's initial state for `max_steps` decoding
    steps (0: for a whole target at once)."""
    enc_all_outputs = self.encoder(src, src_len, train=train)
    return self.decoder.init_state(enc_all_outputs, src_len, max_steps)

  def decode_step(self, tokens: Array, state: dict) -> tuple[Array, dict]:
    """One decoding step: tokens [batch] -> logits [batch, vocab], new state."""
    logits, state = self.decoder(tokens[:, None], state, train=False)
    return logits[:, 0], state


class Recurrent(nn.Module):
  """The fields the recurrent encoder and decoders share, and their embedding table."""

  vocab_size: int
  embed_size: int
  num_hiddens: int
  num_layers: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  unroll: int = 1
  cell: str = 'gru'  # a key of `recurrent.CELLS`: 'gru' or 'lstm'

  def make_embedding(self) -> nn.Embed:
    """The token embedding [vocab, embed], initialised N(0, 1) as PyTorch's."""
    return nn.Embed(self.vocab_size, self.embed_size, embedding_init=nn.initializers.normal(1.0))


class Seq2SeqEncoder(Recurrent, Encoder):
  """Embedding -> `num_layers` GRU (or LSTM: `cell`) layers with dropout between them."""

  bidirectional: bool = False

  def setup(self) -> None:
    self.embedding = self.make_embedding()
    layer, h = CELLS[self.cell].layer, self.num_hiddens
    self.layers = [layer(h, dtype=self.dtype, unroll=self.unroll) for _ in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)
    if self.bidirectional:
      # Each layer reads its input both ways; the next layer reads both outputs [fwd; bwd].
      # The decoder keeps its sizes: the top outputs and each layer's final states are
      # projected from 2 hidden to hidden (tanh on h, as the paper's s_0 = tanh(W h_1)).
      self.backward_layers = [
        layer(h, dtype=self.dtype, unroll=self.unroll) for _ in range(self.num_layers)
      ]
      self.output_proj = ops.dense(h, 2 * h, dtype=self.dtype)
      parts = 2 if self.cell == 'lstm' else 1  # a bridge for h (and for c)
      self.bridges = [
        [ops.dense(h, 2 * h, dtype=self.dtype) for _ in range(parts)]
        for _ in range(self.num_layers)
      ]

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
      carry0 = zero_carry(self.cell, batch, self.num_hiddens)
      out, h = layer(x, carry0, mask)
      if self.bidirectional:
        back, h_back = self.backward_layers[i](reverse_within_length(x, src_len), carry0, mask)
        out = jnp.concatenate([out, reverse_within_length(back, src_len)], axis=-1)
        h = self._bridge(i, h, h_back)
      x = out
      states.append(h)
    if self.bidirectional:
      x = self.output_proj(x).astype(jnp.float32)
    return x, jax.tree.map(lambda *s: jnp.stack(s), *states)

  def _bridge(self, i: int, fwd: Any, back: Any) -> Any:
    """Layer i's decoder initial state from its final forward and backward states."""
    if self.cell == 'lstm':
      (hf, cf), (hb, cb) = fwd, back
      h = jnp.tanh(self.bridges[i][0](jnp.concatenate([hf, hb], -1)).astype(jnp.float32))
      return h, self.bridges[i][1](jnp.concatenate([cf, cb], -1)).astype(jnp.float32)
    return jnp.tanh(self.bridges[i][0](jnp.concatenate([fwd, back], -1)).astype(jnp.float32))


class RecurrentDecoder(Recurrent, Decoder):
  """What the recurrent decoders share: their fields, the target embedding (`embedding`)
  and the output layer (`dense`: a Dense from the hidden size, or with `tie_embeddings`
  `ops.TiedOutput` over the embedding table). A subclass adds its layers in `setup` (after
  `super().setup()`) and writes `init_state` and `features`."""

  tie_embeddings: bool = False  # output layer = the embedding table

  def setup(self) -> None:
    self.embedding = self.make_embedding()
    if self.tie_embeddings:
      self.dense = ops.TiedOutput(self.vocab_size, self.embed_size, dtype=self.dtype)
    else:
      self.dense = ops.dense(self.vocab_size, self.num_hiddens, dtype=self.dtype)

  def logits(self, x: Array) -> Array:
    if self.tie_embeddings:
      return self.dense(x, self.embedding.embedding)
    return self.dense(x).astype(jnp.float32)


class Seq2SeqDecoder(RecurrentDecoder):
  """The seed's decoder: the context (the encoder's top-layer final state) is joined to
  every step's embedding; GRU layers start from the encoder's final states."""

  def setup(self) -> None:
    super().setup()
    fan_in0 = self.embed_size + self.num_hiddens
    cell = CELLS[self.cell]
    # The context is the same at every step: its share of layer 0's input projection is
    # computed once per sentence (in `init_state`), not once per step.
    self.context_proj = ops.dense(
      cell.gates * self.num_hiddens, fan_in0, use_bias=False, dtype=self.dtype
    )
    self.layers = [
      cell.layer(
        self.num_hiddens, fan_in=fan_in0 if i == 0 else None, dtype=self.dtype, unroll=self.unroll
      )
      for i in range(self.num_layers)
    ]
    self.drop = nn.Dropout(self.dropout)

  def init_state(
    self, enc_all_outputs: tuple[Array, Array], src_len: Array, max_steps: int = 0
  ) -> dict:
    del src_len, max_steps  # the encoder's state is already taken at the last real token
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
