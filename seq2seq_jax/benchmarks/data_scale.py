"""A short run at scale as a user meets it: launch to first step and to exit, peak memory.

  python -m seq2seq_jax.benchmarks.data_scale --out=workdirs/data_scale \
      [--sizes=200000,2000000] [--vocab_size=8000] [--step_rate]

For each size, a synthetic parallel corpus (`corpus/<size>.src` / `.tgt`, made once:
3 to 30 words a sentence drawn from a Zipf vocabulary of 50,000 words; the target a
word-by-word mapping in reverse order) is trained on with SentencePiece
(`--vocab_size` pieces a side) by `train.py`, twice, each time in a new workdir with one
training step: first with an empty data_dir (the tokenizers, encoding and the first
step), then again (the prepared files reused), with the default evaluation at the end
(the loss over the whole validation split, BLEU on `eval.bleu_sentences`). Reported per
run: seconds from launch to the first training step (from train.py's log) and from launch
to exit (the end-of-run evaluation and checkpoint included), the seconds train.py spent
evaluating and saving, the validation pairs, and the child's peak resident memory
(`ru_maxrss`). `--step_rate` also compares the training step rate (60 steps; the median of the
10-step windows after the first, which compiles) on the largest prepared
corpus against the book's file (`--data`) at the same shapes (one bucket of the same
length, the same vocabulary sizes), and the median time to make a batch from either's
prepared files (`batch_ms`: the data side of a step). Prints one JSON object per run,
then a Markdown table.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from seq2seq_jax import build, cli
from seq2seq_jax.data import input_pipeline
from seq2seq_jax.train import experiment

ROOT = Path(__file__).resolve().parents[2]
FLAGS = flags.FLAGS
_STEP = re.compile(r'^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\] step (\d+)[ :]', re.M)
_SIDE = re.compile(r'; ([\d.]+) s evaluating and saving\)')
_VAL = re.compile(r'data: \d+ training pairs, (\d+) validation pairs')


def define_flags() -> None:
  flags.DEFINE_string('out', 'workdirs/data_scale', 'Corpora, data_dirs and workdirs go here.')
  flags.DEFINE_list('sizes', ['200000', '2000000'], 'Corpus sizes (pairs).')
  flags.DEFINE_integer('vocab_size', 8000, 'SentencePiece pieces a side.')
  flags.DEFINE_integer('words', 50_000, 'Zipf vocabulary of the synthetic corpus.')
  flags.DEFINE_bool('step_rate', False, 'Also compare step rates with the book file.')
  flags.DEFINE_string('data', '../shared/data/fra-eng', 'The book file (for --step_rate).')
  flags.DEFINE_bool(
    'skip_starts', False, 'Only --step_rate, on corpora prepared by an earlier run in --out.'
  )


def make_corpus(prefix: Path, pairs: int, words: int, seed: int = 0) -> None:
  """`prefix.src` / `prefix.tgt`: `pairs` lines each, written once."""
  if Path(f'{prefix}.tgt').exists():
    return
  rng = np.random.default_rng(seed)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))

  def vocabulary() -> np.ndarray:
    lengths = rng.integers(2, 11, words)
    return np.array([''.join(rng.choice(letters, n)) for n in lengths], dtype=object)

  src_words, tgt_words = vocabulary(), vocabulary()
  p = 1.0 / np.arange(1, words + 1)
  lengths = rng.integers(3, 31, pairs)
  ids = rng.choice(words, int(lengths.sum()), p=p / p.sum())
  ends = np.cumsum(lengths)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  with open(f'{prefix}.src.tmp', 'w') as src, open(f'{prefix}.tgt.tmp', 'w') as tgt:
    for start in range(0, pairs, 100_000):
      lo = ends[start - 1] if start else 0
      block_ends = ends[start : start + 100_000] - lo
      block = ids[lo : ends[min(start + 100_000, pairs) - 1]]
      rows = np.split(block, block_ends[:-1])
      src.write(''.join(' '.join(src_words[r]).capitalize() + '.\n' for r in rows))
      tgt.write(''.join(' '.join(tgt_words[r[::-1]]).capitalize() + '.\n' for r in rows))
  for side in ('src', 'tgt'):
    Path(f'{prefix}.{side}.tmp').rename(f'{prefix}.{side}')


def _first_step_s(log: str, launched: datetime.datetime) -> float | None:
  match = _STEP.search(log)
  if not match:
    return None
  day = datetime.datetime.strptime(f'{launched.year}{match[1]} {match[2]}', '%Y%m%d %H:%M:%S.%f')
  return round((day - launched).total_seconds(), 1)


def run_train(workdir: Path, overrides: list[str]) -> dict[str, Any]:
  """train.py in a child; seconds from launch to its first step and to its exit, its
  peak RSS, the seconds it spent evaluating and saving, its validation pairs."""
  cmd = [sys.executable, str(ROOT / 'train.py'), f'--config={ROOT / "configs/default.py"}']
  cmd += [f'--workdir={workdir}', *overrides]
  workdir.parent.mkdir(parents=True, exist_ok=True)
  log_path = workdir.parent / f'{workdir.name}.log'
  launched = datetime.datetime.now()
  t0 = time.perf_counter()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
  proc.returncode = os.waitstatus_to_exitcode(status)
  wall = time.perf_counter() - t0
  log_text = log_path.read_text(errors='replace')
  side, val = _SIDE.search(log_text), _VAL.search(log_text)
  result = {
    'first_step_s': _first_step_s(log_text, launched),
    'exit_s': round(wall, 1),  # launch to exit, as a user waits for it
    'eval_and_save_s': float(side[1]) if side else None,
    'val_pairs': int(val[1]) if val else None,
    'peak_rss_gb': round(usage.ru_maxrss / 2**20, 2),  # kilobytes on Linux
    'returncode': proc.returncode,
  }
  if proc.returncode:
    result['error'] = (log_text.strip().splitlines() or ['?'])[-1]
  return result


def batch_ms(workdir: Path, batches: int = 300) -> float:
  """Median milliseconds to make one training batch (ids read from the prepared,
  memory-mapped files) in the workdir's config: the data side of a step."""
  config = build.workdir_config(workdir)
  data = input_pipeline.prepare(config.data, None)
  batches_iter = iter(experiment.make_batchers(config, data, (0, 1))[0])
  times = []
  for _ in range(batches):
    t0 = time.perf_counter()
    next(batches_iter)
    times.append(time.perf_counter() - t0)
  return round(1000 * float(np.median(times)), 3)


