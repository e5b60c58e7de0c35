"""The translation server: the batcher (with a stand-in searcher: batches, queue limit,
failures, shutdown), the app in-process through `TestClient` (LibreTranslate's API, the
limits and errors, the health/ready/metrics endpoints, batching of concurrent requests)
with the shared trained attention workdir's `Searcher`, and one `python -m
seq2seq_jax.serve --model` subprocess without the training stack (ready, nothing compiled
after ready, SIGTERM with a request in flight)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from seq2seq_jax import errors, runtime
from seq2seq_jax.serving import app as serving
from seq2seq_jax.serving import batcher as batching
from tests import distributed_runs, fixtures_workdir, synthetic

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [en for en, _ in synthetic.make_pairs(12, seed=3)]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.trained_workdir(tmp_path_factory, 'attention')


@pytest.fixture(scope='module')
def searcher(workdir: Path) -> runtime.Searcher:
  s = runtime.from_workdir(workdir, max_batch=4)
  s.compile()
  return s


@pytest.fixture(scope='module')
def expected(searcher: runtime.Searcher) -> dict[str, list[runtime.Hypothesis]]:
  """Each test sentence's greedy translation and beam n-best, from `Searcher.translate`."""
  greedy = searcher.translate(SENTENCES)
  beam = searcher.translate(SENTENCES, beam=True, nbest=searcher.beam_size)
  return {'greedy': [h[0].text for h in greedy], 'beam': beam}


class Wrapped:
  """A searcher that delegates to another, with `search` (and a gate on `compile`)
  replaceable: for failures, slow batches and a server that is not ready yet."""

  def __init__(self, inner: Any, search: Any = None, gate: threading.Event | None = None):
    self._inner, self._search, self._gate = inner, search, gate

  def __getattr__(self, name: str) -> Any:
    return getattr(self._inner, name)

  def search(self, src_ids: Any, beam: bool = False) -> Any:
    return (self._search or self._inner.search)(src_ids, beam)

  def compile(self) -> int:
    if self._gate is not None:
      self._gate.wait(30)
    return self._inner.compile()


@contextlib.contextmanager
def _client(searcher: Any, **settings: Any) -> Iterator[TestClient]:
  with TestClient(serving.create_app(searcher, serving.Settings(**settings))) as client:
    assert client.app.state.server.wait_ready(60)
    yield client


@pytest.fixture(scope='module')
def client(searcher: runtime.Searcher) -> Iterator[TestClient]:
  with _client(searcher, max_chars=60, max_sentences=4, max_body_bytes=600) as client:
    yield client


def _post(client: TestClient, status: int = 200, **body: Any) -> dict:
  response = client.post('/translate', json={'source': 'en', 'target': 'fr', **body})
  assert response.status_code == status, response.text
  return response.json()


# -- the app ------------------------------------------------------------------------------


def test_translate_string_list_and_form(client: TestClient, expected: dict) -> None:
  one = _post(client, q=SENTENCES[0])
  assert one == {'translatedText': expected['greedy'][0]}  # nothing a client did not ask for
  many = _post(client, q=[SENTENCES[1], '  ', SENTENCES[2]])
  assert many == {'translatedText': [expected['greedy'][1], '', expected['greedy'][2]]}
  assert _post(client, q=[]) == {'translatedText': []}
  auto = _post(client, q=[SENTENCES[3]], source='auto')
  assert auto['detectedLanguage'] == [{'language': 'en', 'confidence': 100}]
  form = client.post('/translate', data={'q': SENTENCES[4], 'source': 'en', 'target': 'fr'})
  assert form.json() == {'translatedText': expected['greedy'][4]}
  files = {'q': (None, SENTENCES[5]), 'source': (None, 'auto')}
  multipart = client.post('/translate', files=files)
  assert multipart.json()['translatedText'] == expected['greedy'][5]


