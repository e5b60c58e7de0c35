"""The translation server under load: throughput and latency from many clients.

  python -m seq2seq_jax.benchmarks.serve_load --model=MODEL_DIR --workdir=DIR
      [--clients=1,8,32,64] [--requests=1024] [--overload_clients=256]

Starts `python -m seq2seq_jax.serve --model=MODEL_DIR` on 127.0.0.1 (greedy, then beam
search with the exported beam), waits for /ready, and sends the sources of the workdir's
test split from 1, 8, 32 and 64 concurrent clients, one sentence a request
(LibreTranslate's `POST /translate`), `--requests` requests per level (each client stops
after its share). Reports requests/s and p50/p99 latency per level and search; beside
them: the offline throughput of the same sentences (`evaluate`'s Translator on the
workdir, and the exported programs in this process, all sentences at once) and the same
server with batching off (`--max_batch=1`). Then an overload run: `--overload_clients`
clients against a short queue (`--overload_queue` sentences): every request must be
answered (a translation, or 429/503), the server's resident memory is read before and
after, and ordinary requests must succeed afterwards. The server is stopped with SIGTERM
and must exit 0. Every server shares one compilation cache, new and empty unless
`--compilation_cache_dir` is given: the first start's `ready_s` is a cold start, the
later ones warm. Prints one JSON object on the last line (rows also on stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'A folder written by seq2seq_jax.export.')
flags.DEFINE_string('workdir', None, 'The workdir it was exported from (test split, offline).')
flags.DEFINE_list('clients', ['1', '8', '32', '64'], 'Concurrent clients per level.')
flags.DEFINE_integer('requests', 1024, 'Requests per level (one sentence each).')
flags.DEFINE_list('searches', ['greedy', 'beam'], 'Server searches to measure.')
flags.DEFINE_integer('max_batch', 64, 'The server --max_batch.')
flags.DEFINE_float('max_wait_ms', 0.0, 'The server --max_wait_ms.')
flags.DEFINE_integer('overload_clients', 256, 'Clients of the overload run (0: none).')
flags.DEFINE_integer('overload_queue', 32, 'The server --max_queue in the overload run.')
flags.DEFINE_integer('overload_requests', 4, 'Requests per client in the overload run.')
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
    self.log = open(os.devnull, 'wb')  # noqa: SIM115
    t0 = time.perf_counter()
    self.proc = subprocess.Popen([*cmd, *flags_], cwd=ROOT, stdout=self.log, stderr=self.log)
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
    try:
      return self.proc.wait(timeout=120)
    finally:
      self.log.close()


class Connection:
  """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: the load
  generator's client. Written on asyncio streams rather than an HTTP client library because
  at 64 concurrent requests httpx's async pool cost more CPU per request than the server
  did (2 cores shared by both), and the benchmark must measure the server."""

  def __init__(self, host: str, port: int):
    self.host, self.port = host, port
    self.reader: asyncio.StreamReader | None = None
    self.writer: asyncio.StreamWriter | None = None

  async def post(self, path: str, body: dict) -> tuple[int, bytes]:
    if self.writer is None:
      self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
    data = json.dumps(body).encode()
    head = (
      f'POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n'
      f'Content-Length: {len(data)}\r\n\r\n'
    )
    self.writer.write(head.encode() + data)
    await self.writer.drain()
    status_line = await self.reader.readline()
    status = int(status_line.split()[1])
    length, close = 0, False
    while (line := await self.reader.readline()) not in (b'\r\n', b''):
      name, _, value = line.decode('latin-1').partition(':')
      if name.lower() == 'content-length':
        length = int(value)
      elif name.lower() == 'connection' and value.strip().lower() == 'close':
        close = True
    payload = await self.reader.readexactly(length)
    if close:
      await self.close()
    return status, payload

  async def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      with contextlib.suppress(OSError):
        await self.writer.wait_closed()
      self.reader = self.writer = None


async def _load(
  url: str, sentences: list[str], clients: int, requests: int, langs: tuple[str, str]
) -> dict:
  """`clients` workers, `requests` requests in all; latency of each, and status counts."""
  latencies: list[float] = []
  statuses: Counter = Counter()
  counter = iter(range(requests))
  host, port = url.removeprefix('http://').split(':')

  async def worker() -> None:
    conn = Connection(host, int(port))
    try:
      for i in counter:
        body = {'q': sentences[i % len(sentences)], 'source': langs[0], 'target': langs[1]}
        t0 = time.perf_counter()
        try:
          status, _ = await conn.post('/translate', body)
          statuses[status] += 1
          if status == 200:
            latencies.append(time.perf_counter() - t0)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
          statuses[type(e).__name__] += 1
          await conn.close()
    finally:
      await conn.close()

  t0 = time.perf_counter()
  await asyncio.gather(*(worker() for _ in range(clients)))
  seconds = time.perf_counter() - t0
  ok = statuses.get(200, 0)
  q = statistics.quantiles(latencies, n=100, method='inclusive') if len(latencies) > 1 else [0] * 99
  return {
    'clients': clients,
    'requests': requests,
    'ok': ok,
    'statuses': {str(k): v for k, v in sorted(statuses.items(), key=str)},
    'requests_per_s': round(ok / seconds, 1),
    'p50_ms': round(q[49] * 1000, 1),
    'p99_ms': round(q[98] * 1000, 1),
  }


def load(url: str, sentences: list[str], clients: int, requests: int, langs: tuple) -> dict:
  """`_load` on uvloop when installed (the server's event loop too): the load generator
  shares the 2 cores with the server, so its own cost per request counts."""
  coro = _load(url, sentences, clients, requests, langs)
  try:
    import uvloop
  except ImportError:
    return asyncio.run(coro)
  return uvloop.run(coro)


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
  result: dict[str, Any] = {'sentences': len(sentences), 'cpu': _cpu_name()}
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
      )
      try:
        load(server.url, sentences, 8, 64, langs)  # connections and first requests
        for clients in levels if max_batch > 1 else [1, max(levels)]:
          row = load(server.url, sentences, clients, FLAGS.requests, langs)
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
