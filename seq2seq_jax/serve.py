"""Serve a model over HTTP with LibreTranslate's API (`seq2seq_jax.serving.app`).

  python -m seq2seq_jax.serve (--model=MODEL_DIR | --workdir=DIR [--ensemble=DIR2,...]
      [--checkpoint=auto]) [--host=127.0.0.1] [--port=5000] [--max_batch=64]
      [--max_wait_ms=0] [--linger_ms=15] [--beam_size=1] [--max_chars=N] [--max_sentences=N]
      [--max_body_bytes=N] [--max_queue=N] [--api_keys=FILE] [--compilation_cache_dir=DIR]

`--model` serves a folder written by `seq2seq_jax.export` and needs only JAX, NumPy and
SentencePiece; `--workdir` serves a trained workdir (the training stack compiles its
searches here). The socket is up at once (`GET /health`); the searches compile for every
batch shape in the background, and `GET /ready` answers 200 when they are done (with the
persistent compilation cache, a second start reads them back in seconds). Requests from
many clients are decoded together, up to `--max_batch` sentences or `--max_wait_ms` after
the first one waiting (and, right after a batch, up to `--linger_ms` for its clients to come
back). `--beam_size=1` decodes greedily; K > 1 with the model's beam
search (a request asking for `alternatives` gets beam search either way). SIGTERM (or
Ctrl-C) stops accepting, answers what was accepted and exits 0. It listens on 127.0.0.1
unless `--host` says otherwise; with `--api_keys=FILE` (one key a line) a listed `api_key`
is required.

  curl -s localhost:5000/translate -H 'Content-Type: application/json' \\
      -d '{"q": "I am home.", "source": "en", "target": "fr"}'
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from absl import flags

from seq2seq_jax import cli, compile_cache, errors, runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'A model folder written by seq2seq_jax.export.')
flags.DEFINE_string('workdir', None, 'Or a workdir written by train.py.')
flags.DEFINE_list('ensemble', [], 'With --workdir: more workdirs, decoded as an ensemble.')
flags.DEFINE_string(
  'checkpoint', 'auto', "With --workdir: 'auto', 'best', 'latest', 'averaged' or a step."
)
flags.DEFINE_string('host', '127.0.0.1', 'The address to listen on (0.0.0.0: every interface).')
flags.DEFINE_integer('port', 5000, 'The port to listen on.', lower_bound=0, upper_bound=65535)
flags.DEFINE_integer('max_batch', 64, 'The most sentences decoded in one call.', lower_bound=1)
flags.DEFINE_float(
  'max_wait_ms',
  0.0,
  'How long the first sentence waiting waits for others (0: a free decoder takes what is '
  'waiting at once; sentences that arrive meanwhile form the next batch).',
  lower_bound=0,
)
flags.DEFINE_float(
  'linger_ms',
  15.0,
  'Right after a batch, how long a free decoder waits for the clients it answered to send '
  'their next sentences (as many as waited then plus that batch), so that many clients '
  'fill whole batches instead of alternating halves (0: never).',
  lower_bound=0,
)
flags.DEFINE_integer(
  'beam_size',
  1,
  "1: greedy decoding; K > 1: the model's beam search (with --workdir, of beam K; an "
  'exported model has its own).',
  lower_bound=1,
)
flags.DEFINE_float('alpha', 0.75, 'With --workdir: beam search length normalisation.')
flags.DEFINE_integer('max_chars', 5000, 'The most characters in a sentence.', lower_bound=1)
flags.DEFINE_integer('max_sentences', 128, 'The most sentences in a request.', lower_bound=1)
flags.DEFINE_integer('max_body_bytes', 1 << 20, 'The largest request body.', lower_bound=1)
flags.DEFINE_integer('max_queue', 1024, 'The most sentences waiting (then 429).', lower_bound=1)
flags.DEFINE_string('api_keys', None, 'A file of API keys, one a line: then one is required.')

DEFAULT_BEAM = 4  # the n-best list a workdir's beam search keeps when --beam_size=1


def read_api_keys(path: str) -> frozenset[str]:
  """The keys in `path`, one a line (blank lines and '#' comments skipped)."""
  file = Path(path)
  if not file.is_file():
    raise errors.MissingFileError(f'--api_keys: {path} is not a file')
  lines = file.read_text(encoding='utf-8').splitlines()
  keys = frozenset(k.strip() for k in lines if k.strip() and not k.strip().startswith('#'))
  if not keys:
    raise errors.ConfigError(f'--api_keys: {path} holds no key (one a line)')
  return keys


def load_searcher(f: Any) -> runtime.Searcher:
  """The `Searcher` of `--model` (exported: without the training stack) or `--workdir`."""
  if bool(f.model) == bool(f.workdir):
    raise errors.ConfigError('give one of --model=MODEL_DIR and --workdir=DIR')
  if f.model:
    if f.ensemble or f.checkpoint != 'auto':
      raise errors.ConfigError('--ensemble and --checkpoint go with --workdir, not --model')
    from seq2seq_jax import exported

    searcher = exported.load(f.model, max_batch=f.max_batch)
    if f.beam_size > 1 and f.beam_size != searcher.beam_size:
      raise errors.ConfigError(
        f'the model in {f.model} was exported with beam size {searcher.beam_size}: '
        f'--beam_size must be 1 (greedy) or {searcher.beam_size}'
      )
    return searcher
  beam = f.beam_size if f.beam_size > 1 else DEFAULT_BEAM
  return runtime.from_workdir(
    [f.workdir, *f.ensemble], f.checkpoint, beam_size=beam, alpha=f.alpha, max_batch=f.max_batch
  )


def settings_from_flags(f: Any) -> Any:
  from seq2seq_jax.serving import app

  if f.max_sentences > f.max_queue:
    raise errors.ConfigError(
      f'--max_sentences={f.max_sentences} is over --max_queue={f.max_queue}: such a request '
      'would never fit in the queue'
    )
  return app.Settings(
    max_wait_ms=f.max_wait_ms,
    linger_ms=f.linger_ms,
    beam=f.beam_size > 1,
    max_chars=f.max_chars,
    max_sentences=f.max_sentences,
    max_body_bytes=f.max_body_bytes,
    max_queue=f.max_queue,
    api_keys=read_api_keys(f.api_keys) if f.api_keys else None,
  )


def _log_to_stderr() -> None:
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('serve: %(message)s'))
  logger = logging.getLogger('seq2seq_jax.serving')
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    print(f'serve: unexpected arguments {" ".join(argv[1:])} (see --help)', file=sys.stderr)
    sys.exit(1)
  cli.quiet_cli_logs()
  _log_to_stderr()
  with errors.one_line_errors('serve'):
    compile_cache.enable()
    settings = settings_from_flags(FLAGS)
    searcher = load_searcher(FLAGS)
  import uvicorn

  from seq2seq_jax.serving import app

  application = app.create_app(searcher, settings)

  class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: Any) -> None:
      # Requests in flight are answered at once, without waiting for batches to fill
      # (from a thread: a signal handler must not wait for the batcher's lock).
      threading.Thread(target=application.state.server.batcher.drain).start()
      super().handle_exit(sig, frame)

  server = Server(
    uvicorn.Config(
      application,
      host=FLAGS.host,
      port=FLAGS.port,
      log_level='warning',
      access_log=False,
      lifespan='on',
    )
  )
  print(
    f'serve: {searcher.source_lang} -> {searcher.target_lang} on http://{FLAGS.host}:'
    f'{FLAGS.port} (compiling every batch shape in the background; GET /ready says when '
    'it is done)',
    file=sys.stderr,
    flush=True,
  )
  # uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal again for
  # the handler found before it: make that one harmless, so the exit status stays 0.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: None)
  server.run()
  if not server.started:
    sys.exit(1)  # the socket could not be bound (uvicorn said why)
  print('serve: stopped', file=sys.stderr, flush=True)


if __name__ == '__main__':
  cli.run(main, flag_modules=[compile_cache])
