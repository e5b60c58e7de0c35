"""The server's Prometheus metrics (`GET /metrics`), named `seq2seq_jax_*`: requests by
status, sentences, request latency, batch sizes and batch times, and gauges read when
scraped (queue length, compiled programs, readiness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import prometheus_client as prom

NAMESPACE = 'seq2seq_jax'  # the metrics' prefix
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
  """The metrics of one app, in its own registry (apps in one process stay apart); the
  gauges call `queue_length`, `compiles` and `ready` when scraped."""

  def __init__(
    self,
    queue_length: Callable[[], float],
    compiles: Callable[[], float],
    ready: Callable[[], float],
  ) -> None:
    self.registry = prom.CollectorRegistry()
    kw: dict[str, Any] = {'registry': self.registry, 'namespace': NAMESPACE}
    self.requests = prom.Counter(
      'translate_requests', 'POST /translate requests by status.', ['status'], **kw
    )
    self.sentences = prom.Counter('translate_sentences', 'Sentences translated.', **kw)
    self.latency = prom.Histogram(
      'translate_latency_seconds', 'POST /translate latency.', buckets=LATENCY_BUCKETS, **kw
    )
    self.batch_size = prom.Histogram(
      'batch_size', 'Sentences per decoded batch.', buckets=BATCH_SIZE_BUCKETS, **kw
    )
    self.batch_seconds = prom.Histogram(
      'batch_seconds', 'Time to decode a batch.', buckets=LATENCY_BUCKETS, **kw
    )
    for name, doc, read in (
      ('queue_length', 'Sentences waiting to be decoded.', queue_length),
      ('compiles', 'Search programs compiled so far.', compiles),
      ('ready', '1 once every batch shape is compiled.', ready),
    ):
      prom.Gauge(name, doc, **kw).set_function(read)

  def on_batch(self, size: int, seconds: float) -> None:
    """The batcher's hook: one decoded batch of `size` sentences in `seconds`."""
    self.batch_size.observe(size)
    self.batch_seconds.observe(seconds)

  def exposition(self) -> bytes:
    """The text Prometheus scrapes."""
    return prom.generate_latest(self.registry)
