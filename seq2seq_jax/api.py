"""The public API for research code: what `train.py` does, as plain functions to import.

  from seq2seq_jax import api as s2s

  config = s2s.load_config('configs/d2l.py')
  config.data.manual_dir = '../shared/data/fra-eng'
  data = s2s.load_data(config)                    # tokenizers and encoded splits (NumPy)
  model = s2s.build_model(config, data)           # a Flax module; config.model.cell picks GRU/LSTM
  tx = s2s.make_optimizer(config)
  state, dropout_key = s2s.init_state(model, tx, seed=config.seed)
  train_step = s2s.jit_train_step(model, tx)      # (state, batch, key) -> (state, metrics)
  for batch in s2s.take(s2s.train_batches(config, data), 120):
    state, metrics = train_step(state, batch, dropout_key)
  s2s.translate(model, state.params, data, ['go .', 'i lost .'])
  s2s.attention(model, state.params, data, 'go .')  # with model.decoder='attention'

Everything here is a thin, documented door into the library's modules: `build` (a config
made into the model and the optimizer), `train.steps` (the pure `train_step`/`eval_step`,
which take and return values and never touch globals), `models`, `data.input_pipeline`,
`decoding` (greedy, beam and ensemble search), `inference` (the `Translator`, from parts or
a trained workdir), `train.population` (N models in one vmapped step) and `train.loop`
(the whole loop, as `train.py` runs it).
Swap any part: the steps accept any Flax module with the `EncoderDecoder` methods and
any Optax transformation.

Keys: a run with seed `s` splits `jax.random.key(s)` into (init key, dropout key), so
`init_state(model, tx, s)` here starts exactly where `train.py` with `seed=s` starts.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import optax

from seq2seq_jax import attention_plot, build, errors, inference, models, scoring
from seq2seq_jax.data import input_pipeline
from seq2seq_jax.data.input_pipeline import Data
from seq2seq_jax.decoding.ensemble import Ensemble  # noqa: F401 (re-exported)
from seq2seq_jax.decoding.ensemble import stack as stack_params  # noqa: F401 (re-exported)
from seq2seq_jax.decoding.greedy_search import greedy_decode  # noqa: F401 (re-exported)
from seq2seq_jax.inference import Translator
from seq2seq_jax.train import experiment, loop, population, steps
from seq2seq_jax.train.population import (  # noqa: F401 (re-exported)
  init_population,
  population_eval_step,
  population_train_step,
)
from seq2seq_jax.train.steps import Batch, TrainState, eval_step, train_step

# Re-exported as they are: the pure steps (jit, pmap or vmap them yourself, or use the
# helpers below), `greedy_decode`, ensembles (`Ensemble`: models of one shape, parameters
# stacked with `stack_params`; every search takes one) and populations (stacked states and
# the vmapped step, `init_population` and `population_train_step`: train/population.py).
Array = jax.Array
load_config = build.load_config


def load_data(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> Data:
  """Tokenizers and encoded training/validation pairs. With `workdir` the vocabularies
  are read from it (or built and saved there), as training does."""
  return input_pipeline.prepare(config.data, str(workdir) if workdir else None)


def build_model(config: ml_collections.ConfigDict, data: Data) -> models.EncoderDecoder:
  """The model of `config.model` for the data's vocabularies."""
  return build.model(config, data.src_tok.vocab_size, data.tgt_tok.vocab_size)


def make_optimizer(
  config: ml_collections.ConfigDict, total_steps: int = 0, learning_rate: float | None = None
) -> optax.GradientTransformation:
  """The config's Adam (clipping, schedule, weight decay); `total_steps` only matters for
  the cosine schedule (default `train.num_train_steps`)."""
  return build.optimizer(config, total_steps or config.train.num_train_steps, learning_rate)


def init_state(
  model: models.EncoderDecoder, tx: optax.GradientTransformation, seed: int
) -> tuple[TrainState, Array]:
  """The initial state and the dropout key of a run with this seed (as `train.py`)."""
  init_key, dropout_key = population.member_keys(seed)
  return jax.jit(steps.init_state, static_argnums=(0, 1))(model, tx, init_key), dropout_key


def jit_train_step(
  model: models.EncoderDecoder, tx: optax.GradientTransformation, label_smoothing: float = 0.0
) -> Any:
  """`train_step` jitted for one model and optimizer; the state passed in is donated
  (do not reuse it after the call)."""
  fn = functools.partial(train_step, model=model, tx=tx, label_smoothing=label_smoothing)
  return jax.jit(fn, donate_argnums=(0,))


