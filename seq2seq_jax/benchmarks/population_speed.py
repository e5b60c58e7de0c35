"""The cost of a population of N models against N separate runs.

  python -m seq2seq_jax.benchmarks.population_speed --members=8 --steps=10
  python -m seq2seq_jax.benchmarks.population_speed --members=8 --end_to_end \
      --manual_dir=../shared/data/fra-eng

Steps (the default), on random data at the book's shapes (configs/d2l.py: batch 128,
9 steps, vocabularies of 195 and 215 words, 2 GRU layers of 256, dropout 0.2):
- the population: N members stacked, one jitted `population.population_train_step`
  over states, dropout keys and learning rates, the batch shared; `--chunk` members
  vectorised together (0: all in one vmap; 1: one after another in a `lax.map`; -1,
  the default: the trainer's choice, 1 on CPU and 0 on GPU/TPU);
- the separate runs: the plain jitted `steps.train_step` that `train.py` runs alone,
  called once per member (N different states) on the same batch.
Both are compiled ahead of time (compile times reported apart), then timed in turns on
the same batches: one population step, then N single steps, `--steps` times; medians
are reported. `step_ratio` = population step / N single steps (below 1: the population
is cheaper). `run_ratio` adds compilation to a run of `--run_steps` steps (the book's
120), where N separate runs compile N times and the population once.

`--end_to_end` times whole `train.py` runs on the real data instead: configs/d2l.py once
(N separate runs cost N times that: they differ only in seed and learning rate) against
configs/population.py with N members; `end_to_end_ratio` = population / (N x single).
Prints one JSON object on the last line of standard output.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from seq2seq_jax import cli
from seq2seq_jax.benchmarks import speed
from seq2seq_jax.train import population, steps

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags: the model's and the batch's shapes as the speed
  benchmark's (`speed.define_model_flags`, the vocabularies of configs/d2l.py), then the
  population's."""
  speed.define_model_flags(src_vocab=195, tgt_vocab=215)
  flags.DEFINE_integer('members', 8, 'Population size N.')
  flags.DEFINE_integer(
    'chunk', -1, 'Members vectorised together: 0 all (one vmap), 1 one after another, -1 auto.'
  )
  flags.DEFINE_integer('steps', 10, 'Timed rounds (one population step + N single steps each).')
  flags.DEFINE_integer('run_steps', 120, 'Steps of the run that run_ratio is computed for.')
  flags.DEFINE_bool('end_to_end', False, 'Time whole train.py runs on the real data.')
  flags.DEFINE_string('manual_dir', '', '--end_to_end: the directory holding fra.txt.')
  flags.DEFINE_string('data_dir', '', "--end_to_end: TFDS's cache ('' = the config's).")


ROOT = Path(__file__).resolve().parents[2]


def member_hyperparameters(n: int) -> tuple[list[float], list[int]]:
  """Learning rates 0.00125 to 0.01 around the book's 0.005, and a seed per member."""
  return [0.005 * 2.0 ** (i % 4 - 2) for i in range(n)], list(range(n))


def random_batch(rng: np.random.Generator, batch: int, width: int, vocab: tuple[int, int]):
  """A batch with lengths uniform in [width / 2, width] (about the book's data)."""
  out = {}
  lengths = rng.integers(max(width // 2, 1), width + 1, (2, batch))
  for name, length, v in (('src', lengths[0], vocab[0]), ('tgt_out', lengths[1], vocab[1])):
    ids = rng.integers(4, v, (batch, width)).astype(np.int32)
    out[name] = np.where(np.arange(width)[None, :] < length[:, None], ids, 0).astype(np.int32)
  out['src_len'] = lengths[0].astype(np.int32)
  out['tgt_in'] = np.concatenate([np.full((batch, 1), 1, np.int32), out['tgt_out'][:, :-1]], 1)
  return out


def _compile(fn: Any, *args: Any) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _timed(fn: Any) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _compiled_steps(model: Any, seeds: list[int], rates: list[float], batch: Any) -> dict:
  """The population's step and the single-run step, compiled ahead of time, with their
  states: 'population' (step, [states, keys, rates], compile s) and 'single' (step, one
  [state, dropout key] per member, compile s)."""
  unit_tx = steps.make_optimizer(learning_rate=1.0)
  states, keys = population.init_population(model, unit_tx, seeds)
  lrs = jnp.asarray(rates, jnp.float32)
  pop_fn = jax.jit(
    functools.partial(
      population.population_train_step,
      model=model,
      tx=unit_tx,
      chunk=population.resolve_chunk(FLAGS.chunk),
    ),
    donate_argnums=(0,),
  )
  pop_step, pop_compile_s = _compile(pop_fn, states, batch, keys, lrs)
  # Separate runs: the single-run step, one state per member. (Each run would build its
  # optimizer with its own learning rate, which compiles the same program again.)
  tx = steps.make_optimizer(learning_rate=rates[0])
  init = jax.jit(steps.init_state, static_argnums=(0, 1))
  singles = [[init(model, tx, k), d] for k, d in map(population.member_keys, seeds)]
  single_fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx), donate_argnums=(0,))
  single_step, single_compile_s = _compile(single_fn, singles[0][0], batch, singles[0][1])
  return {
    'population': (pop_step, [states, keys, lrs], pop_compile_s),
    'single': (single_step, singles, single_compile_s),
  }