def test_alternatives_scores_and_attention(
  client: TestClient, searcher: runtime.Searcher, expected: dict
) -> None:
  k, compiled = searcher.beam_size - 1, searcher.compiles
  body = _post(client, q=[SENTENCES[0], SENTENCES[1]], alternatives=k, scores=True)
  for i in range(2):
    nbest = expected['beam'][i]
    assert body['translatedText'][i] == nbest[0].text
    assert body['alternatives'][i] == [h.text for h in nbest[1 : 1 + k]]
    assert body['scores'][i] == pytest.approx([h.score for h in nbest[: 1 + k]], abs=1e-5)
  greedy_scores = _post(client, q=SENTENCES[0], scores=True)['scores']
  assert greedy_scores == [None]  # greedy search has no score
  error = _post(client, 400, q=SENTENCES[0], alternatives=searcher.beam_size)['error']
  assert f'at most {k}' in error
  found = _post(client, q=SENTENCES[0], attention=True)['attention']
  assert {'source_tokens', 'target_tokens', 'weights'} <= set(found)
  weights = found['weights']  # [target tokens][source tokens], of the greedy translation
  width = len(searcher.encode(SENTENCES[0])[0])
  assert (len(weights), len(weights[0])) == (len(found['target_tokens']), width)
  assert all(abs(sum(row) - 1) < 1e-2 for row in weights)
  assert found['translation'] == _post(client, q=SENTENCES[0])['translatedText']
  with_beam = _post(client, q=SENTENCES[0], alternatives=1, attention=True)
  assert with_beam['attention']['translation'] == with_beam['translatedText']  # the beam's
  assert searcher.compiles == compiled  # every shape these use was compiled before ready


@pytest.mark.parametrize(
  ('body', 'status', 'named'),
  [
    ({'q': 'I see the cat.', 'target': 'de'}, 400, 'en -> fr only'),
    ({'q': 'I see the cat.', 'source': 'fr'}, 400, 'en -> fr only'),
    ({'q': 'I see the cat.', 'format': 'html'}, 400, "only 'text'"),
    ({'source': 'en'}, 400, 'q: Field required'),
    ({'q': 'x', 'alternatives': -1}, 400, 'alternatives'),
    ({'q': ['a.'] * 5}, 400, 'the limit is 4 (max_sentences)'),
    ({'q': ['a.', 'b' * 61]}, 413, 'the limit is 60 (max_chars)'),
    ({'q': ['abc'] * 3, 'pad': 'x' * 600}, 413, 'limit of 600 bytes (max_body_bytes)'),
  ],
)
def test_limits_and_errors(client: TestClient, body: dict, status: int, named: str) -> None:
  response = client.post('/translate', json=body)
  assert response.status_code == status
  assert named in response.json()['error']


def test_other_errors_are_json(client: TestClient) -> None:
  response = client.post('/translate', content=b'{not json', headers={'content-type': 'text'})
  assert response.status_code == 400 and 'JSON' in response.json()['error']
  assert client.get('/no_such_page').json() == {'error': 'Not Found'}
  assert client.get('/translate').status_code == 405 and 'error' in client.get('/translate').json()


def test_api_keys(searcher: runtime.Searcher, expected: dict) -> None:
  with _client(searcher, api_keys=frozenset({'k1', 'k2'})) as client:
    assert _post(client, 403, q=SENTENCES[0]) == {'error': 'an api_key is required'}
    assert _post(client, 403, q=SENTENCES[0], api_key='k3') == {'error': 'Invalid API key'}
    assert _post(client, q=SENTENCES[0], api_key='k2')['translatedText'] == expected['greedy'][0]


def test_languages_health_ready_metrics(client: TestClient, searcher: runtime.Searcher) -> None:
  assert client.get('/languages').json() == [{'code': 'en', 'name': 'English', 'targets': ['fr']}]
  assert client.get('/health').status_code == 200
  ready = client.get('/ready').json()
  assert ready['ready'] is True and ready['compiles'] == searcher.compiles
  assert '/translate' in client.get('/openapi.json').json()['paths']
  assert client.get('/').status_code == 200
  settings = client.get('/frontend/settings').json()
  assert settings['maxAlternatives'] == searcher.beam_size - 1 and settings['attention'] is True
  assert settings['keyRequired'] is False and settings['language']['target']['code'] == 'fr'
  _post(client, q=[SENTENCES[0], SENTENCES[1]])
  _post(client, 400, q='x', format='html')
  metrics = client.get('/metrics').text
  for line in (
    'seq2seq_jax_translate_requests_total{status="200"}',
    'seq2seq_jax_translate_requests_total{status="400"}',
    'seq2seq_jax_batch_size_bucket',
    'seq2seq_jax_translate_latency_seconds_bucket',
    'seq2seq_jax_queue_length 0.0',
    f'seq2seq_jax_compiles {float(searcher.compiles)}',
  ):
    assert line in metrics


def test_not_ready_is_503(searcher: runtime.Searcher) -> None:
  gate = threading.Event()
  with TestClient(serving.create_app(Wrapped(searcher, gate=gate))) as client:
    assert client.get('/health').status_code == 200
    assert client.get('/ready').status_code == 503
    assert _post(client, 503, q='I see the cat.')['error'].startswith('the model is still')
    gate.set()
    assert client.app.state.server.wait_ready(30)
    assert client.get('/ready').json()['ready'] is True


