"""Training and decoding throughput at given shapes, on random data.

  python -m seq2seq_jax.benchmark --batch_size=128 --num_steps=9 --src_vocab=9657 \
      --tgt_vocab=17051 --embed_size=256 --num_hiddens=256 --num_layers=2 \
      --decoder=plain --dtype=float32 --steps=20

Builds the model at exactly those shapes and compiles the trainer's `train_step` (jitted
once, state donated, as `single.compile_steps` does). Training: `--warmup` untimed steps,
then `--steps` timed steps, each synchronised with the device; the median is reported.
Decoding: the compiled batched greedy decoder (`greedy_search.make_greedy`) on
`--decode_sentences` random sources of length `num_steps`, `--decode_batch_size` at a
time, with `<eos>` masked out of the output layer so that every sentence runs all
`num_steps` output steps (the worst case for the early exit); the median of
`--decode_repeats` passes is reported. The last line of standard output is one JSON
object with the timings, the shapes, the backend and the host.

Random data: lengths uniform in [`min_len`, `num_steps`] (default `min_len`: two thirds
of `num_steps`, so 83% of the target positions are real tokens at 9 steps, as in the
book's data), then padding, as the input pipeline makes it.

On glibc hosts, where the CPU kernel forms are in use, the benchmark first calls
`hostmem.tune_host_malloc()` (off with `--notune_malloc`): see its docstring and
docs/performance.md. `--kernels=cpu|plain` runs those forms whatever the backend
(`models.ops.forms`; default: the backend's own).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags

from seq2seq_jax import cli, models
from seq2seq_jax.data import text
from seq2seq_jax.decoding import greedy_search
from seq2seq_jax.models import ops
from seq2seq_jax.train import hostmem, steps

FLAGS = flags.FLAGS


def random_batch(
  rng: np.random.Generator,
  batch_size: int,
  num_steps: int,
  src_vocab: int,
  tgt_vocab: int,
  min_len: int,
) -> dict[str, np.ndarray]:
  """A batch shaped like the input pipeline's: ids in [4, vocab) ending in `<eos>`,
  lengths uniform in [min_len, num_steps], 0-padded; `tgt_in` is `<bos>` + shifted."""
  pos = np.arange(num_steps)[None, :]

  def ids(vocab: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(min_len, num_steps + 1, batch_size).astype(np.int32)
    x = rng.integers(text.UNK_ID + 1, vocab, (batch_size, num_steps))
    x = np.where(pos == lengths[:, None] - 1, text.EOS_ID, x)
    return np.where(pos < lengths[:, None], x, text.PAD_ID).astype(np.int32), lengths

  src, src_len = ids(src_vocab)
  tgt_out, _ = ids(tgt_vocab)
  bos = np.full((batch_size, 1), text.BOS_ID, np.int32)
  tgt_in = np.concatenate([bos, tgt_out[:, :-1]], axis=1)
  return {'src': src, 'src_len': src_len, 'tgt_in': tgt_in, 'tgt_out': tgt_out}


def train_flops(
  batch_size: int,
  num_steps: int,
  tgt_vocab: int,
  embed_size: int,
  num_hiddens: int,
  num_layers: int,
  gates: int = 3,
) -> float:
  """Matmul FLOPs of one training step of the plain model (`gates`: 3 for GRU, 4 for
  LSTM), padding included: forward plus backward, 3x the forward. Embeddings, elementwise
  work and the optimizer aside."""
  h3 = gates * num_hiddens
  per_token = num_hiddens * tgt_vocab  # the output projection
  for i in range(num_layers):  # encoder and decoder: input and recurrent projections
    per_token += 2 * ((embed_size if i == 0 else num_hiddens) * h3 + num_hiddens * h3)
  context = batch_size * num_hiddens * h3  # the decoder's context share, once per sentence
  return 3 * 2 * (batch_size * num_steps * per_token + context)


def bench_train(
  model: models.EncoderDecoder,
  batches: list[dict[str, jax.Array]],
  *,
  num_timed: int,
  warmup: int,
  seed: int,
) -> tuple[dict[str, Any], Any]:
  """Compiles the trainer's step, then times `num_timed` synchronised steps.
  Returns the timings and the trained parameters."""
  tx = steps.make_optimizer(learning_rate=0.005, grad_clip=1.0)
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  state = jax.jit(steps.init_state, static_argnums=(0, 1))(model, tx, init_key)
  step_fn = functools.partial(steps.train_step, model=model, tx=tx)
  t0 = time.perf_counter()
  train_fn = jax.jit(step_fn, donate_argnums=(0,)).lower(state, batches[0], dropout_key).compile()
  compile_s = time.perf_counter() - t0
  for i in range(warmup):
    state, metrics = train_fn(state, batches[i % len(batches)], dropout_key)
  jax.block_until_ready(state)
  times, losses = [], []
  for i in range(num_timed):
    t0 = time.perf_counter()
    state, metrics = train_fn(state, batches[i % len(batches)], dropout_key)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
    losses.append(float(metrics['loss'] / metrics['tokens']))
  tokens = float(np.mean([np.sum(np.asarray(b['tgt_out']) != text.PAD_ID) for b in batches]))
  median = statistics.median(times)
  result = {
    'train_step_ms': 1000 * median,
    'train_step_ms_min': 1000 * min(times),
    'train_step_ms_mean': 1000 * statistics.fmean(times),
    'train_tokens_per_s': tokens / median,
    'train_positions_per_s': batches[0]['tgt_out'].size / median,
    'real_target_tokens_per_batch': tokens,
    'compile_s': compile_s,
    'final_train_loss': losses[-1],
    'params': int(sum(x.size for x in jax.tree.leaves(state.params))),
  }
  return result, state.params


def without_eos(params: Any) -> Any:
  """The parameters with `<eos>` unreachable: its output bias set to -1e9."""
  bias = params['decoder']['dense']['bias']
  dense = {**params['decoder']['dense'], 'bias': bias.at[text.EOS_ID].set(-1e9)}
  return {**params, 'decoder': {**params['decoder'], 'dense': dense}}


def bench_decode(
  model: models.EncoderDecoder,
  params: Any,
  rng: np.random.Generator,
  *,
  num_sentences: int,
  num_steps: int,
  src_vocab: int,
  batch_size: int,
  repeats: int,
) -> dict[str, Any]:
  """Times compiled, batched greedy decoding of random full-length sources."""
  src = rng.integers(text.UNK_ID + 1, src_vocab, (num_sentences, num_steps)).astype(np.int32)
  src[:, -1] = text.EOS_ID
  src_len = np.full((num_sentences,), num_steps, np.int32)
  batch_size = min(batch_size, num_sentences)
  pad = -num_sentences % batch_size  # the last batch is filled up: one compiled shape
  src = np.concatenate([src, np.zeros((pad, num_steps), np.int32)])
  src_len = np.concatenate([src_len, np.zeros((pad,), np.int32)])
  greedy = greedy_search.make_greedy(model, num_steps)

  def run_all() -> np.ndarray:
    outs = [
      np.asarray(greedy(params, src[i : i + batch_size], src_len[i : i + batch_size]))
      for i in range(0, len(src), batch_size)
    ]
    return np.concatenate(outs)[:num_sentences]

  t0 = time.perf_counter()
  run_all()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = run_all()
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  return {
    'decode_sentences_per_s': num_sentences / median,
    'decode_s': median,
    'decode_first_call_s': first_s,
    'decode_mean_output_tokens': float(np.mean(np.sum(out != text.PAD_ID, axis=1))),
  }


MODEL_FLAGS = (
  'src_vocab',
  'tgt_vocab',
  'embed_size',
  'num_hiddens',
  'num_layers',
  'dropout',
  'decoder',
  'cell',
  'dtype',
  'unroll',
)


def build_model(cfg: dict[str, Any]) -> models.EncoderDecoder:
  """The model of `MODEL_FLAGS`' values in `cfg` (the flags as a dict)."""
  model = {name: cfg[name] for name in MODEL_FLAGS}
  return models.build_model(
    src_vocab_size=model.pop('src_vocab'), tgt_vocab_size=model.pop('tgt_vocab'), **model
  )


