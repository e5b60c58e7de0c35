"""The translation server's application: `create_app(searcher, settings) -> FastAPI`.

Speaks LibreTranslate's API, the convention translation clients and front ends use:
  - `POST /translate` (JSON or form data): `q` (a string or a list of strings), `source`
    (the model's source language, or 'auto'), `target`, `alternatives` (the n-best list
    of beam search, at most `beam_size - 1`), `format` ('text'), `api_key`; answers
    `{"translatedText": str | [str]}` (the shape of `q`), with `"alternatives"` when asked
    for and `"detectedLanguage"` for `source: "auto"`. Fields LibreTranslate does not have
    come only when asked for, so its clients see nothing new: `scores: true` adds
    `"scores"` (per sentence, the scores of the translation and its alternatives, best
    first; null from greedy search) and `attention: true` adds `"attention"`
    (`Searcher.attention`'s `{"translation", "source_tokens", "target_tokens", "weights"}`
    of the translation answered; models with attention only).
  - `GET /languages`: `[{"code", "name", "targets"}]`, the model's one direction;
    `GET /frontend/settings`: the limits and what the model offers, for front ends.
  - `GET /health` (200 while the process runs), `GET /ready` (200 once every batch shape
    is compiled, 503 before), `GET /metrics` (Prometheus), `GET /docs` (OpenAPI) and
    the page at `/` (`static/index.html`, its files under `/static`).

Every error is `{"error": "..."}` naming the problem or the limit: 400 (a bad request,
too many sentences, a direction the model does not have), 403 (an API key is required and
the one given is not listed), 413 (the body or a sentence over its limit), 429 (the queue
is full: at once, never a wait), 500 (decoding failed; only the requests of that batch),
503 (not ready yet, or shutting down). Sentences go through the `batcher.Batcher`, which
decodes the sentences of concurrent requests together; blank ones answer '' without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prometheus_client as prom
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from seq2seq_jax import runtime
from seq2seq_jax.data import text
from seq2seq_jax.serving import batcher as batching
from seq2seq_jax.serving import metrics as prometheus

log = logging.getLogger('seq2seq_jax.serving')

STATIC_DIR = Path(__file__).resolve().parent / 'static'
LANGUAGE_NAMES = {
  'ar': 'Arabic', 'cs': 'Czech', 'de': 'German', 'en': 'English', 'es': 'Spanish',
  'fi': 'Finnish', 'fr': 'French', 'it': 'Italian', 'ja': 'Japanese', 'nl': 'Dutch',
  'pl': 'Polish', 'pt': 'Portuguese', 'ro': 'Romanian', 'ru': 'Russian', 'tr': 'Turkish',
  'uk': 'Ukrainian', 'zh': 'Chinese',
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the server batches and what it accepts (each has a flag of `seq2seq_jax.serve`).

  `max_wait_ms`, `linger_ms`: see `serving.batcher`. `beam`: decode with the model's beam
  search by default (else greedy; a request asking for alternatives always gets beam
  search). `max_chars`: characters per sentence; `max_sentences`: sentences per request;
  `max_body_bytes`: the request body; `max_queue`: sentences waiting to be decoded;
  `api_keys`: when given, a listed `api_key` is required."""

  max_wait_ms: float = 0.0
  linger_ms: float = 15.0
  beam: bool = False
  max_chars: int = 5000
  max_sentences: int = 128
  max_body_bytes: int = 1 << 20
  max_queue: int = 1024
  api_keys: frozenset[str] | None = None


class TranslateRequest(pydantic.BaseModel):
  """The body of `POST /translate` (LibreTranslate's fields, then this server's extras)."""

  model_config = pydantic.ConfigDict(extra='ignore')

  q: str | list[str]
  source: str = 'auto'
  target: str | None = None
  format: str = 'text'
  alternatives: int = pydantic.Field(0, ge=0)
  api_key: str | None = None
  scores: bool = False
  attention: bool = False


