"""Small trained workdirs for the translate, evaluate and attention tests.

`trained_workdir(tmp_path_factory, decoder)` trains configs/tiny.py in-process on 60
made-up pairs (48 for training, 12 for validation) and returns the workdir. `decoder` is
a recurrent decoder ('attention', 'plain') or 'transformer' (`model.arch='transformer'`:
2 blocks of width 16, 2 heads, FFN 32). The models are trained for 36 steps, enough to
learn the grammar's word-by-word translation (validation BLEU about 20), so that their
next-token distributions are peaked as a trained model's are (the beam-search tests rely
on it); tests check behaviour, not translation quality.

Each is built once per test session, not once per xdist worker: the first worker that
asks builds it in the session's shared temporary folder under a file lock; the other one
waits for it and reads it. Tests read these folders (one that changes a workdir copies
it; one that prepares data from `data_dir` does so in a folder of its own).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import filelock
import ml_collections
import pytest

from configs import tiny
from seq2seq_jax.train import loop
from tests import synthetic

VAL_SPLIT = 'full[48:60]'  # the validation pairs of the trained workdirs


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable) -> Path:
  """`build(folder)` run once per test session, by whichever xdist worker asks first,
  into `name` in the session's temporary folder (the workers' common parent); the folder."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # pytest-N/, above each worker's popen-gwK/
  folder = root / 'shared' / name
  folder.parent.mkdir(exist_ok=True)
  with filelock.FileLock(f'{folder}.lock'):
    if not (folder.parent / f'{name}.done').exists():
      shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
      folder.mkdir()
      build(folder)
      (folder.parent / f'{name}.done').touch()
  return folder


def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A directory holding fra.txt with 60 made-up pairs (written once per session)."""
  return _shared(tmp_path_factory, 'fra_data', lambda d: synthetic.write_fra_txt(d, n=60))


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
  data = data_dir(tmp_path_factory)

  def train(workdir: Path) -> None:
    config = tiny.get_config()
    config.data.manual_dir = str(data)
    config.data.data_dir = f'{workdir}_tfds'  # its own: the other worker may prepare data too
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
    loop.train_and_evaluate(config, str(workdir))

  return _shared(tmp_path_factory, f'workdir_{decoder}', train)


def exported_model(tmp_path_factory: pytest.TempPathFactory, decoder: str = 'attention') -> Path:
  """`trained_workdir(decoder)` exported (`seq2seq_jax.export`) once per test session, for
  cpu, cuda and tpu, scored on the validation pairs."""
  from seq2seq_jax import export

  workdir = trained_workdir(tmp_path_factory, decoder)

  def write(folder: Path) -> None:
    export.export([workdir], folder / 'model', score_split=VAL_SPLIT)

  return _shared(tmp_path_factory, f'exported_{decoder}', write) / 'model'
