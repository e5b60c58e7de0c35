"""The recurrent family (`model.arch='rnn'`): the seed's GRU encoder-decoder and its
variants, from the config's `model` fields (`decoder`, `cell`, `bidirectional`, ...).

`build_model(**fields, src_vocab_size=..., tgt_vocab_size=...)` makes the model from
plain values and checks them (a bad value is an `errors.ConfigError` naming
`model.FIELD` and the value); `build_rnn` is the builder registered for the family.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from seq2seq_jax import errors
from seq2seq_jax.models import ops, registry
from seq2seq_jax.models.attention import Seq2SeqAttentionDecoder
from seq2seq_jax.models.recurrent import CELLS
from seq2seq_jax.models.seq2seq import EncoderDecoder, Seq2SeqDecoder, Seq2SeqEncoder

# `model.decoder` and `model.dtype` names.
DECODERS = {'plain': Seq2SeqDecoder, 'attention': Seq2SeqAttentionDecoder}
DTYPES = ops.DTYPES


def _check(
  *, decoder: str, cell: str, dtype: str, sizes: dict[str, int], unroll: int, dropout: float
) -> None:
  """Raises `errors.ConfigError` naming the first bad `model.FIELD` and its value."""
  if cell not in CELLS:
    raise errors.ConfigError(f'model.cell must be one of {sorted(CELLS)}, got {cell!r}')
  if decoder not in DECODERS:
    raise errors.ConfigError(f'model.decoder must be one of {sorted(DECODERS)}, got {decoder!r}')
  if dtype not in DTYPES:
    raise errors.ConfigError(
      f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}"
    )
  for name, value in sizes.items():
    if value < 1:
      raise errors.ConfigError(f'model.{name} must be at least 1, got {value}')
  if unroll < 0:
    raise errors.ConfigError(f'model.unroll must be 0 (whole sequences) or positive, got {unroll}')
  if not 0.0 <= dropout < 1.0:
    raise errors.ConfigError(f'model.dropout must be in [0, 1), got {dropout}')


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
  bidirectional: bool = False,
  tie_embeddings: bool = False,
) -> EncoderDecoder:
  """The seq2seq model from plain hyperparameters (`build_model(**fields, ...)`)."""
  if dtype == 'auto':
    dtype = ops.auto_dtype()
  sizes = dict(embed_size=embed_size, num_hiddens=num_hiddens, num_layers=num_layers)
  _check(decoder=decoder, cell=cell, dtype=dtype, sizes=sizes, unroll=unroll, dropout=dropout)
  common = dict(**sizes, dropout=dropout, dtype=DTYPES[dtype], unroll=unroll, cell=cell)
  return EncoderDecoder(
    encoder=Seq2SeqEncoder(vocab_size=src_vocab_size, bidirectional=bool(bidirectional), **common),
    decoder=DECODERS[decoder](
      vocab_size=tgt_vocab_size, tie_embeddings=bool(tie_embeddings), **common
    ),
  )


# The `model` fields of this family: `build_model`'s keywords but the vocabulary sizes.
FIELDS = tuple(
  name
  for name in inspect.signature(build_model).parameters
  if name not in ('src_vocab_size', 'tgt_vocab_size')
)


@registry.register('rnn', fields=FIELDS)
def build_rnn(
  model_cfg: Mapping[str, Any], *, src_vocab_size: int, tgt_vocab_size: int
) -> EncoderDecoder:
  """The family's builder: `model_cfg` holds this family's fields (`FIELDS`)."""
  return build_model(**model_cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