class ApiError(Exception):
  """An answer `{"error": message}` with `status`."""

  def __init__(self, status: int, message: str) -> None:
    super().__init__(message)
    self.status = status


class _Server:
  """What the routes share: the searcher, the settings, the batcher, readiness, metrics."""

  def __init__(self, searcher: runtime.Searcher, settings: Settings) -> None:
    self.searcher = searcher
    self.settings = settings
    self.ready = threading.Event()
    self.compile_seconds = math.nan
    self.compile_error: str | None = None
    self.metrics = prometheus.Metrics(
      queue_length=lambda: self.batcher.queue_length,
      compiles=lambda: searcher.compiles,
      ready=lambda: float(self.ready.is_set()),
    )
    s = settings
    self.batcher = batching.Batcher(
      searcher, s.max_wait_ms, s.max_queue, on_batch=self.metrics.on_batch, linger_ms=s.linger_ms
    )

  def compile(self) -> None:
    """Compiles every batch shape (greedy and beam search), then marks the server ready."""
    start = time.monotonic()
    try:
      programs = self.searcher.compile()
    except Exception as e:  # noqa: BLE001 (reported by /ready and the log)
      self.compile_error = f'{type(e).__name__}: {e}'
      log.exception('compiling the searches failed')
      return
    self.compile_seconds = time.monotonic() - start
    log.info('ready: %d programs compiled in %.1f s', programs, self.compile_seconds)
    self.ready.set()

  def wait_ready(self, timeout: float | None = None) -> bool:
    return self.ready.wait(timeout)


