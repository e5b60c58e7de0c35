"""Input pipeline: the entry point from a data config to tokenizers and batches, and the
top of `data/` (see `data/__init__.py` for the order of its modules).

`prepare(config.data, workdir)` reads the data config once (`settings`) and hands each
step the values it uses: the source's pairs (`sources.py`) -> tokenizers -> id arrays,
prepared once (`prepared.py`: reused by later runs, memory-mapped) -> shuffled, padded
NumPy batches (`batching.Batcher`). No corpus text is kept for training.

Batches are a pure function of (seed, epoch, index): a `Batcher` resumes at any position.
"""

from __future__ import annotations

import os
from typing import Any

from seq2seq_jax.data import encoding, sources, textfiles, tokenizers
from seq2seq_jax.data.batching import Batch, Batcher, make_batch, make_source_batch
from seq2seq_jax.data.encoding import EncodedPairs, encode_pairs
from seq2seq_jax.data.prepared import Data, DataSettings, make_data

# The names other packages use from here (defined in the modules below this one).
__all__ = [
  'Batch',
  'Batcher',
  'Data',
  'EncodedPairs',
  'encode_pairs',
  'languages',
  'load_pairs',
  'make_batch',
  'make_source_batch',
  'prepare',
  'settings',
]


def settings(data_cfg: Any) -> DataSettings:  # noqa: ANN401
  """Everything the preparation uses from a data config (`configs/default.py`'s `data`
  fields), read here once: the source, the splits, the tokenizer and length settings."""
  source = sources.from_config(data_cfg)
  return DataSettings(
    source=source,
    train_split=data_cfg.train_split,
    val_split=data_cfg.val_split,
    max_pairs=int(data_cfg.max_pairs),
    tokenizer=tokenizers.TokenizerSettings.from_config(data_cfg, source),
    lengths=encoding.Lengths(
      int(data_cfg.num_steps), int(data_cfg.max_len), float(data_cfg.length_quantile)
    ),
    data_dir=os.path.expanduser(data_cfg.data_dir),
  )


def prepare(data_cfg: Any, workdir: str | None) -> Data:  # noqa: ANN401
  """The tokenizers and the encoded training and validation splits (`prepared.make_data`:
  from the prepared files when this source and these settings were prepared before)."""
  return make_data(settings(data_cfg), workdir)


def languages(data_cfg: Any) -> tuple[str, str]:  # noqa: ANN401
  """The (source, target) language codes of a data config."""
  return data_cfg.src_lang, data_cfg.tgt_lang


def load_pairs(data_cfg: Any, split: str) -> list[tuple[str, str]]:  # noqa: ANN401
  """(source, target) pairs of a split of the config's data source (slices like
  'full[:512]' allowed), the first `data.max_pairs` when that is set."""
  chunks = sources.from_config(data_cfg).iter_pairs(split)
  return [pair for chunk in textfiles.capped(chunks, int(data_cfg.max_pairs)) for pair in chunk]
