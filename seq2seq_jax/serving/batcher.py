"""Batching across requests: the sentences of many concurrent requests decoded together.

Each request (its sentences' source ids and a mode, greedy or beam) is split into items,
one a sentence, that wait in one bounded queue, grouped by mode and by the Searcher's
length bucket (the source width a batch is padded to). A single worker thread takes the
oldest waiting item and waits until `max_batch` sentences of its mode are waiting or
`max_wait_ms` passed since that item arrived, and, right after it answered a batch, until
the clients it answered are back (as many sentences waiting as waited then plus that
batch's) or `linger_ms` passed since; then it fills a batch of up to `max_batch`
sentences, first from the oldest item's length bucket (one bucket: the least padding),
then from the other buckets of the same mode (narrower first), decodes it with one
`searcher.search` call, and hands each item's hypotheses to its request. A request's
future resolves, with its lines in order, when its last item is decoded.

Why one thread: the compiled search already uses every core for one batch; two batches at
once would only compete for them, and one decoding thread keeps the batch shapes (and so
the compiled programs) the few that `Searcher.compile` prepared.

Why linger: with many clients that each send their next request when answered, a decoder
that takes whatever waits settles into two alternating half batches (64 clients: batches
of about 32), because the clients of one batch come back while the other decodes. Waiting
briefly for them joins the halves into full batches (docs/serving.md: 64 clients, about
720 -> 1,000 requests/s). One client loses nothing: the one sentence it answered is back
as soon as it arrives.

Guarantees: the queue holds at most `max_queue` sentences, and `submit` raises `QueueFull`
at once when a request does not fit (never a wait); an exception in `search` fails the
requests of that batch only, and the worker goes on; `close` stops accepting, decodes
everything already accepted, then stops the thread, so no accepted request goes unanswered
(`drain`, before it, stops waiting for batches to fill: a server shutting down answers the
requests in flight at once).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

from seq2seq_jax import runtime

log = logging.getLogger(__name__)


class QueueFull(Exception):
  """The queue cannot take a request's sentences now (the server answers 429)."""

  def __init__(self, waiting: int, asked: int, limit: int) -> None:
    super().__init__(
      f'the queue is full ({waiting} sentences waiting, {asked} more asked, the limit is '
      f'{limit}: max_queue); try again shortly'
    )
    self.limit = limit


class Closed(Exception):
  """The batcher is shutting down and takes no more requests (the server answers 503)."""


@dataclasses.dataclass(eq=False)
class _Request:
  future: futures.Future
  results: list[Any]
  remaining: int


@dataclasses.dataclass(eq=False)
class _Item:
  request: _Request
  index: int
  ids: list[int]
  arrival: float


@dataclasses.dataclass
class Stats:
  """Counters for the metrics: batches decoded, sentences decoded, batches that failed, and
  the size of the largest batch."""

  batches: int = 0
  sentences: int = 0
  failed_batches: int = 0
  largest_batch: int = 0


