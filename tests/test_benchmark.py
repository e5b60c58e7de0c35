"""`python -m seq2seq_jax.benchmark`: the command-line contract and its pure helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seq2seq_jax.benchmarks import speed
from seq2seq_jax.data import text

ROOT = Path(__file__).resolve().parents[1]
SHAPES = dict(
  batch_size=4,
  num_steps=5,
  src_vocab=30,
  tgt_vocab=40,
  embed_size=8,
  num_hiddens=8,
  num_layers=1,
)
REQUIRED_POSITIVE = (
  'train_step_ms',
  'train_tokens_per_s',
  'decode_sentences_per_s',
  'compile_s',
  'train_gflop_per_step',
)


def _run(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  cmd = [sys.executable, '-m', 'seq2seq_jax.benchmark', *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_benchmark_prints_one_json_object_last() -> None:
  flags = [f'--{k}={v}' for k, v in SHAPES.items()]
  flags += ['--steps=3', '--warmup=1', '--decode_sentences=10', '--decode_batch_size=8']
  out = _run(*flags, '--decode_repeats=1', '--decoder=plain', '--dtype=float32')
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  for key in REQUIRED_POSITIVE:
    assert isinstance(result[key], int | float) and result[key] > 0, (key, result[key])
  for key, value in SHAPES.items():  # the shapes it was asked for, as built
    assert result[key] == value, key
  assert result['decoder'] == 'plain' and result['dtype'] == 'float32'
  assert result['backend'] == 'cpu'
  assert result['decode_sentences'] == 10 and result['steps'] == 3
  # Tokens per second are the real (non-padding) target tokens of a step over its time.
  tokens_per_step = result['train_tokens_per_s'] * result['train_step_ms'] / 1000
  assert 0 < tokens_per_step <= SHAPES['batch_size'] * SHAPES['num_steps'] + 1e-6


def test_benchmark_rejects_bad_flags() -> None:
  out = _run('--steps=0')
  assert out.returncode != 0
  assert '--steps must be at least 1' in out.stderr


def test_random_batch_is_shaped_like_the_input_pipeline() -> None:
  rng = np.random.default_rng(0)
  batch = speed.random_batch(rng, 64, 7, 30, 40, min_len=3)
  assert set(batch) == {'src', 'src_len', 'tgt_in', 'tgt_out'}
  assert batch['src'].shape == batch['tgt_in'].shape == batch['tgt_out'].shape == (64, 7)
  assert batch['src'].dtype == np.int32 and batch['src_len'].dtype == np.int32
  assert 3 <= batch['src_len'].min() and batch['src_len'].max() <= 7
  for ids, lengths, vocab in [(batch['src'], batch['src_len'], 30), (batch['tgt_out'], None, 40)]:
    lengths = (ids != text.PAD_ID).sum(1) if lengths is None else lengths
    assert ids.max() < vocab
    rows = np.arange(len(ids))
    np.testing.assert_array_equal(ids[rows, lengths - 1], text.EOS_ID)  # each ends in <eos>
    pos = np.arange(ids.shape[1])[None, :]
    assert np.all((ids != text.PAD_ID) == (pos < lengths[:, None]))  # padding only after it
  np.testing.assert_array_equal(batch['tgt_in'][:, 0], text.BOS_ID)
  np.testing.assert_array_equal(batch['tgt_in'][:, 1:], batch['tgt_out'][:, :-1])


@pytest.mark.parametrize('layers', [1, 2])
def test_train_flops_counts_the_matmuls(layers: int) -> None:
  b, t, v, e, h = 3, 4, 50, 6, 5
  recurrent = 2 * layers * h * 3 * h  # every layer of the encoder and of the decoder
  inputs = 2 * (e * 3 * h + (layers - 1) * h * 3 * h)  # layer 0 reads the embedding
  per_token = recurrent + inputs + h * v  # + the output projection
  forward = 2 * (b * t * per_token + b * h * 3 * h)  # + the decoder's context, once
  assert speed.train_flops(b, t, v, e, h, layers) == 3 * forward


def test_torch_comparison_interleaves_and_reports_ratios(tmp_path: Path) -> None:
  """The driver alternates the reference and both JAX runs and reports medians and ratios
  (a stand-in for the PyTorch reference: a script printing its JSON line)."""
  fake = tmp_path / 'reference.py'
  fake.write_text('import json, sys\nprint("training...")\nprint(json.dumps({"step_ms": 50.0}))\n')
  data = tmp_path / 'fra.txt'
  data.write_text('Go.\tVa !\n')
  shapes = ','.join(f'--{k}={v}' for k, v in SHAPES.items())
  cmd = [
    sys.executable,
    '-m',
    'seq2seq_jax.benchmarks.torch_comparison',
    f'--torch_python={sys.executable}',
  ]
  cmd += [f'--reference={fake}', f'--data={data}', '--rounds=1', '--steps=2', '--idle=0']
  cmd += [f'--benchmark_args={shapes},--decode_sentences=8,--decode_batch_size=8']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  rounds = [line.split()[2] for line in lines if line.startswith('round ')]
  assert len(rounds) == 3 and len(set(rounds)) == 3  # the reference and both JAX runs
  summary = json.loads(lines[-1])
  assert summary['step_ms']['pytorch'] == [50.0]
  assert len(summary['step_ms']['jax_bfloat16']) == 1
  f32 = summary['median_step_ms']['jax_float32']
  assert summary['speedup_float32'] == pytest.approx(50.0 / f32)
  assert summary['decode_sentences_per_s']['jax_float32'] > 0


def test_torch_comparison_names_a_missing_reference(tmp_path: Path) -> None:
  cmd = [
    sys.executable,
    '-m',
    'seq2seq_jax.benchmarks.torch_comparison',
    f'--reference={tmp_path}/no.py',
  ]
  cmd += [f'--torch_python={sys.executable}']
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith('error: --reference')