def benchmark_steps() -> dict[str, Any]:
  """Population step against N single steps, compiled ahead of time, timed in turns."""
  n = FLAGS.members
  model = speed.build_model({name: getattr(FLAGS, name) for name in speed.MODEL_FLAGS})
  rates, seeds = member_hyperparameters(n)
  rng = np.random.default_rng(0)
  vocab = (FLAGS.src_vocab, FLAGS.tgt_vocab)
  batches = [random_batch(rng, FLAGS.batch_size, FLAGS.num_steps, vocab) for _ in range(4)]
  compiled = _compiled_steps(model, seeds, rates, batches[0])
  pop_step, pop, pop_compile_s = compiled['population']
  single_step, singles, single_compile_s = compiled['single']

  def population_step(batch: Any) -> Any:
    pop[0], metrics = pop_step(pop[0], batch, pop[1], pop[2])
    return pop[0], metrics

  def separate_steps(batch: Any) -> Any:
    outs = []
    for member in singles:
      member[0], metrics = single_step(member[0], batch, member[1])
      outs.append((member[0], metrics))
    return outs

  for batch in batches[:2]:  # warm up both
    _timed(lambda b=batch: population_step(b))
    _timed(lambda b=batch: separate_steps(b))
  pop_times, sep_times = [], []
  for i in range(FLAGS.steps):  # in turns, so that load on a shared machine hits both
    batch = batches[i % len(batches)]
    pop_times.append(_timed(lambda b=batch: population_step(b)))
    sep_times.append(_timed(lambda b=batch: separate_steps(b)))
  pop_s, sep_s = statistics.median(pop_times), statistics.median(sep_times)
  pop_run = pop_compile_s + FLAGS.run_steps * pop_s
  sep_run = n * single_compile_s + FLAGS.run_steps * sep_s
  return {
    'chunk': population.resolve_chunk(FLAGS.chunk),
    'parameters_per_member': int(sum(x.size for x in jax.tree.leaves(singles[0][0].params))),
    'batch_size': FLAGS.batch_size,
    'num_steps': FLAGS.num_steps,
    'population_step_ms': 1e3 * pop_s,
    'single_step_ms': 1e3 * sep_s / n,
    'separate_steps_ms': 1e3 * sep_s,
    'step_ratio': pop_s / sep_s,
    'population_compile_s': pop_compile_s,
    'single_compile_s': single_compile_s,
    'run_steps': FLAGS.run_steps,
    'population_run_s': pop_run,
    'separate_runs_s': sep_run,
    'run_ratio': pop_run / sep_run,
  }


def _train_py(config: str, workdir: Path, *overrides: str) -> float:
  """Wall seconds of one `train.py` run (its output discarded; a failure raises)."""
  cmd = [sys.executable, str(ROOT / 'train.py'), f'--config={ROOT / "configs" / config}']
  cmd += [f'--workdir={workdir}', f'--config.data.manual_dir={FLAGS.manual_dir}']
  if FLAGS.data_dir:
    cmd.append(f'--config.data.data_dir={FLAGS.data_dir}')
  start = time.perf_counter()
  out = subprocess.run([*cmd, *overrides], capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-2000:]}')
  return time.perf_counter() - start


def benchmark_end_to_end() -> dict[str, Any]:
  """Whole runs: configs/d2l.py once (x N) against configs/population.py with N members."""
  if not FLAGS.manual_dir:
    raise app.UsageError('--end_to_end needs --manual_dir (a directory holding fra.txt)')
  n = FLAGS.members
  rates, seeds = member_hyperparameters(n)
  with tempfile.TemporaryDirectory() as tmp:
    # A first, short run prepares the TFDS splits, so that neither timed run pays for it.
    _train_py('d2l.py', Path(tmp) / 'warmup', '--config.train.num_epochs=1')
    single_s = _train_py('d2l.py', Path(tmp) / 'single')
    population_s = _train_py(
      'population.py',
      Path(tmp) / 'population',
      f'--config.population.size={n}',
      f'--config.population.learning_rates={tuple(rates)}',
      f'--config.population.seeds={tuple(seeds)}',
      f'--config.population.chunk={FLAGS.chunk}',
    )
  return {
    'chunk': population.resolve_chunk(FLAGS.chunk),
    'single_run_s': single_s,
    'separate_runs_s': n * single_s,
    'population_run_s': population_s,
    'end_to_end_ratio': population_s / (n * single_s),
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  n = FLAGS.members
  result = {
    'members': n,
    'backend': jax.default_backend(),
    'device': str(jax.devices()[0].device_kind),
    'cpu_count': os.cpu_count(),
    'machine': platform.processor() or platform.machine(),
  }
  if FLAGS.end_to_end:
    result.update(benchmark_end_to_end())
    print(
      f'train.py, a population of {n}: {result["population_run_s"]:.1f} s; {n} separate runs: '
      f'{result["separate_runs_s"]:.1f} s ({result["single_run_s"]:.1f} s each); '
      f'ratio {result["end_to_end_ratio"]:.2f}'
    )
  else:
    result.update(benchmark_steps())
    print(
      f'population of {n}: {result["population_step_ms"]:.1f} ms/step; {n} separate runs: '
      f'{result["separate_steps_ms"]:.1f} ms/step ({result["single_step_ms"]:.1f} each); '
      f'ratio {result["step_ratio"]:.2f} (with compilation, {result["run_steps"]} steps: '
      f'{result["run_ratio"]:.2f})'
    )
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main, flag_modules=[speed])