def jit_eval_step(model: models.EncoderDecoder) -> Any:
  """`eval_step` jitted: `(params, batch) -> metric sums`."""
  return jax.jit(functools.partial(eval_step, model=model))


def train_batches(
  config: ml_collections.ConfigDict, data: Data, seed: int | None = None
) -> input_pipeline.Batcher:
  """The training batches `train.py` sees (an endless, resumable iterator of NumPy
  batches: `src`, `src_len`, `tgt_in`, `tgt_out`); the order comes from `seed`
  (default `config.seed`)."""
  if seed is not None:
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = seed
  return experiment.make_batchers(config, data, (0, 1))[0]


def validation_batches(config: ml_collections.ConfigDict, data: Data) -> list[Batch]:
  """Every validation pair once, in fixed batches (the training buckets' lengths)."""
  return list(experiment.make_batchers(config, data, (0, 1))[1].one_pass())


def take(batches: Iterable[Batch], n: int) -> Iterator[Batch]:
  """The first `n` batches."""
  return itertools.islice(batches, n)


def mean_loss(metrics: dict[str, Any]) -> float:
  """Per-token loss from a step's metric sums."""
  return float(metrics['loss']) / max(float(metrics['tokens']), 1.0)


def evaluate(eval_fn: Any, params: Any, batches: Iterable[Batch]) -> dict[str, float]:
  """Per-token loss and accuracy over batches (sums first, then one division)."""
  totals = {'loss': 0.0, 'correct': 0.0, 'tokens': 0.0}
  for batch in batches:
    out = jax.device_get(eval_fn(params, batch))
    for k in totals:
      totals[k] += float(out[k])
  tokens = max(totals['tokens'], 1.0)
  return {'loss': totals['loss'] / tokens, 'accuracy': totals['correct'] / tokens}


def translate(
  model: models.EncoderDecoder,
  params: Any,
  data: Data,
  sentences: Sequence[str],
  batch_size: int = 256,
) -> list[str]:
  """Greedy translations with the data's tokenizers; '' for a blank sentence (an
  `inference.Translator` made from these parts). For a trained workdir use
  `load(workdir).translate(sentences)`."""
  translator = Translator(
    model, params, data.src_tok, data.tgt_tok, data.max_len, batch_size=batch_size
  )
  return translator.translate(sentences, warn=False)


def attention(
  model: models.EncoderDecoder, params: Any, data: Data, sentence: str, heads: bool = False
) -> attention_plot.AttentionMap:
  """The greedy translation of one sentence with its attention over the source, as
  `--plot_attention` shows it: `.translation`, `.src_tokens`, `.out_tokens` and `.weights`
  [output tokens, source tokens] (the Bahdanau decoder's, or the Transformer's last-block
  cross-attention averaged over heads); with `heads` (the Transformer): [heads, output
  tokens, source tokens]. A model without attention (the plain decoder) raises
  `attention_plot.NoAttentionError`."""
  translator = Translator(model, params, data.src_tok, data.tgt_tok, data.max_len)
  entry = attention_plot.attention_maps(translator, [sentence], warn=False, heads=heads)[0]
  if entry is None:
    raise errors.DataError('api.attention needs a sentence with words, got a blank one')
  return entry


def book_bleu(hypothesis: str, reference: str, data: Data, k: int = 2) -> float:
  """The book's sentence BLEU of a translation against a raw reference sentence."""
  return scoring.bleu(hypothesis, data.tgt_tok.reference(reference), k=k)


def load(
  workdir: str | Path, checkpoint: str = 'auto', member: int | None = None
) -> inference.Translator:
  """A trained workdir as a `Translator` (`.translate(sentences)`, `.model`, `.params`,
  `.src_tok`, `.tgt_tok`, `.config`). For a population's workdir: `member` (default the
  winner by validation BLEU)."""
  workdir = Path(workdir)
  members = workdir / population.MEMBERS_DIR
  summary = population.load_summary(workdir)
  if member is None and summary is None and members.is_dir():
    raise errors.UserError(
      f'{workdir} holds a population without a summary yet (still training?): pass member=I'
    )
  if member is not None or summary is not None:
    workdir = members / str(summary['winner'] if member is None else member)
  return inference.load(workdir, checkpoint)


def load_ensemble(
  workdirs: str | Path | Sequence[str | Path], checkpoint: str = 'auto', **decoding: Any
) -> inference.Translator:
  """Several workdirs (or a population's: all its members) as one `Translator` that decodes
  with the mean of their log-probabilities (`decoding`: beam_size, sample, ...)."""
  return inference.load(workdirs, checkpoint, **decoding)


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """The whole loop, as `train.py` runs it (a population when `population.size > 1`)."""
  return loop.train_and_evaluate(config, str(workdir))
