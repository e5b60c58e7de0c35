"""The book's Transformer: the JAX train step and greedy decoding against PyTorch's, in one
sitting, interleaved.

  python -m seq2seq_jax.benchmarks.transformer_speed --torch_python=.venv-torch/bin/python \\
      --data=../shared/data/fra-eng/fra.txt --rounds=3

The book's Transformer at the book's full-data shapes: d 256, 2 blocks, 4 heads, FFN 64,
dropout 0.2, batch 128, 9 steps, vocabularies 9,657 / 17,051 (those of the GRU
comparison, `torch_comparison`). Each round runs, one after the other and each started
when the CPUs are at least `--idle` idle (as `torch_comparison` does):
- PyTorch (`d2l_torch_transformer.py --num-train 0 --epochs 1`: the book's model written
  in PyTorch, eager, on the real data), in float32 and with `--amp` (bfloat16 autocast):
  the mean train step after 3 warm-up steps (`step_ms`), and greedy decoding of
  `--decode_sentences` sources, 512 at a time, always 9 steps, with a key/value cache;
- JAX (`--mode=jax`, `jax_timing`): `models.transformer.build_model` at the same
  settings, the trainer's jitted `steps.train_step` with `steps.make_optimizer`'s Adam and
  clipping on random batches shaped like the pipeline's (`benchmarks.speed.bench_train`:
  the median step after 3 warm-up steps), and the compiled greedy decoder
  (`greedy_search.make_greedy`, 9 steps, batch 512, `<eos>` masked out so that every
  sentence runs all 9 steps, as PyTorch's does), in float32 and bfloat16; and the
  matmul rate of the output layer's forward product alone (`matmul_rate`: the machine's
  peak as docs/performance.md measures it).
It prints a table of medians over the rounds, the speed-ups (PyTorch time / JAX time),
the FLOP floor of the step at the measured peak, then one JSON object on the last line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from seq2seq_jax import cli
from seq2seq_jax.benchmarks import speed, torch_comparison
from seq2seq_jax.models import ops, transformer
from seq2seq_jax.train import hostmem

# torch_comparison defines --torch_python, --reference, --data, --rounds, --steps, --idle
# and --max_wait_s on import: this benchmark reads them too.
FLAGS = flags.FLAGS
BOOK = {'num_hiddens': 256, 'num_layers': 2, 'num_heads': 4, 'ffn_size': 64, 'dropout': 0.2}
SHAPES = {'batch_size': 128, 'num_steps': 9, 'src_vocab': 9657, 'tgt_vocab': 17051}
TORCH_SCRIPT = Path(__file__).with_name('d2l_torch_transformer.py')
RUNS = ('pytorch_float32', 'pytorch_bfloat16', 'jax_float32', 'jax_bfloat16')


def define_flags() -> None:
  """This benchmark's own flags (torch_comparison's are defined on import)."""
  flags.DEFINE_enum('mode', 'compare', ['compare', 'jax'], "'jax': one JAX run (a round's child).")
  flags.DEFINE_enum('dtype', 'float32', sorted(ops.DTYPES), 'Matmul input dtype (--mode=jax).')
  flags.DEFINE_integer('warmup', 3, 'Untimed train steps (both sides) before the timed ones.')
  flags.DEFINE_integer('torch_steps', 20, 'Timed PyTorch train steps per run (mean).')
  flags.DEFINE_integer('decode_sentences', 1536, 'Sources translated per decoding pass.')
  flags.DEFINE_integer('decode_batch_size', 512, 'Sources decoded together (both sides).')
  flags.DEFINE_integer('decode_repeats', 3, 'Timed decoding passes (median).')
  flags.DEFINE_integer('peak_repeats', 10, 'Timed runs of the peak-rate matmul (median).')
  flags.DEFINE_integer('seed', 0, 'Random seed (parameters and data).')
  flags.DEFINE_string('torch_script', str(TORCH_SCRIPT), "The book's Transformer in PyTorch.")


def train_flops(
  batch_size: int, num_steps: int, tgt_vocab: int, d: int, num_layers: int, ffn_size: int
) -> dict[str, float]:
  """Matmul FLOPs of one training step (forward + backward = 3x the forward), by part,
  padding included; source and target both `num_steps` long. Per position and block: the
  encoder's W_q/W_k/W_v/W_o (4 d^2), the decoder's self-attention (4 d^2) and
  cross-attention (W_q, W_o on the target, W_k, W_v on the source: 4 d^2); the attention
  products (scores and weighted values, all heads together: 2 num_steps d each, three
  attentions); the FFNs (2 d ffn, encoder and decoder); the output layer (d V) once.
  Embeddings, softmax, norms and the optimizer aside."""
  positions = batch_size * num_steps
  macs = {
    'projections': positions * num_layers * 12 * d * d,
    'attention products': positions * num_layers * 3 * 2 * num_steps * d,
    'ffn': positions * num_layers * 2 * 2 * d * ffn_size,
    'output layer': positions * d * tgt_vocab,
  }
  return {part: 3 * 2 * float(m) for part, m in macs.items()}


def matmul_rate(dtype: str, repeats: int, *, m: int = 1152, k: int = 256, n: int = 17051) -> float:
  """GFLOP/s of the output layer's forward product [m, k] x [k, n] alone (`ops.affine`:
  `dtype` inputs, float32 accumulation, the step's own kernel form), median of `repeats`."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((m, k), np.float32))
  w = jnp.asarray(rng.standard_normal((k, n), np.float32) / 16)
  x, w = x.astype(ops.DTYPES[dtype]), w.astype(ops.DTYPES[dtype])
  product = jax.jit(lambda a, b: ops.affine(a, b, None, ops.DTYPES[dtype]))
  jax.block_until_ready(product(x, w))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(product(x, w))
    times.append(time.perf_counter() - t0)
  return 2e-9 * m * k * n / statistics.median(times)


