"""The book's Transformer ("The Transformer Architecture") behind the seed's interface:
`TransformerEncoder` is an `Encoder`, `TransformerDecoder` a `Decoder` with `init_state`,
and `seq2seq.EncoderDecoder` wires them as it wires the GRUs (`model.arch='transformer'`).

As the book: token embeddings scaled by sqrt(d) plus sinusoidal positional encodings,
then dropout; blocks of scaled dot-product multi-head attention (source padding masked;
causal in the decoder's self-attention) and a position-wise FFN (dense, ReLU, dense),
each sublayer followed by `AddNorm` (dropout on the sublayer's output, the residual, a
layer norm); dropout on the attention weights; projections without bias. `pre_norm=True`
puts the norm before each sublayer (x + dropout(sublayer(norm(x)))) with one final norm
per stack, the arrangement that trains deeper stacks stably. Parameters start as the
book's PyTorch modules do (weights and biases uniform in +-1/sqrt(fan_in), embeddings
N(0, 1), or N(0, 1/d) when the output layer is tied to them, since tied logits would
otherwise start with a standard deviation of sqrt(d)).

Decoding: the decoder's state holds the encoder outputs' keys and values for every
block's cross-attention (computed once per sentence), the source mask, each block's
self-attention key/value cache [batch, steps, d] and the next position [batch]; every
leaf has the batch on axis 0, so the searches of `decoding/` gather and reorder it as
any other state. A state made with `max_steps=0` (training, teacher forcing) has empty
caches: the decoder then reads the whole target at once under a causal mask. One step
with the cache gives the teacher-forced logits of that position (a test checks it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import errors
from seq2seq_jax.models import ops, registry
from seq2seq_jax.models.seq2seq import Decoder, Encoder, EncoderDecoder

Array = jax.Array
Dtype = Any
NEG_INF = -1e9


def positional_encoding(max_positions: int, d: int) -> np.ndarray:
  """The book's table [positions, d]: P[i, 2j] = sin(i / 10000^(2j/d)), P[i, 2j+1] = cos."""
  angles = np.arange(max_positions, dtype=np.float64)[:, None] / np.power(
    10000.0, np.arange(0, d, 2, dtype=np.float64) / d
  )
  table = np.zeros((max_positions, d), np.float32)
  table[:, 0::2] = np.sin(angles)
  table[:, 1::2] = np.cos(angles[:, : d // 2])
  return table


def linear(
  features: int, fan_in: int, *, use_bias: bool, dtype: Dtype, name: str | None = None
) -> ops.Dense:
  """PyTorch's `nn.Linear` initialisation (the book's Transformer keeps it): weights and
  bias uniform in +-1/sqrt(fan_in); the matmul through `ops.affine`."""
  init = ops.torch_bias(fan_in)
  return ops.Dense(
    features, use_bias=use_bias, kernel_init=init, bias_init=init, dtype=dtype, name=name
  )


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention in `num_heads` heads of d / num_heads: W_q, W_k, W_v and
  W_o without bias (the book's `use_bias=False`); dropout on the weights."""

  num_hiddens: int
  num_heads: int
  dropout: float
  dtype: Dtype = jnp.float32

  def setup(self) -> None:
    d = self.num_hiddens
    self.w_q = linear(d, d, use_bias=False, dtype=self.dtype)
    self.w_k = linear(d, d, use_bias=False, dtype=self.dtype)
    self.w_v = linear(d, d, use_bias=False, dtype=self.dtype)
    self.w_o = linear(d, d, use_bias=False, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def keys_values(self, x: Array) -> tuple[Array, Array]:
    """x [batch, time, d] -> keys and values [batch, time, d] (float32)."""
    return self.w_k(x), self.w_v(x)

  def __call__(
    self, x: Array, keys: Array, values: Array, mask: Array, *, train: bool = False
  ) -> tuple[Array, Array]:
    """Queries from x [batch, tq, d] over keys/values [batch, tk, d]; mask broadcasts to
    [batch, heads, tq, tk] (True: may attend). Returns [batch, tq, d] and the weights
    [batch, heads, tq, tk]."""
    h = self.num_heads
    split = lambda a: a.reshape(a.shape[:2] + (h, a.shape[-1] // h))  # noqa: E731
    q, k, v = split(self.w_q(x)), split(keys), split(values)
    scores = ops.batched('bqhc,bkhc->bhqk', q, k, self.dtype) / math.sqrt(q.shape[-1])
    weights = jax.nn.softmax(jnp.where(mask, scores, NEG_INF), axis=-1)
    out = ops.batched('bhqk,bkhc->bqhc', self.drop(weights, deterministic=not train), v, self.dtype)
    return self.w_o(out.reshape(out.shape[:2] + (-1,))), weights


class FFN(nn.Module):
  """The position-wise feed-forward network: dense (ffn_size), ReLU, dense (d)."""

  num_hiddens: int
  ffn_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = linear(self.ffn_size, self.num_hiddens, use_bias=True, dtype=self.dtype, name='dense1')(x)
    y = jax.nn.relu(y)
    return linear(self.num_hiddens, self.ffn_size, use_bias=True, dtype=self.dtype, name='dense2')(
      y
    )


class Sublayer(nn.Module):
  """The book's `AddNorm` around a sublayer: norm(x + dropout(y)); with `pre_norm`,
  x + dropout(y) where the sublayer read norm(x) (`normed`)."""

  dropout: float
  pre_norm: bool = False

  def setup(self) -> None:
    self.norm = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32)
    self.drop = nn.Dropout(self.dropout)

  def normed(self, x: Array) -> Array:
    """What the sublayer reads: norm(x) before it (pre-norm), else x."""
    return self.norm(x) if self.pre_norm else x

  def __call__(self, x: Array, y: Array, *, train: bool = False) -> Array:
    z = x + self.drop(y, deterministic=not train)
    return z if self.pre_norm else self.norm(z)


class Stack(nn.Module):
  """What the encoder and decoder share: the fields, the embedding (scaled by sqrt(d))
  plus positional encoding with dropout, and the final norm of a pre-norm stack."""

  vocab_size: int
  num_hiddens: int
  num_layers: int
  num_heads: int
  ffn_size: int
  dropout: float = 0.0
  pre_norm: bool = False
  max_positions: int = 1000
  dtype: Dtype = jnp.float32
  tie_embeddings: bool = False

  def setup_stack(self, block: type[nn.Module]) -> None:
    """For a subclass's `setup`: the embedding, its dropout, `num_layers` blocks of class
    `block` and (pre-norm) the final norm."""
    self.embedding = self.make_embedding()
    self.embed_drop = nn.Dropout(self.dropout)
    fields = (self.num_hiddens, self.num_heads, self.ffn_size, self.dropout, self.pre_norm)
    self.blocks = [block(*fields, self.dtype) for _ in range(self.num_layers)]
    if self.pre_norm:
      self.final_norm = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32)

  def make_embedding(self) -> nn.Embed:
    std = self.num_hiddens**-0.5 if self.tie_embeddings else 1.0
    return nn.Embed(self.vocab_size, self.num_hiddens, embedding_init=nn.initializers.normal(std))

  def embed(self, ids: Array, positions: Array, *, train: bool) -> Array:
    """ids, positions [batch, time] -> [batch, time, d]: embedding * sqrt(d) + P, dropout."""
    table = jnp.asarray(positional_encoding(self.max_positions, self.num_hiddens))
    x = self.embedding(ids) * math.sqrt(self.num_hiddens) + table[positions]
    return self.embed_drop(x, deterministic=not train)

  def check_length(self, steps: int, what: str) -> None:
    if steps > self.max_positions:
      raise errors.ConfigError(
        f'{what} of {steps} tokens is longer than the positional table '
        f'(model.max_positions={self.max_positions}); raise model.max_positions or cut it '
        '(data.max_len, --max_len)'
      )


class EncoderBlock(nn.Module):
  num_hiddens: int
  num_heads: int
  ffn_size: int
  dropout: float
  pre_norm: bool
  dtype: Dtype

  def setup(self) -> None:
    self.attention = MultiHeadAttention(self.num_hiddens, self.num_heads, self.dropout, self.dtype)
    self.addnorm1 = Sublayer(self.dropout, self.pre_norm)
    self.ffn = FFN(self.num_hiddens, self.ffn_size, self.dtype)
    self.addnorm2 = Sublayer(self.dropout, self.pre_norm)

  def __call__(self, x: Array, mask: Array, *, train: bool = False) -> Array:
    a = self.addnorm1.normed(x)
    context = self.attention(a, *self.attention.keys_values(a), mask, train=train)[0]
    y = self.addnorm1(x, context, train=train)
    return self.addnorm2(y, self.ffn(self.addnorm2.normed(y)), train=train)


class TransformerEncoder(Stack, Encoder):
  """Embedding + positions, `num_layers` blocks (self-attention over the real source
  tokens, FFN). Returns the outputs [batch, time, d] (the book's encoder has no state)."""

  def setup(self) -> None:
    self.setup_stack(EncoderBlock)

  def __call__(self, src: Array, src_len: Array, *, train: bool = False) -> Array:
    batch, steps = src.shape
    self.check_length(steps, 'a source')
    positions = jnp.broadcast_to(jnp.arange(steps), (batch, steps))
    x = self.embed(src, positions, train=train)
    mask = (jnp.arange(steps)[None, :] < src_len[:, None])[:, None, None, :]
    for block in self.blocks:
      x = block(x, mask, train=train)
    return self.final_norm(x) if self.pre_norm else x


class DecoderBlock(nn.Module):
  num_hiddens: int
  num_heads: int
  ffn_size: int
  dropout: float
  pre_norm: bool
  dtype: Dtype

  def setup(self) -> None:
    args = (self.num_hiddens, self.num_heads, self.dropout, self.dtype)
    self.self_attention = MultiHeadAttention(*args)
    self.addnorm1 = Sublayer(self.dropout, self.pre_norm)
    self.cross_attention = MultiHeadAttention(*args)
    self.addnorm2 = Sublayer(self.dropout, self.pre_norm)
    self.ffn = FFN(self.num_hiddens, self.ffn_size, self.dtype)
    self.addnorm3 = Sublayer(self.dropout, self.pre_norm)

  def memory(self, enc_outputs: Array) -> tuple[Array, Array]:
    """The cross-attention's keys and values of the encoder outputs (once per sentence)."""
    return self.cross_attention.keys_values(enc_outputs)

  def __call__(
    self,
    x: Array,
    cache: tuple[Array, Array],
    memory: tuple[Array, Array],
    src_mask: Array,
    positions: Array,
    *,
    train: bool,
  ) -> tuple[Array, tuple[Array, Array], Array]:
    """x [batch, t, d] at `positions` [batch, t]. With an empty cache (capacity 0) the
    self-attention reads x alone, causally; else x's keys/values are written into the
    cache at their positions and the queries read the cache up to their own position.
    Returns the output, the cache and the cross-attention weights [batch, heads, t, src]."""
    a = self.addnorm1.normed(x)
    k, v = self.self_attention.keys_values(a)
    if cache[0].shape[1] == 0:
      causal = positions[:, :, None] >= positions[:, None, :]
    else:
      rows = jnp.arange(x.shape[0])[:, None]
      cache = (cache[0].at[rows, positions].set(k), cache[1].at[rows, positions].set(v))
      k, v = cache
      causal = jnp.arange(k.shape[1])[None, None, :] <= positions[:, :, None]
    y = self.addnorm1(x, self.self_attention(a, k, v, causal[:, None], train=train)[0], train=train)
    context, weights = self.cross_attention(
      self.addnorm2.normed(y), *memory, src_mask[:, None, None, :], train=train
    )
    z = self.addnorm2(y, context, train=train)
    return self.addnorm3(z, self.ffn(self.addnorm3.normed(z)), train=train), cache, weights


class TransformerDecoder(Stack, Decoder):
  """Embedding + positions, `num_layers` blocks (causal self-attention, cross-attention
  over the encoder outputs, FFN), the output layer (a dense layer, or with
  `tie_embeddings` the embedding table). Sows the last block's cross-attention into
  'intermediates': `attention` [batch, tgt, src] (mean over heads) and `attention_heads`
  [batch, heads, tgt, src]."""

  has_attention = True  # `attention_plot` can show its cross-attention

  def setup(self) -> None:
    self.setup_stack(DecoderBlock)
    if self.tie_embeddings:
      self.dense = ops.TiedOutput(self.vocab_size, self.num_hiddens, dtype=self.dtype)
    else:
      self.dense = linear(self.vocab_size, self.num_hiddens, use_bias=True, dtype=self.dtype)

  def init_state(self, enc_outputs: Array, src_len: Array, max_steps: int = 0) -> dict:
    """The state for decoding up to `max_steps` tokens one at a time (0: none; the target
    then comes whole, as in training)."""
    self.check_length(max_steps, 'an output')
    batch, steps, d = enc_outputs.shape
    empty = jnp.zeros((batch, max_steps, d), jnp.float32)
    return {
      'memory': tuple(block.memory(enc_outputs) for block in self.blocks),
      'src_mask': jnp.arange(steps)[None, :] < src_len[:, None],
      'cache': tuple((empty, empty) for _ in self.blocks),
      'position': jnp.zeros((batch,), jnp.int32),
    }

  def features(self, tgt_in: Array, state: dict, *, train: bool = False) -> tuple[Array, dict]:
    """tgt_in [batch, t] at positions `state['position']` onwards -> the top block's
    outputs [batch, t, d] (after the final norm of a pre-norm stack) and the new state."""
    batch, steps = tgt_in.shape
    self.check_length(steps, 'a target')
    positions = state['position'][:, None] + jnp.arange(steps)[None, :]
    x = self.embed(tgt_in, positions, train=train)
    caches, weights = [], None
    for block, memory, cache in zip(self.blocks, state['memory'], state['cache'], strict=True):
      x, cache, weights = block(x, cache, memory, state['src_mask'], positions, train=train)
      caches.append(cache)
    self.sow('intermediates', 'attention', jnp.mean(weights, axis=1))
    self.sow('intermediates', 'attention_heads', weights)
    if self.pre_norm:
      x = self.final_norm(x)
    return x, {**state, 'cache': tuple(caches), 'position': state['position'] + steps}

  def logits(self, x: Array) -> Array:
    if self.tie_embeddings:
      return self.dense(x, self.embedding.embedding)
    return self.dense(x).astype(jnp.float32)


def build_model(
  *,
  src_vocab_size: int,
  tgt_vocab_size: int,
  num_hiddens: int,
  num_layers: int,
  num_heads: int,
  ffn_size: int,
  dropout: float = 0.0,
  pre_norm: bool = False,
  tie_embeddings: bool = False,
  max_positions: int = 1000,
  dtype: str = 'float32',
) -> EncoderDecoder:
  """The Transformer from plain hyperparameters; a bad value is a `ConfigError` naming
  `model.FIELD`."""
  sizes = dict(
    num_hiddens=num_hiddens,
    num_layers=num_layers,
    num_heads=num_heads,
    ffn_size=ffn_size,
    max_positions=max_positions,
  )
  for name, value in sizes.items():
    if value < 1:
      raise errors.ConfigError(f'model.{name} must be at least 1, got {value}')
  if num_hiddens % num_heads:
    raise errors.ConfigError(
      f'model.num_heads={num_heads} must divide model.num_hiddens={num_hiddens} '
      '(each head gets num_hiddens / num_heads)'
    )
  if num_hiddens % 2:
    raise errors.ConfigError(
      f'model.num_hiddens must be even for the sinusoidal positions, got {num_hiddens}'
    )
  if not 0.0 <= dropout < 1.0:
    raise errors.ConfigError(f'model.dropout must be in [0, 1), got {dropout}')
  common = dict(
    **sizes,
    dropout=dropout,
    pre_norm=bool(pre_norm),
    dtype=ops.matmul_dtype(dtype),
    tie_embeddings=bool(tie_embeddings),
  )
  return EncoderDecoder(
    encoder=TransformerEncoder(vocab_size=src_vocab_size, **{**common, 'tie_embeddings': False}),
    decoder=TransformerDecoder(vocab_size=tgt_vocab_size, **common),
  )


# The `model` fields of this family: `build_model`'s keywords but the vocabulary sizes.
FIELDS = tuple(
  name
  for name in inspect.signature(build_model).parameters
  if name not in ('src_vocab_size', 'tgt_vocab_size')
)


@registry.register('transformer', fields=FIELDS)
def build_transformer(
  model_cfg: Mapping[str, Any], *, src_vocab_size: int, tgt_vocab_size: int
) -> EncoderDecoder:
  """The family's builder: `model_cfg` holds this family's fields (`FIELDS`)."""
  return build_model(**model_cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
