"""Config -> objects, in one place: the model, the optimizer, the abstract train state a
checkpoint restores into, and a workdir's config read back with today's defaults filled in.

Training (`train/experiment.py`), inference, averaging and the API all come here, so a new
option is one field in `configs/default.py` plus the code that uses it: a model option
reaches the family's builder through `models.build(config.model, ...)`; an optimizer
option is named once in `OPTIMIZER_FIELDS` and read by `steps.make_optimizer`.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import optax

from seq2seq_jax import errors, models
from seq2seq_jax.train import steps

CONFIGS_DIR = Path(__file__).resolve().parents[1] / 'configs'

# The `train` fields `steps.make_optimizer` takes as they are (beside the learning rate
# and the number of steps, which depend on the run).
OPTIMIZER_FIELDS = ('grad_clip', 'schedule', 'warmup_steps', 'weight_decay')

# Fields that an older workdir's config.json (or checkpoint record) lacks where what its
# run did differs from today's default: the value the field had before it existed.
BEFORE_THE_FIELD = {'model.arch': 'rnn', 'model.tie_embeddings': False}


def load_config(path_or_name: str | Path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file ('configs/d2l.py'), or of a config of this checkout
  by name ('d2l'). The file's project root goes on `sys.path` (configs import each
  other as `from configs import default`)."""
  path = Path(path_or_name)
  if path.suffix != '.py':
    path = CONFIGS_DIR / f'{path_or_name}.py'
  path = path.resolve()
  if not path.is_file():
    raise errors.MissingFileError(f'no config file {path}')
  root = str(path.parents[1])
  if root not in sys.path:
    sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location(f'_s2s_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@functools.cache
def _defaults() -> dict:
  return load_config(CONFIGS_DIR / 'default.py').to_dict()


def default_config() -> ml_collections.ConfigDict:
  """A fresh copy of `configs/default.py`'s config."""
  return ml_collections.ConfigDict(copy.deepcopy(_defaults()))


def fill_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by any version (a plain dict) with the fields it lacks filled in: the
  value before the field existed (`BEFORE_THE_FIELD`), else today's default. Fields the
  defaults do not know (a config's own) are kept."""
  merged = copy.deepcopy(_defaults())
  for dotted, value in BEFORE_THE_FIELD.items():
    group, name = dotted.split('.')
    merged[group][name] = value
  _overlay(merged, saved)
  return ml_collections.ConfigDict(merged)


def _overlay(base: dict, saved: dict) -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _overlay(base[key], value)
    else:
      base[key] = value


def model_fields_before() -> dict:
  """Every model field with the value a workdir that does not record it was trained
  with (for checkpoints written before the field existed)."""
  return dict(fill_defaults({}).model)


def workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its `config.json`), with the fields an older
  version did not write filled in (`fill_defaults`)."""
  path = Path(workdir) / 'config.json'
  if not Path(workdir).is_dir():
    raise errors.MissingFileError(f'workdir {workdir} does not exist')
  if not path.is_file():
    raise errors.MissingFileError(f'{workdir} is not a training workdir (no config.json)')
  try:
    saved = json.loads(path.read_text(encoding='utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.DataError(f'{path} is not a readable config ({e})') from None
  return fill_defaults(saved)


def model(config: ml_collections.ConfigDict, src_vocab_size: int, tgt_vocab_size: int) -> Any:
  """The encoder-decoder of `config.model` (the family `model.arch`) for these vocabularies."""
  return models.build(config.model, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)


def optimizer(
  config: ml_collections.ConfigDict, total_steps: int, learning_rate: float | None = None
) -> optax.GradientTransformation:
  """The config's Adam (clipping, schedule, weight decay) at `learning_rate` (default
  `train.learning_rate`); `total_steps` only matters for the cosine schedule."""
  tcfg = config.train
  return steps.make_optimizer(
    learning_rate=tcfg.learning_rate if learning_rate is None else learning_rate,
    total_steps=max(total_steps, 1),
    **{name: tcfg[name] for name in OPTIMIZER_FIELDS},
  )


def abstract_state(config: ml_collections.ConfigDict, model: Any) -> Any:
  """The shapes and dtypes of a run's `TrainState` (the tree Orbax restores into)."""
  tx = optimizer(config, total_steps=1, learning_rate=1.0)
  return jax.eval_shape(lambda: steps.init_state(model, tx, jax.random.key(0)))