def jax_timing(
  dtype: str = 'float32',
  *,
  steps: int = 20,
  warmup: int = 3,
  decode_sentences: int = 1536,
  decode_batch_size: int = 512,
  decode_repeats: int = 3,
  peak_repeats: int = 10,
  seed: int = 0,
) -> dict[str, Any]:
  """The JAX side of one round at the book's Transformer settings (`BOOK`, `SHAPES`): the
  train step (ms, median), greedy decoding (sentences/s) and the matmul peak (GFLOP/s)."""
  model = transformer.build_model(
    src_vocab_size=SHAPES['src_vocab'], tgt_vocab_size=SHAPES['tgt_vocab'], dtype=dtype, **BOOK
  )
  rng = np.random.default_rng(seed)
  min_len = round(2 * SHAPES['num_steps'] / 3)  # 83% real target tokens, as the book's data
  batches = [jax.device_put(speed.random_batch(rng, *SHAPES.values(), min_len)) for _ in range(4)]
  train, params = speed.bench_train(model, batches, num_timed=steps, warmup=warmup, seed=seed)
  decode = speed.bench_decode(
    model,
    speed.without_eos(params),
    rng,
    num_sentences=decode_sentences,
    num_steps=SHAPES['num_steps'],
    src_vocab=SHAPES['src_vocab'],
    batch_size=decode_batch_size,
    repeats=decode_repeats,
  )
  return {
    'dtype': dtype,
    **train,
    **decode,
    'peak_gflop_per_s': matmul_rate(dtype, peak_repeats),
    'kernels': ops.forms().name,
    'backend': jax.default_backend(),
  }


def child_commands() -> dict[str, list[str]]:
  """The four runs of a round."""
  steps = FLAGS.torch_steps + FLAGS.warmup
  torch_cmd = [FLAGS.torch_python, FLAGS.torch_script, '--data', FLAGS.data]
  torch_cmd += ['--reference', FLAGS.reference, '--num-train', '0', '--epochs', '1']
  torch_cmd += ['--num-steps', str(SHAPES['num_steps']), '--batch', str(SHAPES['batch_size'])]
  torch_cmd += ['--max-train-steps', str(steps), '--warmup-steps', str(FLAGS.warmup)]
  torch_cmd += ['--seed', str(FLAGS.seed), '--decode-sentences', str(FLAGS.decode_sentences)]
  torch_cmd += ['--decode-batch', str(FLAGS.decode_batch_size)]
  torch_cmd += ['--decode-repeats', str(FLAGS.decode_repeats)]
  jax_cmd = [sys.executable, '-m', 'seq2seq_jax.benchmarks.transformer_speed', '--mode=jax']
  for name in ('steps', 'warmup', 'decode_sentences', 'decode_batch_size', 'decode_repeats'):
    jax_cmd.append(f'--{name}={getattr(FLAGS, name)}')
  jax_cmd += [f'--peak_repeats={FLAGS.peak_repeats}', f'--seed={FLAGS.seed}']
  return {
    'pytorch_float32': torch_cmd,
    'pytorch_bfloat16': torch_cmd + ['--amp'],
    'jax_float32': jax_cmd + ['--dtype=float32'],
    'jax_bfloat16': jax_cmd + ['--dtype=bfloat16'],
  }


