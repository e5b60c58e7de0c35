"""Small trained workdirs for the translate, evaluate and attention tests.

`trained_workdir(tmp_path_factory, decoder)` trains configs/tiny.py in-process on 60
made-up pairs (48 for training, 12 for validation) once per test session and decoder,
and returns the workdir. `decoder` is a recurrent decoder ('attention', 'plain') or
'transformer' (`model.arch='transformer'`: 2 blocks of width 16, 2 heads, FFN 32). The
models are trained for 36 steps, enough to learn the grammar's word-by-word translation
(validation BLEU about 20), so that their next-token distributions are peaked as a
trained model's are (the beam-search tests rely on it); tests check behaviour, not
translation quality.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import pytest

from configs import tiny
from seq2seq_jax.train import loop
from tests import synthetic

_WORKDIRS: dict[str, Path] = {}
_EXPORTED: dict[str, Path] = {}
_DATA: list[Path] = []
VAL_SPLIT = 'full[48:60]'  # the validation pairs of the trained workdirs


def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A directory holding fra.txt with 60 made-up pairs (written once per session)."""
  if not _DATA:
    _DATA.append(synthetic.write_fra_txt(tmp_path_factory.mktemp('fra_data'), n=60))
  return _DATA[0]


def use_transformer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """configs/tiny.py's sizes for the Transformer: 2 blocks of width 16, 2 heads, FFN 32."""
  config.model.arch = 'transformer'
  config.model.num_hiddens = 16
  config.model.num_layers = 2
  config.model.num_heads = 2
  config.model.ffn_size = 32
  return config


def trained_workdir(tmp_path_factory: pytest.TempPathFactory, decoder: str = 'attention') -> Path:
  """A workdir of configs/tiny.py with `model.decoder=decoder` (or the Transformer of
  `use_transformer` for 'transformer', evaluated every 4 epochs), trained for 12 epochs
  of 3 steps at a learning rate of 0.02."""
  if decoder not in _WORKDIRS:
    data = data_dir(tmp_path_factory)
    config = tiny.get_config()
    config.data.manual_dir = str(data)
    config.data.data_dir = str(data / 'tfds')
    config.data.train_split = 'full[:48]'
    config.data.val_split = VAL_SPLIT
    if decoder == 'transformer':
      use_transformer(config)
      config.train.eval_every_steps = 12  # 3 evaluations (each plots its curves)
    else:
      config.model.decoder = decoder
    config.train.num_epochs = 12
    config.train.learning_rate = 0.02
    config.train.log_every_steps = 6
    workdir = tmp_path_factory.mktemp(f'workdir_{decoder}')
    loop.train_and_evaluate(config, str(workdir))
    _WORKDIRS[decoder] = workdir
  return _WORKDIRS[decoder]


def exported_model(tmp_path_factory: pytest.TempPathFactory, decoder: str = 'attention') -> Path:
  """`trained_workdir(decoder)` exported (`seq2seq_jax.export`) once per test session, for
  cpu, cuda and tpu, scored on the validation pairs."""
  from seq2seq_jax import export

  if decoder not in _EXPORTED:
    out = tmp_path_factory.mktemp(f'exported_{decoder}') / 'model'
    export.export([trained_workdir(tmp_path_factory, decoder)], out, score_split=VAL_SPLIT)
    _EXPORTED[decoder] = out
  return _EXPORTED[decoder]