def test_concurrent_requests_are_batched(searcher: runtime.Searcher, expected: dict) -> None:
  n = 6
  with _client(searcher, max_wait_ms=300) as client:
    with futures.ThreadPoolExecutor(n) as pool:
      answers = list(pool.map(lambda s: _post(client, q=s)['translatedText'], SENTENCES[:n]))
    assert answers == expected['greedy'][:n]  # each its own translation
    stats = client.app.state.server.batcher.stats
    assert stats.sentences == n and stats.batches < n


def test_queue_full_is_429_and_search_error_is_500(searcher: runtime.Searcher) -> None:
  def broken(src_ids: Any, beam: bool) -> Any:
    raise RuntimeError('no device')

  with _client(Wrapped(searcher, search=broken), max_queue=2, max_sentences=3) as client:
    assert 'max_queue' in _post(client, 429, q=['a.', 'b.', 'c.'])['error']
    assert _post(client, 500, q='I see.') == {
      'error': 'translation failed: RuntimeError: no device'
    }
    assert _post(client, 500, q='I see.')['error']  # the worker goes on


# -- the batcher with a stand-in searcher ----------------------------------------------------


class Recorder:
  """A searcher stand-in: records each batch; a sentence's hypothesis names its ids;
  batches holding id 99 fail; `gate` (when set) holds each batch until it opens."""

  max_batch = 4
  length_buckets = (2, 4, 8)

  def __init__(self, gate: threading.Event | None = None) -> None:
    self.calls: list[tuple[list[list[int]], bool]] = []
    self.gate = gate

  def search(self, src_ids: list[list[int]], beam: bool = False) -> list[list[Any]]:
    if self.gate is not None:
      self.gate.wait(10)
    self.calls.append(([list(s) for s in src_ids], beam))
    if any(99 in s for s in src_ids):
      raise ValueError('bad batch')
    return [[runtime.Hypothesis(' '.join(map(str, s)))] for s in src_ids]


def test_batch_shapes() -> None:
  """Rows pad to powers of 2 up to max_batch (or powers of another factor); source columns
  to max_len and its halves."""
  assert runtime.row_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
  assert runtime.row_buckets(48, factor=4) == (1, 4, 16, 48)
  assert runtime.row_buckets(1) == (1,) and runtime.length_buckets(18) == (5, 9, 18)
  with pytest.raises(errors.ConfigError, match='at least 1'):
    runtime.row_buckets(0)
  assert runtime.bucket(5, (1, 4, 16)) == 16 and runtime.bucket(17, (1, 4, 16)) == 16


def test_batcher_groups_by_mode_and_length() -> None:
  recorder = Recorder()
  b = batching.Batcher(recorder, max_wait_ms=0, max_queue=20)  # type: ignore[arg-type]
  requests = [([[1], [2, 3, 4, 5, 6]], False), ([[7]], True), ([[8, 9, 10], [11]], False)]
  pending = [b.submit(ids, beam) for ids, beam in requests]  # all waiting: no worker yet
  assert b.queue_length == 5
  b.start()
  b.close()
  for (ids, _), future in zip(requests, pending, strict=True):
    assert [h[0].text for h in future.result(0)] == [' '.join(map(str, s)) for s in ids]
  # The oldest sentence's bucket first ([1], [11] are 2 wide), then the others of its mode.
  assert recorder.calls == [([[1], [11], [8, 9, 10], [2, 3, 4, 5, 6]], False), ([[7]], True)]
  assert b.stats.batches == 2 and b.stats.sentences == 5 and b.stats.largest_batch == 4


def test_batcher_lingers_for_the_clients_it_answered() -> None:
  """Right after a batch of 2, a free decoder holds a lone sentence until a second one
  is back (then both in one batch) or linger_ms has passed; a sentence of the other mode,
  or any after the linger, goes at once."""
  recorder = Recorder()
  b = batching.Batcher(recorder, max_wait_ms=0, linger_ms=3000)  # type: ignore[arg-type]
  b.start()
  assert len(b.submit([[1], [2]]).result(5)) == 2  # nothing answered before: no linger
  third = b.submit([[3]])
  time.sleep(0.2)
  assert not third.done()  # held for the second client of the batch it answered
  fourth = b.submit([[4]])
  assert third.result(5) and fourth.result(5)
  assert recorder.calls[-1] == ([[3], [4]], False)  # decoded together
  start = time.monotonic()
  assert b.submit([[5]], beam=True).result(5)  # the other mode: not lingered for
  assert time.monotonic() - start < 1.5
  b.close()
  quick = batching.Batcher(recorder, max_wait_ms=0, linger_ms=50)  # type: ignore[arg-type]
  quick.start()
  quick.submit([[6], [7]]).result(5)
  start = time.monotonic()
  assert quick.submit([[8]]).result(5)  # alone: decoded when the 50 ms are over
  assert 0.02 < time.monotonic() - start < 2 and recorder.calls[-1] == ([[8]], False)
  quick.close()