def run_rounds() -> dict[str, dict[str, list[float]]]:
  """`--rounds` interleaved rounds; per run: step ms, decoding sentences/s (and peak)."""
  results: dict[str, dict[str, list[float]]] = {
    run: {'step_ms': [], 'sentences_per_s': [], 'peak_gflop_per_s': []} for run in RUNS
  }
  for r in range(FLAGS.rounds):
    for run, cmd in child_commands().items():
      idle = torch_comparison.wait_for_idle(FLAGS.idle, FLAGS.max_wait_s)
      out = torch_comparison.run_json(cmd)
      if run.startswith('pytorch'):
        got = (out['src_vocab'], out['tgt_vocab'])
        if got != (SHAPES['src_vocab'], SHAPES['tgt_vocab']):
          print(f'warning: PyTorch vocabularies {got}, not the JAX side {SHAPES}')
        ms, sps = out['step_ms'], out['decode_sentences_per_s']
      else:
        ms, sps = out['train_step_ms'], out['decode_sentences_per_s']
        results[run]['peak_gflop_per_s'].append(float(out['peak_gflop_per_s']))
      results[run]['step_ms'].append(float(ms))
      results[run]['sentences_per_s'].append(float(sps))
      print(
        f'round {r + 1}: {run:16s} {ms:8.1f} ms/step {sps:8.1f} sentences/s '
        f'(CPUs {100 * idle:.0f}% idle at start)',
        flush=True,
      )
  return results


def summarise(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
  """Medians, speed-ups (PyTorch time / JAX time) and the FLOP floor; prints the table."""
  med = {run: {k: statistics.median(v) for k, v in r.items() if v} for run, r in results.items()}
  parts = train_flops(
    SHAPES['batch_size'], SHAPES['num_steps'], SHAPES['tgt_vocab'], BOOK['num_hiddens'],
    BOOK['num_layers'], BOOK['ffn_size'],
  )  # fmt: skip
  gflop = 1e-9 * sum(parts.values())
  floor = {d: 1000 * gflop / med[f'jax_{d}']['peak_gflop_per_s'] for d in ('float32', 'bfloat16')}
  speedup = {
    f'{what}_{d}': ratio
    for d in ('float32', 'bfloat16')
    for what, ratio in (
      ('train', med[f'pytorch_{d}']['step_ms'] / med[f'jax_{d}']['step_ms']),
      ('decode', med[f'jax_{d}']['sentences_per_s'] / med[f'pytorch_{d}']['sentences_per_s']),
    )
  }
  print(f'\nmedians of {FLAGS.rounds} rounds (bfloat16: PyTorch autocast, JAX matmul inputs)')
  print(f'  {"":18s} {"train step":>12s} {"greedy, sentences/s":>20s}')
  for run in RUNS:
    print(f'  {run:18s} {med[run]["step_ms"]:9.1f} ms {med[run]["sentences_per_s"]:20.1f}')
  print('speed-up of JAX over PyTorch (PyTorch time / JAX time; above 1: JAX faster)')
  for d in ('float32', 'bfloat16'):
    print(
      f'  {d:9s} train step {speedup[f"train_{d}"]:5.2f}x  decoding {speedup[f"decode_{d}"]:5.2f}x'
    )
  shares = ', '.join(f'{p} {100 * 1e-9 * f / gflop:.0f}%' for p, f in parts.items())
  print(f'FLOP floor: {gflop:.1f} GFLOP of matmuls a train step ({shares})')
  for d in ('float32', 'bfloat16'):
    peak = med[f'jax_{d}']['peak_gflop_per_s']
    print(f'  {d:9s} at the measured peak {peak:6.1f} GFLOP/s: {floor[d]:6.1f} ms a step')
  return {
    'rounds': FLAGS.rounds,
    'shapes': {**SHAPES, **BOOK},
    'runs': results,
    'median': med,
    'speedup': speedup,
    'train_gflop_per_step': gflop,
    'train_gflop_by_part': {p: 1e-9 * f for p, f in parts.items()},
    'floor_ms': floor,
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('rounds', 'steps', 'torch_steps', 'decode_sentences', 'decode_batch_size'):
    if getattr(FLAGS, name) < 1:
      raise app.UsageError(f'--{name} must be at least 1, got {getattr(FLAGS, name)}')
  if FLAGS.benchmark_args:
    raise app.UsageError("--benchmark_args is torch_comparison's; this benchmark takes none")
  if FLAGS.mode == 'jax':
    tuned = hostmem.tune_host_malloc() if ops.forms(ops.expected_backend()).tune_malloc else False
    names = ('steps', 'warmup', 'decode_sentences', 'decode_batch_size', 'decode_repeats')
    result = jax_timing(
      FLAGS.dtype,
      **{name: getattr(FLAGS, name) for name in names},
      peak_repeats=FLAGS.peak_repeats,
      seed=FLAGS.seed,
    )
    print(json.dumps({**result, 'malloc_tuned': tuned}), flush=True)
    return
  for path, what in [
    (FLAGS.torch_python, '--torch_python'),
    (FLAGS.torch_script, '--torch_script'),
    (FLAGS.reference, '--reference'),
    (FLAGS.data, '--data'),
  ]:
    if not Path(path).exists():
      sys.exit(f'error: {what} {path} does not exist (make venv-torch builds .venv-torch)')
  print(json.dumps(summarise(run_rounds())))


if __name__ == '__main__':
  define_flags()
  cli.run(main, flag_modules=[torch_comparison])
