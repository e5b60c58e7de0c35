"""The accelerator check: speed against PyTorch, both parallel modes, a short training run.

  python -m seq2seq_jax.benchmarks.gpu_check --data=DIR [--torch_python=python3]
  make gpu-check DATA=DIR                          # the same

On the machine with the accelerator, in about 10 minutes (each part has its own time
limit and a part that fails or runs out of time is reported, not fatal):

1. `seq2seq_jax.benchmark` at the book's shapes (plain decoder, 9 steps, E = H = 256,
   2 layers, vocabularies 9,657 / 17,051) at batch 128 and 1024, bfloat16 and float32;
2. the book's PyTorch code on CUDA (`../shared/bench/d2l_torch_reference.py --device
   cuda`, cuDNN GRU, float32 and `--amp` bfloat16 autocast) at the same shapes and
   batches, when `--torch_python` has torch with CUDA;
3. `train.py` with `train.parallel=jit` and `=pmap` for `--mode_s` seconds each (on one
   device both run plain `jit`: reported as such, not run twice);
4. `train.py --config=configs/default.py` for `--train_s` seconds (3 minutes), then
   `evaluate --split=test` (greedy): steps, step time and test BLEU / chrF.

Prints one JSON object on the last line (the parts' results, the JAX and device
versions, each part's wall time). `--quick` shrinks every part (tiny shapes, seconds of
training) to try the script itself on a CPU. Record the numbers in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
from absl import app, flags

from seq2seq_jax import cli

FLAGS = flags.FLAGS
ROOT = Path(__file__).resolve().parents[2]
BOOK = dict(num_steps=9, src_vocab=9657, tgt_vocab=17051, embed_size=256, num_hiddens=256)


def define_flags() -> None:
  flags.DEFINE_string('data', '../shared/data/fra-eng', 'A directory with fra.txt or fra-eng.zip.')
  flags.DEFINE_string('workdir', '/tmp/gpu_check', 'Where the training runs write.')
  flags.DEFINE_string('torch_python', 'python3', 'A Python with torch (CUDA) for the reference.')
  flags.DEFINE_string(
    'reference', str(ROOT.parent / 'shared/bench/d2l_torch_reference.py'), 'The PyTorch code.'
  )
  flags.DEFINE_list('batches', ['128', '1024'], 'Batch sizes for the speed parts.')
  flags.DEFINE_integer('mode_s', 45, 'Seconds of training in each parallel mode.')
  flags.DEFINE_integer('train_s', 180, 'Seconds of training of configs/default.py.')
  flags.DEFINE_bool('quick', False, 'Tiny shapes and seconds of training: try the script.')


def _json_tail(stdout: str) -> dict | None:
  for line in reversed(stdout.strip().splitlines()):
    try:
      return json.loads(line)
    except json.JSONDecodeError:
      continue
  return None


def run_part(cmd: list[str], timeout_s: float) -> dict[str, Any]:
  """Runs `cmd`; its last JSON line, or what went wrong, with the wall time."""
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s:.0f} s', 'wall_s': round(timeout_s, 1)}
  out: dict[str, Any] = {'wall_s': round(time.perf_counter() - t0, 1)}
  if proc.returncode:
    out['error'] = (proc.stderr.strip().splitlines() or ['no output'])[-1][:300]
    return out
  out['result'] = _json_tail(proc.stdout)
  return out


def _train_cmd(workdir: Path, config: str, seconds: int, *extra: str) -> list[str]:
  return [
    sys.executable,
    str(ROOT / 'train.py'),
    f'--config={ROOT / config}',
    f'--workdir={workdir}',
    f'--config.data.manual_dir={Path(FLAGS.data).absolute()}',
    f'--config.train.time_budget_s={seconds}',
    *extra,
  ]


def _jax_speed(shapes: dict[str, int], quick: bool) -> dict[str, Any]:
  """Part 1: `seq2seq_jax.benchmark` at `shapes`, per batch size and dtype."""
  bench = {}
  keep = ('train_step_ms', 'train_tokens_per_s', 'decode_sentences_per_s', 'compile_s')
  for batch in map(int, FLAGS.batches):
    for dtype in ('bfloat16', 'float32'):
      cmd = [sys.executable, '-m', 'seq2seq_jax.benchmark', f'--batch_size={batch}']
      cmd += [f'--{k}={v}' for k, v in shapes.items()]
      cmd += ['--decoder=plain', f'--dtype={dtype}', '--steps=10' if not quick else '--steps=2']
      cmd += [f'--decode_sentences={batch}', f'--decode_batch_size={batch}']
      part = run_part(cmd, 120)
      if part.get('result'):
        part['result'] = {k: part['result'].get(k) for k in (*keep, 'kernels')}
      bench[f'jax_{dtype}_b{batch}'] = part
  return bench


def _torch_speed() -> dict[str, Any]:
  """Part 2: the book's PyTorch code on CUDA, per batch size, float32 and autocast."""
  has_cuda = run_part(
    [FLAGS.torch_python, '-c', 'import json, torch; print(json.dumps(torch.cuda.is_available()))'],
    60,
  ).get('result')
  data_file = Path(FLAGS.data) / 'fra.txt'
  if not (has_cuda and Path(FLAGS.reference).exists() and data_file.exists()):
    return {'torch': {'skipped': 'no torch with CUDA, reference or fra.txt'}}
  bench = {}
  for batch in map(int, FLAGS.batches):
    for amp in (False, True):
      cmd = [FLAGS.torch_python, FLAGS.reference, '--data', str(data_file), '--num-train', '0']
      cmd += ['--num-steps', '9', '--batch', str(batch), '--epochs', '1']
      cmd += ['--max-train-steps', '40', '--warmup-steps', '5', '--device', 'cuda']
      part = run_part([*cmd, *(['--amp'] if amp else [])], 180)
      if part.get('result'):
        part['result'] = {k: part['result'].get(k) for k in ('step_ms', 'target_tokens_per_s')}
      bench[f'torch_{"bf16_amp" if amp else "float32"}_b{batch}'] = part
  return bench


