"""Flax modules: the seed's encoder-decoder with GRU (or LSTM) layers built from `nn.scan`.

Read top to bottom, as the seed chapter: `seq2seq.py` (the encoder and decoder
interfaces, `EncoderDecoder`, the GRU encoder and the seed's decoder), `attention.py`
(the Bahdanau decoder), `recurrent.py` (GRU/LSTM steps and layers), `ops.py` (the
numerical kernels under them). `build_model` makes the model from config values.
"""

from __future__ import annotations

import jax.numpy as jnp

from seq2seq_jax.models import ops, registry
from seq2seq_jax.models.attention import Seq2SeqAttentionDecoder
from seq2seq_jax.models.recurrent import CELLS
from seq2seq_jax.models.seq2seq import (
  Decoder,
  Encoder,
  EncoderDecoder,
  Seq2SeqDecoder,
  Seq2SeqEncoder,
)

__all__ = [
  'CELLS',
  'DECODERS',
  'DTYPES',
  'Decoder',
  'Encoder',
  'EncoderDecoder',
  'Seq2SeqAttentionDecoder',
  'Seq2SeqDecoder',
  'Seq2SeqEncoder',
  'build',
  'build_model',
  'families',
]

DECODERS = {'plain': Seq2SeqDecoder, 'attention': Seq2SeqAttentionDecoder}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
build = registry.build
families = registry.families


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
  """The seq2seq model from plain hyperparameters (`build_model(**config.model, ...)`)."""
  if cell not in CELLS:
    raise ValueError(f'model.cell must be one of {sorted(CELLS)}, got {cell!r}')
  if decoder not in DECODERS:
    raise ValueError(f'model.decoder must be one of {sorted(DECODERS)}, got {decoder!r}')
  if dtype == 'auto':
    dtype = ops.auto_dtype()
  if dtype not in DTYPES:
    raise ValueError(f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
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
    encoder=Seq2SeqEncoder(vocab_size=src_vocab_size, bidirectional=bool(bidirectional), **common),
    decoder=DECODERS[decoder](
      vocab_size=tgt_vocab_size, tie_embeddings=bool(tie_embeddings), **common
    ),
  )


@registry.register('rnn')
def build_rnn(model_cfg, *, src_vocab_size: int, tgt_vocab_size: int) -> EncoderDecoder:  # noqa: ANN001
  """The recurrent family (`model.arch='rnn'`): the seed's GRU encoder-decoder and its
  variants (`model.decoder`, `model.cell`, `model.bidirectional`, ...)."""
  fields = {k: v for k, v in dict(model_cfg).items() if k != 'arch'}
  return build_model(**fields, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