def test_batcher_queue_full_failures_and_shutdown() -> None:
  gate = threading.Event()
  recorder = Recorder(gate)
  b = batching.Batcher(recorder, max_wait_ms=0, max_queue=3)  # type: ignore[arg-type]
  b.start()
  first = b.submit([[1]])
  while b.queue_length:  # the worker took it and waits at the gate
    time.sleep(0.005)
  accepted = [b.submit([[2], [99]]), b.submit([[3]])]  # the queue holds 3
  with pytest.raises(batching.QueueFull, match='the limit is 3'):
    b.submit([[4]])
  gate.set()
  b.close()  # finishes what it accepted
  assert first.result(0)[0][0].text == '1'
  with pytest.raises(ValueError, match='bad batch'):  # the batch holding 99 fails ...
    accepted[0].result(0)
  with pytest.raises(ValueError):  # ... with every request in it
    accepted[1].result(0)
  assert b.stats.failed_batches == 1
  with pytest.raises(batching.Closed):
    b.submit([[5]])


def test_batcher_survives_a_failed_batch() -> None:
  b = batching.Batcher(Recorder(), max_wait_ms=0, max_queue=8)  # type: ignore[arg-type]
  b.start()
  bad = b.submit([[99]])
  with pytest.raises(ValueError):
    bad.result(10)
  assert b.submit([[5, 6]]).result(10)[0][0].text == '5 6'
  b.close()


# -- the command ----------------------------------------------------------------------------


def _get(url: str, timeout: float = 5) -> tuple[int, dict]:
  try:
    with urllib.request.urlopen(url, timeout=timeout) as r:
      return r.status, json.loads(r.read() or b'null')
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read() or b'null')


def _post_url(url: str, body: dict) -> tuple[int, dict]:
  data = json.dumps(body).encode()
  request = urllib.request.Request(url, data, {'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=60) as r:
    return r.status, json.loads(r.read())


def _wait_for(check: Any, proc: subprocess.Popen, what: str, timeout: float = 120) -> Any:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert proc.poll() is None, f'the server ended ({proc.returncode}) before {what}'
    try:
      found = check()
      if found:
        return found
    except OSError:
      pass  # not listening yet
    time.sleep(0.1)
  raise AssertionError(f'no {what} in {timeout} s')


def test_serve_command(
  tmp_path_factory: pytest.TempPathFactory, expected: dict, tmp_path: Path
) -> None:
  """`serve --model` (the workdir's export) where the training stack cannot be imported."""
  model = fixtures_workdir.exported_model(tmp_path_factory, 'attention')
  port = distributed_runs.free_port()
  url = f'http://127.0.0.1:{port}'
  log = tmp_path / 'serve.log'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
  cmd = [sys.executable, 'tests/no_training_stack.py', 'seq2seq_jax.serve']
  cmd += [f'--model={model}', f'--port={port}']
  # 4 sentences go at once (a full batch); 1 would wait a minute for others: in flight at
  # SIGTERM, which decodes it at once.
  cmd += ['--max_batch=4', '--max_wait_ms=60000']
  with log.open('w') as out:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
  try:
    _wait_for(lambda: _get(f'{url}/health')[0] == 200, proc, '/health')
    ready = _wait_for(lambda: (r := _get(f'{url}/ready'))[0] == 200 and r[1], proc, '/ready')
    status, body = _post_url(f'{url}/translate', {'q': SENTENCES[:4], 'source': 'auto'})
    assert status == 200 and body['translatedText'] == expected['greedy'][:4]
    assert _get(f'{url}/ready')[1]['compiles'] == ready['compiles']  # nothing compiled since

    with futures.ThreadPoolExecutor(1) as pool:
      in_flight = pool.submit(_post_url, f'{url}/translate', {'q': SENTENCES[4], 'source': 'en'})
      _wait_for(lambda: b'seq2seq_jax_queue_length 1.0' in _metrics(url), proc, 'a request waiting')
      proc.send_signal(signal.SIGTERM)
      assert in_flight.result(30) == (200, {'translatedText': expected['greedy'][4]})
    assert proc.wait(60) == 0, log.read_text()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert 'ready:' in log.read_text()


def _metrics(url: str) -> bytes:
  with urllib.request.urlopen(f'{url}/metrics', timeout=5) as r:
    return r.read()