def _speedups(bench: dict[str, Any]) -> dict[str, float]:
  """JAX's speed-ups over the PyTorch float32 reference, where both ran."""
  out = {}
  for batch in map(int, FLAGS.batches):
    ref = (bench.get(f'torch_float32_b{batch}') or {}).get('result') or {}
    for dtype in ('bfloat16', 'float32'):
      ours = (bench.get(f'jax_{dtype}_b{batch}') or {}).get('result') or {}
      if ref.get('step_ms') and ours.get('train_step_ms'):
        speedup = round(ref['step_ms'] / ours['train_step_ms'], 2)
        out[f'speedup_{dtype}_b{batch}_vs_torch_float32'] = speedup
  return out


def _parallel_modes(workdir: Path, config: str, device_count: int) -> dict[str, Any] | str:
  """Part 3: `train.py` in each parallel mode (on one device there is only plain jit)."""
  if device_count == 1:
    return 'one device: the jit and pmap modes both run plain jit'
  modes = {}
  for mode in ('jit', 'pmap'):
    out = workdir / f'mode_{mode}'
    cmd = _train_cmd(out, config, FLAGS.mode_s, f'--config.train.parallel={mode}')
    modes[mode] = run_part(cmd, FLAGS.mode_s + 240)
    modes[mode]['steps'] = _steps(out)
  return modes


def _short_training(workdir: Path, config: str, quick: bool) -> dict[str, Any]:
  """Part 4: a short training run of `config`, then greedy BLEU on the test split."""
  out = workdir / 'default'
  seconds = 20 if quick else FLAGS.train_s
  train = run_part(_train_cmd(out, config, seconds), seconds + 300)
  train['steps'] = _steps(out)
  evaluate = [sys.executable, '-m', 'seq2seq_jax.evaluate', f'--workdir={out}', '--split=test']
  train['test_greedy'] = run_part(evaluate, 240).get('result')
  return train


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  quick = FLAGS.quick
  shapes = dict(BOOK, num_steps=5, src_vocab=200, tgt_vocab=300, embed_size=16, num_hiddens=16)
  shapes = shapes if quick else BOOK
  workdir = Path(FLAGS.workdir)
  report: dict[str, Any] = {
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'devices': [str(d) for d in jax.devices()],
    'device_kind': jax.devices()[0].device_kind,
    'quick': quick,
  }
  bench = {**_jax_speed(shapes, quick), **_torch_speed()}
  report['speed'] = {**bench, **_speedups(bench)}
  config = 'configs/tiny.py' if quick else 'configs/default.py'
  report['parallel_modes'] = _parallel_modes(workdir, config, jax.device_count())
  report['train'] = _short_training(workdir, config, quick)
  print(json.dumps(report), flush=True)


def _steps(workdir: Path) -> dict[str, Any] | None:
  """The last training line of a workdir's metrics.jsonl (step, loss, tokens/s)."""
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return None
  lines = [json.loads(line) for line in path.read_text().splitlines() if '"train_loss"' in line]
  return lines[-1] if lines else None


if __name__ == '__main__':
  define_flags()
  cli.run(main)
