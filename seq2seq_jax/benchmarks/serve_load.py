"""The translation server under load: throughput and latency from many clients.

  python -m seq2seq_jax.benchmarks.serve_load --model=MODEL_DIR --workdir=DIR
      [--clients=1,8,32,64] [--requests=1024] [--overload_clients=256]

Starts `python -m seq2seq_jax.serve --model=MODEL_DIR` on 127.0.0.1 (greedy, then beam
search with the exported beam), waits for /ready, and sends the sources of the workdir's
test split from 1, 8, 32 and 64 concurrent clients, one sentence a request
(LibreTranslate's `POST /translate`), `--requests` requests per level, from `wrk` when it is
installed (`apt-get install wrk`: a C client whose own cost per request is small beside
the server's, which matters on 2 cores) or else from asyncio clients in this process
(`--generator`; both in `load_clients.py`). Reports requests/s and p50/p99 latency per
level and search; beside them: the offline throughput of the same sentences (`evaluate`'s
Translator on the workdir, and the exported programs in this process, all sentences at
once) and the same server with batching off (`--max_batch=1`). Then an overload run:
`--overload_clients` asyncio clients against a short queue (`--overload_queue`
sentences): every request must be answered (a translation, or 429/503), the server's
resident memory is read before and after, and ordinary requests must succeed afterwards.
The server is stopped with SIGTERM and must exit 0. Every server shares one compilation
cache, new and empty unless `--compilation_cache_dir` is given: the first start's
`ready_s` is a cold start, the later ones warm. Prints one JSON object on the last line
(rows also on stderr).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from absl import app, flags

from seq2seq_jax.benchmarks.load_clients import load, load_wrk

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'A folder written by seq2seq_jax.export.')
flags.DEFINE_string('workdir', None, 'The workdir it was exported from (test split, offline).')
flags.DEFINE_list('clients', ['1', '8', '32', '64'], 'Concurrent clients per level.')
flags.DEFINE_integer('requests', 1024, 'Requests per level (one sentence each).')
flags.DEFINE_list('searches', ['greedy', 'beam'], 'Server searches to measure.')
flags.DEFINE_integer('max_batch', 64, 'The server --max_batch.')
flags.DEFINE_float('max_wait_ms', 0.0, 'The server --max_wait_ms.')
flags.DEFINE_float('linger_ms', 15.0, 'The server --linger_ms.')
flags.DEFINE_integer('overload_clients', 256, 'Clients of the overload run (0: none).')
flags.DEFINE_integer('overload_queue', 32, 'The server --max_queue in the overload run.')
flags.DEFINE_integer('overload_requests', 4, 'Requests per client in the overload run.')
flags.DEFINE_enum(
  'generator',
  'auto',
  ['auto', 'wrk', 'python'],
  "The load levels' clients: wrk (C) or asyncio clients in this process; auto: wrk when there.",
)
flags.DEFINE_string('output', None, 'Also write the JSON result here.')
flags.DEFINE_string(
  'compilation_cache_dir', None, "The servers' compilation cache (default: a new, empty one)."
)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def rss_mib(pid: int) -> float:
  """Resident memory of a process, MiB (Linux)."""
  for line in Path(f'/proc/{pid}/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) / 1024
  return float('nan')


class Server:
  """`python -m seq2seq_jax.serve` in a subprocess, on a free port of 127.0.0.1."""

  def __init__(self, model: str, *flags_: str, ready_s: float = 600.0):
    self.port = free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    cmd = [sys.executable, '-m', 'seq2seq_jax.serve', f'--model={model}', f'--port={self.port}']
    cmd.append(f'--compilation_cache_dir={FLAGS.compilation_cache_dir}')
    t0 = time.perf_counter()
    self.proc = subprocess.Popen(
      [*cmd, *flags_], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while True:
      if self.proc.poll() is not None:
        raise RuntimeError(f'the server exited with {self.proc.returncode}: {" ".join(cmd)}')
      try:
        if httpx.get(f'{self.url}/ready', timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      if time.perf_counter() - t0 > ready_s:
        raise RuntimeError(f'the server was not ready after {ready_s} s')
      time.sleep(0.2)
    self.ready_s = time.perf_counter() - t0

  def stop(self) -> int:
    """SIGTERM; the exit status."""
    self.proc.send_signal(signal.SIGTERM)
    return self.proc.wait(timeout=120)


def offline(model: str, workdir: str, sentences: list[str]) -> dict:
  """Sentences/s of `evaluate`'s Translator and of the exported programs in-process (each
  run twice: the first compiles; the second is timed)."""
  from seq2seq_jax import exported, inference

  out = {}
  for name, beam in (('greedy', 1), ('beam', 4)):
    translator = inference.load(workdir, beam_size=beam)
    translator.translate(sentences)
    t0 = time.perf_counter()
    translator.translate(sentences)
    out[f'evaluate_{name}'] = round(len(sentences) / (time.perf_counter() - t0), 1)
  searcher = exported.load(model)
  for name, beam in (('greedy', False), ('beam', True)):
    searcher.translate(sentences, beam=beam)
    t0 = time.perf_counter()
    searcher.translate(sentences, beam=beam)
    out[f'exported_{name}'] = round(len(sentences) / (time.perf_counter() - t0), 1)
  return out


def test_sources(workdir: str) -> tuple[list[str], tuple[str, str]]:
  from seq2seq_jax import build
  from seq2seq_jax.data import input_pipeline

  config = build.workdir_config(workdir)
  pairs = input_pipeline.load_pairs(config.data, 'test')
  sources = list(dict.fromkeys(src for src, tgt in pairs if src and tgt))
  return sources, (config.data.src_lang, config.data.tgt_lang)


def overload(model: str, sentences: list[str], langs: tuple) -> dict:
  queue = f'--max_queue={FLAGS.overload_queue}'
  server = Server(
    model, f'--max_batch={FLAGS.max_batch}', queue, f'--max_sentences={FLAGS.overload_queue}'
  )
  try:
    before = rss_mib(server.proc.pid)
    n = FLAGS.overload_clients * FLAGS.overload_requests
    result = load(server.url, sentences, FLAGS.overload_clients, n, langs)
    after = rss_mib(server.proc.pid)
    again = load(server.url, sentences, 4, 32, langs)
  finally:
    code = server.stop()
  answered = sum(v for k, v in result['statuses'].items() if k in ('200', '429', '503'))
  return {
    **result,
    'answered': answered,
    'lost': n - answered,
    'rss_mib_before': round(before, 1),
    'rss_mib_after': round(after, 1),
    'afterwards_ok': again['ok'],
    'afterwards_requests': again['requests'],
    'exit_code': code,
  }


def main(argv: list[str]) -> None:
  del argv
  if not FLAGS.model or not FLAGS.workdir:
    raise app.UsageError('--model and --workdir are required')
  if not FLAGS.compilation_cache_dir:  # the first server starts cold, the next ones warm
    FLAGS.compilation_cache_dir = tempfile.mkdtemp(prefix='serve_load_cache_')
  sentences, langs = test_sources(FLAGS.workdir)
  generator = FLAGS.generator
  if generator == 'auto':
    generator = 'wrk' if shutil.which('wrk') else 'python'
  measure = load_wrk if generator == 'wrk' else load
  result: dict[str, Any] = {'sentences': len(sentences), 'cpu': _cpu_name()}
  result['generator'] = generator
  result['offline_sentences_per_s'] = offline(FLAGS.model, FLAGS.workdir, sentences)
  levels = [int(c) for c in FLAGS.clients]
  runs = []
  beam_size = json.loads((Path(FLAGS.model) / 'manifest.json').read_text())['decoding']
  for search in FLAGS.searches:
    beam = beam_size['beam_size'] if search == 'beam' else 1
    for max_batch in (FLAGS.max_batch, 1):
      if max_batch == 1 and search != 'greedy':
        continue
      server = Server(
        FLAGS.model,
        f'--beam_size={beam}',
        f'--max_batch={max_batch}',
        f'--max_wait_ms={FLAGS.max_wait_ms}',
        f'--linger_ms={FLAGS.linger_ms}',
      )
      try:
        load(server.url, sentences, 8, 64, langs)  # connections and first requests
        for clients in levels if max_batch > 1 else [1, max(levels)]:
          row = measure(server.url, sentences, clients, FLAGS.requests, langs)
          row.update(search=search, max_batch=max_batch, ready_s=round(server.ready_s, 1))
          runs.append(row)
          print(json.dumps(row), file=sys.stderr, flush=True)
      finally:
        row_exit = server.stop()
      runs[-1]['exit_code'] = row_exit
  result['runs'] = runs
  if FLAGS.overload_clients:
    result['overload'] = overload(FLAGS.model, sentences, langs)
    print(json.dumps(result['overload']), file=sys.stderr, flush=True)
  text = json.dumps(result)
  if FLAGS.output:
    Path(FLAGS.output).write_text(text + '\n')
  print(text, flush=True)


def _cpu_name() -> str:
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


if __name__ == '__main__':
  app.run(main)