def create_app(searcher: runtime.Searcher, settings: Settings | None = None) -> FastAPI:
  """The app for `searcher` (see the module docstring). Its lifespan starts the batcher
  and compiles in a background thread (so /health answers at once); at its end the
  batcher finishes what it accepted. `app.state.server.wait_ready(timeout)` waits for
  the compilation."""
  server = _Server(searcher, settings or Settings())

  @contextlib.asynccontextmanager
  async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    server.batcher.start()
    threading.Thread(target=server.compile, name='compile', daemon=True).start()
    yield
    await run_in_threadpool(server.batcher.close)

  app = FastAPI(
    title='seq2seq_jax translation server',
    description=f'{searcher.source_lang} -> {searcher.target_lang}, LibreTranslate API.',
    lifespan=lifespan,
  )
  app.state.server = server
  _add_error_handlers(app)
  _add_routes(app, server)
  app.mount('/static', StaticFiles(directory=STATIC_DIR, check_dir=False), name='static')
  return app


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({'error': message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
  """Every error as `{"error": ...}`, FastAPI's and Starlette's own too."""

  @app.exception_handler(HTTPException)
  async def http_error(request: Request, e: HTTPException) -> JSONResponse:
    return _error(e.status_code, str(e.detail))

  @app.exception_handler(RequestValidationError)
  async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return _error(400, _validation_message(e.errors()))

  @app.exception_handler(Exception)
  async def internal_error(request: Request, e: Exception) -> JSONResponse:
    return _error(500, f'internal error: {type(e).__name__}: {e}')


def _validation_message(errors: Any) -> str:
  first = list(errors)[0]
  where = '.'.join(str(p) for p in first.get('loc', ()) if p not in ('body', 'query'))
  return f'{where or "request"}: {first.get("msg", "invalid")}'


def _add_routes(app: FastAPI, server: _Server) -> None:
  searcher, metrics = server.searcher, server.metrics

  @app.get('/health')
  async def health() -> dict:
    return {'status': 'ok'}

  @app.get('/ready')
  async def ready() -> JSONResponse:
    body = {'ready': server.ready.is_set(), 'compiles': searcher.compiles}
    if server.ready.is_set():
      return JSONResponse({**body, 'compile_seconds': round(server.compile_seconds, 3)})
    error = server.compile_error or 'compiling the searches for every batch shape'
    return JSONResponse({**body, 'error': error}, status_code=503)

  @app.get('/languages')
  async def languages() -> list[dict]:
    src, tgt = searcher.source_lang, searcher.target_lang
    return [{'code': src, 'name': LANGUAGE_NAMES.get(src, src), 'targets': [tgt]}]

  @app.get('/frontend/settings')
  async def frontend_settings() -> dict:
    """LibreTranslate's settings for front ends (the page reads them): the limits, whether
    a key is required, and what this model offers."""
    src, tgt = searcher.source_lang, searcher.target_lang
    return {
      'charLimit': server.settings.max_chars,
      'maxAlternatives': searcher.beam_size - 1,
      'keyRequired': server.settings.api_keys is not None,
      'attention': searcher.has_attention,
      'language': {
        'source': {'code': src, 'name': LANGUAGE_NAMES.get(src, src)},
        'target': {'code': tgt, 'name': LANGUAGE_NAMES.get(tgt, tgt)},
      },
    }

  @app.get('/metrics')
  async def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=prom.CONTENT_TYPE_LATEST)

  @app.get('/', response_class=HTMLResponse)
  async def page() -> Response:
    index = STATIC_DIR / 'index.html'
    if index.is_file():
      return FileResponse(index, media_type='text/html')
    return HTMLResponse('<p>seq2seq_jax: the page is not installed; POST /translate works.</p>')

  @app.post(
    '/translate',
    openapi_extra={
      'requestBody': {
        'required': True,
        'content': {
          media: {'schema': TranslateRequest.model_json_schema()}
          for media in ('application/json', 'application/x-www-form-urlencoded')
        },
      }
    },
  )
  async def translate(request: Request) -> JSONResponse:
    start = time.monotonic()
    try:
      response = await _translate(request, server)
    except ApiError as e:
      response = _error(e.status, str(e))
    metrics.requests.labels(str(response.status_code)).inc()
    metrics.latency.observe(time.monotonic() - start)
    return response


async def _read_body(request: Request, limit: int) -> bytes:
  """The body, or 413 as soon as it is over `limit` bytes (declared or read)."""
  declared = request.headers.get('content-length', '')
  if declared.isdigit() and int(declared) > limit:
    raise ApiError(413, f'the request body is over the limit of {limit} bytes (max_body_bytes)')
  chunks, size = [], 0
  async for chunk in request.stream():
    chunks.append(chunk)
    size += len(chunk)
    if size > limit:
      raise ApiError(413, f'the request body is over the limit of {limit} bytes (max_body_bytes)')
  return b''.join(chunks)


async def _parse(request: Request, body: bytes) -> TranslateRequest:
  """The request's fields from JSON or form data (urlencoded or multipart)."""
  kind = request.headers.get('content-type', '').split(';')[0].strip().lower()
  if kind in ('application/x-www-form-urlencoded', 'multipart/form-data'):

    async def replay() -> dict:
      return {'type': 'http.request', 'body': body, 'more_body': False}

    form = await Request(request.scope, replay).form()
    data: Any = {k: form.get(k) for k in form.keys()}
    if len(form.getlist('q')) > 1:
      data['q'] = form.getlist('q')
  else:
    try:
      data = json.loads(body or b'{}')
    except (ValueError, UnicodeDecodeError) as e:
      raise ApiError(400, f'the body is neither JSON nor form data: {e}') from None
  if not isinstance(data, dict):
    raise ApiError(400, 'the body must be a JSON object (or form data)')
  try:
    return TranslateRequest.model_validate(data)
  except pydantic.ValidationError as e:
    raise ApiError(400, _validation_message(e.errors())) from None


def _check(req: TranslateRequest, sentences: list[str], server: _Server) -> None:
  """400/403/413 for a request the server will not translate."""
  searcher, settings = server.searcher, server.settings
  if settings.api_keys is not None and req.api_key not in settings.api_keys:
    raise ApiError(403, 'Invalid API key' if req.api_key else 'an api_key is required')
  if req.format != 'text':
    raise ApiError(400, f"format {req.format!r} is not supported: only 'text'")
  src, tgt = searcher.source_lang, searcher.target_lang
  if req.source not in ('auto', src) or (req.target or tgt) != tgt:
    raise ApiError(
      400, f'this model translates {src} -> {tgt} only, not {req.source} -> {req.target}'
    )
  if len(sentences) > settings.max_sentences:
    raise ApiError(
      400,
      f'{len(sentences)} sentences in one request; the limit is {settings.max_sentences} '
      '(max_sentences)',
    )
  longest = max((len(s) for s in sentences), default=0)
  if longest > settings.max_chars:
    raise ApiError(
      413, f'a sentence has {longest} characters; the limit is {settings.max_chars} (max_chars)'
    )
  if req.alternatives > searcher.beam_size - 1:
    raise ApiError(
      400,
      f'alternatives: at most {searcher.beam_size - 1} (the beam keeps {searcher.beam_size} '
      f'hypotheses), got {req.alternatives}',
    )
  if req.attention and not searcher.has_attention:
    raise ApiError(400, 'this model has no attention weights')


async def _translate(request: Request, server: _Server) -> JSONResponse:
  searcher, settings = server.searcher, server.settings
  if server.batcher.closed:
    raise ApiError(503, 'the server is shutting down')
  if not server.ready.is_set():
    raise ApiError(503, server.compile_error or 'the model is still compiling: see /ready')
  req = await _parse(request, await _read_body(request, settings.max_body_bytes))
  single = isinstance(req.q, str)
  sentences = [req.q] if single else list(req.q)
  _check(req, sentences, server)

  beam = settings.beam or req.alternatives > 0
  todo = [i for i, s in enumerate(sentences) if not text.is_blank(s)]
  try:
    future = server.batcher.submit([searcher.encode(sentences[i])[0] for i in todo], beam)
  except batching.QueueFull as e:
    raise ApiError(429, str(e)) from None
  except batching.Closed as e:
    raise ApiError(503, str(e)) from None
  try:
    found = await asyncio.wrap_future(future)
  except Exception as e:  # noqa: BLE001 (the batch failed: 500 for its requests only)
    raise ApiError(500, f'translation failed: {type(e).__name__}: {e}') from None
  hyps: list[list[runtime.Hypothesis]] = [[] for _ in sentences]
  for i, h in zip(todo, found, strict=True):
    hyps[i] = h
  server.metrics.sentences.inc(len(sentences))

  def shaped(values: list) -> Any:
    return values[0] if single else values

  body: dict[str, Any] = {'translatedText': shaped([h[0].text if h else '' for h in hyps])}
  if req.alternatives:
    body['alternatives'] = shaped([[x.text for x in h[1 : 1 + req.alternatives]] for h in hyps])
  if req.source == 'auto':
    body['detectedLanguage'] = shaped(
      [{'language': searcher.source_lang, 'confidence': 100} for _ in sentences]
    )
  if req.scores:
    n = 1 + req.alternatives
    body['scores'] = shaped([[_score(x.score) for x in h[:n]] for h in hyps])
  if req.attention:
    body['attention'] = shaped(await _attention(searcher, sentences, beam))
  return JSONResponse(body)


def _score(score: float) -> float | None:
  return None if math.isnan(score) else round(score, 6)


async def _attention(
  searcher: runtime.Searcher, sentences: list[str], beam: bool
) -> list[dict | None]:
  """`searcher.attention(sentence, beam)` of each sentence (None for a blank one): the
  weights of the translation answered (beam search's best when `beam`), computed off the
  event loop."""

  def one(sentence: str) -> dict | None:
    return None if text.is_blank(sentence) else searcher.attention(sentence, beam)

  return list(await asyncio.gather(*(run_in_threadpool(one, s) for s in sentences)))
