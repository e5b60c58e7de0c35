"""The load generators of `serve_load`: clients that POST one sentence a request to a
translation server's `/translate` and report requests/s and latency.

`load` runs `clients` keep-alive connections written on asyncio streams in this process;
`load_wrk` drives `wrk` (C) with a Lua script. Both send `requests` requests in all,
cycling through the sentences, and return the same row: clients, requests, ok, statuses,
requests_per_s, p50_ms, p99_ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path


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


WRK_SCRIPT = r"""
-- serve_load.py's wrk script: each request POSTs the next body of args[1] (one JSON
-- object a line) to /translate; after args[2] responses the thread stops and writes the
-- file args[3] (wrk itself runs until its -d duration or SIGINT, which the caller sends).
local ffi = require('ffi')
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } serve_load_timespec;
int clock_gettime(int clock, serve_load_timespec *tp);
]]
local ts = ffi.new('serve_load_timespec')
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local bodies, sent, limit, marker = {}, 0, 0, nil
answered, ok, busy, other, first_us, last_us = 0, 0, 0, 0, 0, 0
local headers = {['Content-Type'] = 'application/json'}

function setup(thread) threads = threads or {}; table.insert(threads, thread) end

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  limit, marker = tonumber(args[2]), args[3]
end

function request()
  if sent == 0 then first_us = now_us() end
  sent = sent + 1
  return wrk.format('POST', '/translate', headers, bodies[(sent - 1) % #bodies + 1])
end

function response(status, headers, body)
  if answered >= limit then return end
  answered = answered + 1
  if status == 200 then ok = ok + 1 elseif status == 429 or status == 503 then busy = busy + 1
  else other = other + 1 end
  if answered == limit then
    last_us = now_us()
    local f = io.open(marker, 'w'); f:write('done'); f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format(
    '{"answered": %d, "ok": %d, "busy": %d, "other": %d, "duration_us": %d, '
    .. '"socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    t:get('answered'), t:get('ok'), t:get('busy'), t:get('other'),
    t:get('last_us') - t:get('first_us'), e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def load_wrk(url: str, sentences: list[str], clients: int, requests: int, langs: tuple) -> dict:
  """The same load from `wrk` (C, one thread, `clients` keep-alive connections; its Lua
  script above picks the bodies and counts the answers): a load generator whose own cost
  per request is a small fraction of the server's, so that on 2 cores the benchmark
  measures the server. Requests/s: `requests` answers over the time from the first
  request to the last of them; latency is wrk's (the whole request, as `_load`'s)."""
  with tempfile.TemporaryDirectory() as tmp:
    script, bodies, marker = (Path(tmp) / name for name in ('load.lua', 'bodies.jsonl', 'done'))
    script.write_text(WRK_SCRIPT)
    lines = [{'q': s, 'source': langs[0], 'target': langs[1]} for s in sentences]
    bodies.write_text(''.join(json.dumps(b) + '\n' for b in lines))
    cmd = ['wrk', '-t1', f'-c{clients}', '-d600s', '-s', str(script), url, '--']
    proc = subprocess.Popen(
      [*cmd, str(bodies), str(requests), str(marker)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    while proc.poll() is None and not marker.exists():
      time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # wrk sleeps out its -d otherwise; SIGINT ends it now
    stdout, stderr = proc.communicate(timeout=60)
  last = stdout.strip().splitlines()[-1] if stdout.strip() else ''
  if not last.endswith('}'):
    raise RuntimeError(f'wrk failed ({proc.returncode}): {stderr.strip()[-500:]}')
  r = json.loads(last)
  statuses = {'200': r['ok'], '429/503': r['busy'], 'other': r['other']}
  if r['socket_errors']:
    statuses['socket_errors'] = r['socket_errors']
  return {
    'clients': clients,
    'requests': requests,
    'ok': r['ok'],
    'statuses': statuses,
    'requests_per_s': round(r['ok'] / (r['duration_us'] / 1e6), 1),
    'p50_ms': round(r['p50_us'] / 1000, 1),
    'p99_ms': round(r['p99_us'] / 1000, 1),
  }