def _common(data_dir: Path) -> list[str]:
  return [
    f'--config.data.data_dir={data_dir}',
    '--config.data.tokenizer=sentencepiece',
    f'--config.data.vocab_size={FLAGS.vocab_size}',
    '--config.data.src_lang=src',
    '--config.data.tgt_lang=tgt',
    '--config.train.log_every_steps=1',  # the first step's log line
  ]  # the evaluation is the default's: as a user meets it


def main(argv: list[str]) -> None:
  del argv
  out = Path(FLAGS.out).absolute()
  rows = []
  for size in [] if FLAGS.skip_starts else map(int, FLAGS.sizes):
    prefix = out / 'corpus' / str(size)
    make_corpus(prefix, size, FLAGS.words)
    data_dir = out / f'data_{size}'
    shutil.rmtree(data_dir, ignore_errors=True)
    args = _common(data_dir) + [f'--config.data.train_prefix={prefix}']
    args += ['--config.train.num_train_steps=1']
    for start in ('first', 'second'):
      workdir = out / f'run_{size}_{start}'
      shutil.rmtree(workdir, ignore_errors=True)
      row = {'pairs': size, 'start': start, **run_train(workdir, args)}
      rows.append(row)
      print(json.dumps(row), flush=True)
  if FLAGS.step_rate:
    size = max(map(int, FLAGS.sizes))
    shapes = ['--config.data.max_len=40', '--config.data.buckets=(40,)']
    shapes += ['--config.train.num_train_steps=60', '--config.train.log_every_steps=10']
    for name, source in (
      ('synthetic', [f'--config.data.train_prefix={out / "corpus" / str(size)}']),
      ('book', [f'--config.data.manual_dir={Path(FLAGS.data).absolute()}',
                '--config.data.src_lang=en', '--config.data.tgt_lang=fr']),
    ):  # fmt: skip
      workdir = out / f'rate_{name}'
      shutil.rmtree(workdir, ignore_errors=True)
      result = run_train(workdir, _common(out / f'data_{size}') + source + shapes)
      lines = (workdir / 'metrics.jsonl').read_text().splitlines() if workdir.exists() else []
      rates = [json.loads(x)['steps_per_s'] for x in lines if '"steps_per_s"' in x]
      after_compile = round(float(np.median(rates[1:])), 4) if len(rates) > 1 else None
      row = {'rate': name, 'steps_per_s_after_compile': after_compile, **result}
      if not result['returncode']:
        row['batch_ms'] = batch_ms(workdir)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(
    '| pairs | start | launch to first step (s) | launch to exit (s) | evaluating and saving (s) '
    '| validation pairs | peak RSS (GB) |'
  )
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    if 'pairs' in r:
      cells = [f'{r["pairs"]:,}', r['start'], r['first_step_s'], r['exit_s']]
      cells += [r['eval_and_save_s'], r['val_pairs'], r['peak_rss_gb']]
      print('| ' + ' | '.join(map(str, cells)) + ' |')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