class Batcher:
  """Gathers sentences from concurrent requests into batches for `searcher.search` (a
  `runtime.Searcher`); see the module docstring. `on_batch(size, seconds)` is called after
  each batch (for a histogram). `start()` starts the worker thread, `close()` ends it."""

  def __init__(
    self,
    searcher: runtime.Searcher,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    max_batch: int | None = None,
    on_batch: Callable[[int, float], None] | None = None,
    linger_ms: float = 0.0,
  ) -> None:
    self.searcher = searcher
    self.max_batch = min(max_batch or searcher.max_batch, searcher.max_batch)
    self.max_wait = max(0.0, max_wait_ms) / 1000
    self.linger = max(0.0, linger_ms) / 1000
    self.max_queue = max_queue
    self.on_batch = on_batch
    self.stats = Stats()
    self._groups: dict[tuple[bool, int], collections.deque[_Item]] = collections.defaultdict(
      collections.deque
    )
    self._waiting = {False: 0, True: 0}  # sentences waiting, by mode
    self._cond = threading.Condition()
    self._closed = False
    self._draining = False
    # Right after a batch: when the decoder became free, and the mode and count of the
    # sentences it lingers for (what waited then, and the clients it just answered).
    self._free_at = 0.0
    self._expected: tuple[bool, int] = (False, 0)
    self._thread = threading.Thread(target=self._run, name='batcher', daemon=True)

  @property
  def queue_length(self) -> int:
    """Sentences waiting to be decoded (not counting the batch being decoded)."""
    return self._waiting[False] + self._waiting[True]

  @property
  def closed(self) -> bool:
    return self._closed

  def start(self) -> None:
    self._thread.start()

  def submit(self, src_ids: Sequence[list[int]], beam: bool = False) -> futures.Future:
    """Queues a request's sentences (source ids from `Searcher.encode`, none blank);
    returns a future of their hypotheses (`Searcher.search`'s, one list a sentence, in
    order). Raises `QueueFull` when they do not fit in the queue, `Closed` after `close`."""
    future: futures.Future = futures.Future()
    if not src_ids:
      future.set_result([])
      return future
    request = _Request(future, [None] * len(src_ids), len(src_ids))
    now = time.monotonic()
    with self._cond:
      if self._closed:
        raise Closed('the server is shutting down')
      if self.queue_length + len(src_ids) > self.max_queue:
        raise QueueFull(self.queue_length, len(src_ids), self.max_queue)
      for i, ids in enumerate(src_ids):
        width = runtime.bucket(len(ids), self.searcher.length_buckets)
        self._groups[beam, width].append(_Item(request, i, list(ids), now))
      self._waiting[beam] += len(src_ids)
      self._cond.notify()
    return future

  def drain(self) -> None:
    """From now on decodes what waits without waiting `max_wait_ms` for more (a server
    that is shutting down answers its last requests at once); still accepts requests."""
    with self._cond:
      self._draining = True
      self._cond.notify_all()

  def close(self, timeout: float | None = None) -> None:
    """Stops accepting, decodes what was accepted, and waits (up to `timeout` seconds)
    for the worker to end."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    if self._thread.is_alive():
      self._thread.join(timeout)

  # -- the worker ------------------------------------------------------------------------

  def _run(self) -> None:
    while True:
      with self._cond:
        batch, beam = self._next_batch()
      if batch is None:
        return
      if batch:
        self._decode(batch, beam)
        with self._cond:
          self._free_at = time.monotonic()
          self._expected = (beam, self._waiting[beam] + len(batch))

  def _oldest(self) -> tuple[bool, _Item | None]:
    """The mode and the item that waited longest (None when none waits)."""
    heads = [(g[0].arrival, beam, g[0]) for (beam, _), g in self._groups.items() if g]
    if not heads:
      return False, None
    _, beam, item = min(heads, key=lambda h: h[0])
    return beam, item

  def _next_batch(self) -> tuple[list[_Item] | None, bool]:
    """Waits (holding the condition) until a batch is due; (None, _) once closed and empty."""
    while True:
      beam, head = self._oldest()
      if head is None:
        if self._closed:
          return None, False
        self._cond.wait()
        continue
      now = time.monotonic()
      waiting = self._waiting[beam]
      if self._closed or self._draining or waiting >= self.max_batch:
        return self._take(head, beam), beam
      wait = head.arrival + self.max_wait - now
      if wait <= 0:
        wait = self._free_at + self.linger - now
        mode, expected = self._expected
        if wait <= 0 or mode != beam or waiting >= expected:
          return self._take(head, beam), beam
      self._cond.wait(wait)

  def _take(self, head: _Item, beam: bool) -> list[_Item]:
    """Up to `max_batch` items of mode `beam`: the head's length bucket first, then the
    narrower buckets (widest first: no extra padding), then the wider ones."""
    width = runtime.bucket(len(head.ids), self.searcher.length_buckets)
    others = [w for b, w in self._groups if b == beam and w != width]
    others.sort(key=lambda w: (w > width, w if w > width else -w))
    batch: list[_Item] = []
    for w in [width, *others]:
      group = self._groups[beam, w]
      while group and len(batch) < self.max_batch:
        item = group.popleft()
        self._waiting[beam] -= 1
        if not item.request.future.done():  # skip requests that failed or were cancelled
          batch.append(item)
    return batch

  def _decode(self, batch: list[_Item], beam: bool) -> None:
    start = time.monotonic()
    try:
      hyps = self.searcher.search([item.ids for item in batch], beam)
      if len(hyps) != len(batch):
        raise RuntimeError(f'search answered {len(hyps)} of {len(batch)} sentences')
    except Exception as e:  # noqa: BLE001 (fails this batch's requests, not the worker)
      log.exception('decoding a batch of %d sentences failed', len(batch))
      self.stats.failed_batches += 1
      for request in {id(item.request): item.request for item in batch}.values():
        _settle(request.future, exception=e)
    else:
      for item, h in zip(batch, hyps, strict=True):
        request = item.request
        request.results[item.index] = h
        request.remaining -= 1
        if request.remaining == 0:
          _settle(request.future, result=request.results)
    self.stats.batches += 1
    self.stats.sentences += len(batch)
    self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
    if self.on_batch is not None:
      try:
        self.on_batch(len(batch), time.monotonic() - start)
      except Exception:  # noqa: BLE001 (a metrics hook must not stop decoding)
        log.exception('the on_batch hook failed')


def _settle(
  future: futures.Future, result: Any = None, exception: BaseException | None = None
) -> None:
  """Sets a future's result or exception unless it is already done (cancelled by a client
  that went away, or failed by an earlier batch)."""
  try:
    if not future.done():
      if exception is not None:
        future.set_exception(exception)
      else:
        future.set_result(result)
  except futures.InvalidStateError:
    pass  # cancelled between the check and the set
