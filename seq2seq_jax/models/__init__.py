"""Flax modules: the encoder-decoder families, chosen by `model.arch` (`registry.py`).

`build(config.model, src_vocab_size=..., tgt_vocab_size=...)` makes a model. Each family
is a module that registers its builder; importing it here registers it. The recurrent
family (`rnn.py`, the seed's GRU encoder-decoder and its variants), read top to bottom as
the seed chapter: `seq2seq.py` (the encoder and decoder interfaces, `EncoderDecoder`, the
GRU encoder, the recurrent decoders' base and the seed's decoder), `attention.py` (the
Bahdanau decoder), `recurrent.py` (GRU/LSTM steps and layers), `ops.py` (the numerical
kernels under them). The Transformer family (`transformer.py`, the book's "Transformer
Architecture") fills the same `Encoder`/`Decoder` interface. What a family's model must
offer to be decoded is written down in `seq2seq_jax/decoding/interface.py`.
"""

from __future__ import annotations

from seq2seq_jax.models import ops, registry, rnn, transformer
from seq2seq_jax.models.attention import Seq2SeqAttentionDecoder
from seq2seq_jax.models.recurrent import CELLS
from seq2seq_jax.models.rnn import DECODERS, DTYPES, build_model
from seq2seq_jax.models.seq2seq import (
  Decoder,
  Encoder,
  EncoderDecoder,
  RecurrentDecoder,
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
  'RecurrentDecoder',
  'Seq2SeqAttentionDecoder',
  'Seq2SeqDecoder',
  'Seq2SeqEncoder',
  'build',
  'build_model',
  'families',
  'ops',
  'rnn',
  'transformer',
]

build = registry.build
families = registry.families
