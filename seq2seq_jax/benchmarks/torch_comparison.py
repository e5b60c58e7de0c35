"""The JAX train step against the book's PyTorch code, measured in one sitting, interleaved.

  python -m seq2seq_jax.benchmarks.torch_comparison --torch_python=.venv-torch/bin/python \
      --data=../shared/data/fra-eng/fra.txt --rounds=3

Each round runs, one after the other and each on an idle machine (the driver waits until
/proc/stat shows the CPUs at least `--idle` idle over a second), the PyTorch reference
(`../shared/bench/d2l_torch_reference.py --num-train 0 --num-steps 9 --epochs 1
--max-train-steps 40`: the seed's model at batch 128, 9 steps, E=H=256, 2 layers,
vocabularies 9,657/17,051, its `step_ms`), then `seq2seq_jax.benchmark` at the same shapes
in float32 and in bfloat16 (`train_step_ms`). Interleaving puts a burst of load from
other jobs on all three alike. It prints a table of medians over the rounds with the
ratios (PyTorch step / JAX step), then one JSON object on the last line.

`make venv-torch` builds the PyTorch environment (torch 2.13.0, CPU).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from absl import flags

from seq2seq_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('torch_python', '.venv-torch/bin/python', 'Python with torch installed.')
flags.DEFINE_string(
  'reference', '../shared/bench/d2l_torch_reference.py', "The book's PyTorch reference."
)
flags.DEFINE_string('data', '../shared/data/fra-eng/fra.txt', 'The fra-eng pairs file.')
flags.DEFINE_integer('rounds', 3, 'Interleaved rounds (PyTorch, JAX float32, JAX bfloat16).')
flags.DEFINE_integer('steps', 20, 'Timed JAX steps per run (the reference times 40).')
flags.DEFINE_list(
  'benchmark_args',
  [],
  'More flags for seq2seq_jax.benchmark, comma-separated (the shapes stay '
  "the reference's unless given here).",
)
flags.DEFINE_float('idle', 0.9, 'Start each run when the CPUs are at least this idle.')
flags.DEFINE_float('max_wait_s', 120.0, 'Start anyway after waiting this long for idle CPUs.')


def cpu_idle_fraction(interval_s: float = 1.0) -> float:
  """The fraction of CPU time spent idle over `interval_s` (from /proc/stat; 1.0 if
  unreadable)."""

  def sample() -> tuple[int, int]:
    fields = [int(x) for x in Path('/proc/stat').read_text().split('\n')[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait, total

  try:
    idle0, total0 = sample()
    time.sleep(interval_s)
    idle1, total1 = sample()
  except OSError:
    return 1.0
  return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle(threshold: float, max_wait_s: float) -> float:
  """Waits until the CPUs are `threshold` idle (or `max_wait_s` passed); returns the
  last idle fraction seen."""
  deadline = time.monotonic() + max_wait_s
  idle = cpu_idle_fraction()
  while idle < threshold and time.monotonic() < deadline:
    idle = cpu_idle_fraction()
  return idle


def last_json(output: str) -> dict[str, Any]:
  """The JSON object on the last line of a program's output that holds one."""
  for line in reversed(output.strip().splitlines()):
    line = line.strip()
    if line.startswith('{'):
      return json.loads(line)
  raise ValueError(f'no JSON line in the output:\n{output[-2000:]}')


def run_json(cmd: list[str]) -> dict[str, Any]:
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}')
  return last_json(done.stdout)


def commands() -> dict[str, list[str]]:
  torch_cmd = [FLAGS.torch_python, FLAGS.reference, '--data', FLAGS.data, '--num-train', '0']
  torch_cmd += ['--num-steps', '9', '--epochs', '1', '--max-train-steps', '40']
  jax_cmd = [sys.executable, '-m', 'seq2seq_jax.benchmark', f'--steps={FLAGS.steps}']
  jax_cmd += ['--decode_repeats=3', *FLAGS.benchmark_args]
  return {
    'pytorch': torch_cmd,
    'jax_float32': jax_cmd + ['--dtype=float32'],
    'jax_bfloat16': jax_cmd + ['--dtype=bfloat16'],
  }


def main(argv: list[str]) -> None:
  del argv
  for path, what in [(FLAGS.torch_python, '--torch_python'), (FLAGS.reference, '--reference')]:
    if not Path(path).exists():
      sys.exit(f'error: {what} {path} does not exist (make venv-torch builds .venv-torch)')
  if not Path(FLAGS.data).exists():
    sys.exit(f'error: --data {FLAGS.data} does not exist')
  step_ms: dict[str, list[float]] = {name: [] for name in commands()}
  decode: dict[str, list[float]] = {'jax_float32': [], 'jax_bfloat16': []}
  for r in range(FLAGS.rounds):
    for name, cmd in commands().items():
      idle = wait_for_idle(FLAGS.idle, FLAGS.max_wait_s)
      result = run_json(cmd)
      ms = result['step_ms'] if name == 'pytorch' else result['train_step_ms']
      step_ms[name].append(float(ms))
      if name in decode:
        decode[name].append(float(result['decode_sentences_per_s']))
      print(f'round {r + 1}: {name:13s} {ms:8.1f} ms/step (CPUs {100 * idle:.0f}% idle at start)')
      sys.stdout.flush()
  med = {name: statistics.median(v) for name, v in step_ms.items()}
  print(f'\nmedians of {FLAGS.rounds} rounds: train step (ms), speed-up over PyTorch')
  for name, ms in med.items():
    print(f'  {name:13s} {ms:8.1f} ms  {med["pytorch"] / ms:5.2f}x')
  summary = {
    'rounds': FLAGS.rounds,
    'step_ms': step_ms,
    'median_step_ms': med,
    'speedup_float32': med['pytorch'] / med['jax_float32'],
    'speedup_bfloat16': med['pytorch'] / med['jax_bfloat16'],
    'decode_sentences_per_s': {k: statistics.median(v) for k, v in decode.items()},
  }
  print(json.dumps(summary))


if __name__ == '__main__':
  cli.run(main)