def run(cfg: dict[str, Any]) -> dict[str, Any]:
  """The whole benchmark for one configuration (the flags as a dict); JSON-able result."""
  model = build_model(cfg)
  rng = np.random.default_rng(cfg['seed'])
  min_len = min(cfg['min_len'] or max(1, round(2 * cfg['num_steps'] / 3)), cfg['num_steps'])
  shapes = (cfg['batch_size'], cfg['num_steps'], cfg['src_vocab'], cfg['tgt_vocab'], min_len)
  batches = [jax.device_put(random_batch(rng, *shapes)) for _ in range(4)]
  train, params = bench_train(
    model, batches, num_timed=cfg['steps'], warmup=cfg['warmup'], seed=cfg['seed']
  )
  dec = bench_decode(
    model,
    without_eos(params),
    rng,
    num_sentences=cfg['decode_sentences'],
    num_steps=cfg['num_steps'],
    src_vocab=cfg['src_vocab'],
    batch_size=cfg['decode_batch_size'],
    repeats=cfg['decode_repeats'],
  )
  gflop = 1e-9 * train_flops(
    cfg['batch_size'],
    cfg['num_steps'],
    cfg['tgt_vocab'],
    cfg['embed_size'],
    cfg['num_hiddens'],
    cfg['num_layers'],
    gates=3 if cfg['cell'] == 'gru' else 4,
  )
  result = {
    **cfg,
    'min_len': min_len,
    **train,
    **dec,
    'train_gflop_per_step': gflop,  # the plain decoder's; attention adds a little
    'train_gflop_per_s': gflop / (train['train_step_ms'] / 1000),
    'backend': jax.default_backend(),
    'devices': [str(d) for d in jax.local_devices()],
    'jax': jax.__version__,
    'cpu_count': os.cpu_count(),
    'machine': platform.machine(),
    'processor': _cpu_model(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


_SHAPE_FLAGS = ('batch_size', 'num_steps', 'src_vocab', 'tgt_vocab')
_POSITIVE_FLAGS = (
  *_SHAPE_FLAGS,
  'embed_size',
  'num_hiddens',
  'num_layers',
  'steps',
  'decode_sentences',
  'decode_batch_size',
  'decode_repeats',
)


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def define_model_flags(src_vocab: int = 9657, tgt_vocab: int = 17051) -> None:
  """The shapes of the batch and of the model (`MODEL_FLAGS`), the vocabulary sizes'
  defaults given (the population benchmark's are the book's)."""
  flags.DEFINE_integer('batch_size', 128, 'Training batch size.')
  flags.DEFINE_integer('num_steps', 9, 'Sequence length (source and target).')
  flags.DEFINE_integer('src_vocab', src_vocab, 'Source vocabulary size.')
  flags.DEFINE_integer('tgt_vocab', tgt_vocab, 'Target vocabulary size.')
  flags.DEFINE_integer('embed_size', 256, 'Embedding size.')
  flags.DEFINE_integer('num_hiddens', 256, 'Recurrent hidden size.')
  flags.DEFINE_integer('num_layers', 2, 'Recurrent layers in the encoder and in the decoder.')
  flags.DEFINE_enum('decoder', 'plain', sorted(models.DECODERS), 'Decoder.')
  flags.DEFINE_enum('cell', 'gru', sorted(models.CELLS), 'Recurrent cell.')
  flags.DEFINE_enum('dtype', 'float32', sorted(models.DTYPES), 'Matmul input dtype.')
  flags.DEFINE_float('dropout', 0.2, 'Dropout rate (the book uses 0.2).')
  flags.DEFINE_integer('unroll', 1, 'Time steps per scan iteration (0: whole sequences).')


def define_flags() -> None:
  """The command line's flags (defined on demand: importing this module registers none)."""
  define_model_flags()
  flags.DEFINE_integer('steps', 20, 'Timed training steps.')
  flags.DEFINE_integer('warmup', 3, 'Untimed training steps after compilation.')
  flags.DEFINE_integer('min_len', 0, 'Shortest random sentence (0: 2/3 of num_steps).')
  flags.DEFINE_integer('decode_sentences', 1500, 'Random sources to translate.')
  flags.DEFINE_integer('decode_batch_size', 1500, 'Sources decoded together.')
  flags.DEFINE_integer('decode_repeats', 3, 'Timed passes over the sources (median).')
  flags.DEFINE_integer('seed', 0, 'Random seed for parameters and data.')
  flags.DEFINE_bool('tune_malloc', True, 'Call tune_host_malloc() first (glibc hosts).')
  flags.DEFINE_enum(
    'kernels', 'auto', ['auto', 'cpu', 'plain'], "Kernel forms (models.ops; 'auto': the backend's)."
  )


_CONFIG_FLAGS = (
  *_SHAPE_FLAGS,
  *MODEL_FLAGS[2:],
  'steps',
  'warmup',
  'min_len',
  'decode_sentences',
  'decode_batch_size',
  'decode_repeats',
  'seed',
)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in _POSITIVE_FLAGS:
    if getattr(FLAGS, name) < 1:
      raise app.UsageError(f'--{name} must be at least 1, got {getattr(FLAGS, name)}')
  if FLAGS.warmup < 0 or FLAGS.min_len < 0 or FLAGS.unroll < 0:
    raise app.UsageError('--warmup, --min_len and --unroll must not be negative')
  if FLAGS.kernels != 'auto':
    os.environ['SEQ2SEQ_KERNELS'] = FLAGS.kernels  # read when the steps are traced
  forms = ops.forms(ops.expected_backend())
  tuned = hostmem.tune_host_malloc() if FLAGS.tune_malloc and forms.tune_malloc else False
  result = run({name: getattr(FLAGS, name) for name in _CONFIG_FLAGS})
  print(json.dumps({**result, 'kernels': ops.forms().name, 'malloc_tuned': tuned}), flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
