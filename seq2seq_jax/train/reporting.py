"""What a run shows: a progress bar, log lines, `metrics.jsonl`, TensorBoard events
(tensorboardX, no TensorFlow) and PNG plots in `plots/`, refreshed at each evaluation.

Step metrics stay on the device until a log interval ends, so logging adds no host
round trip to each step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging


def _not_a_backend_probe(record) -> bool:  # noqa: ANN001 (a logging.LogRecord)
  warning = record.levelno >= 30  # the standard library's logging.WARNING
  return warning or not str(record.msg).startswith('Unable to initialize backend')


def quiet_backend_probe() -> None:
  """Drops JAX's INFO line for each accelerator it looks for and does not find (`Unable to
  initialize backend 'tpu': ... libtpu.so ...` on every machine without a TPU). A platform
  that JAX_PLATFORMS asks for and that fails is still an error, and JAX still finds the
  GPUs and TPUs that are there: only that log line goes."""
  import logging as py_logging

  py_logging.getLogger('jax._src.xla_bridge').addFilter(_not_a_backend_probe)


def quiet_library_logs() -> None:
  """Keeps Orbax's per-save INFO chatter and JAX's backend probe out of the training log
  (warnings still show)."""
  import logging as py_logging

  quiet_backend_probe()

  class _Filter(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
      return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname

  logging.get_absl_handler().addFilter(_Filter())


def quiet_cli_logs() -> None:
  """For the command-line tools: only warnings and errors on stderr, and none of Orbax's
  read-only-mode notices."""
  import logging as py_logging

  quiet_backend_probe()

  class _Filter(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
      return record.levelno >= py_logging.ERROR or '/orbax/' not in record.pathname

  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_Filter())


class Reporter:
  """Aggregates step metrics over log intervals and writes them out (process 0 only)."""

  def __init__(
    self, workdir: Path, *, enabled: bool = True, total_steps: int = 0, initial_step: int = 0
  ):
    self.workdir, self.enabled = Path(workdir), enabled
    self.pending: list[tuple[int, Any]] = []
    self.history: list[dict] = []
    self._t = time.monotonic()
    self._bar = None
    self._tb = None
    if not enabled:
      return
    self.metrics_path = self.workdir / 'metrics.jsonl'
    if self.metrics_path.exists():  # a resumed run: keep the lines of the steps it keeps
      self.history = _read_jsonl(self.metrics_path, initial_step)
      self.metrics_path.write_text(''.join(json.dumps(r) + '\n' for r in self.history))
    try:
      from tqdm import tqdm

      self._bar = tqdm(
        total=total_steps,
        initial=initial_step,
        unit='step',
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        mininterval=1.0,
      )
    except ImportError:  # pragma: no cover
      self._bar = None
    try:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(self.workdir / 'tensorboard'))
    except ImportError:  # pragma: no cover
      self._tb = None

  def step_metrics(self, step: int, metrics: Any) -> None:
    self.pending.append((step, metrics))

  def flush(self, step: int, epoch: int = 0) -> tuple[int, float] | None:
    """Writes the interval's aggregate; returns (step, loss) of the first non-finite
    step loss in it, if any (nothing is written then)."""
    if not self.pending:
      return None
    fetched = jax.device_get([m for _, m in self.pending])
    steps = [s for s, _ in self.pending]
    self.pending = []
    sums = {k: 0.0 for k in ('loss', 'correct', 'tokens', 'grad_norm')}
    for s, m in zip(steps, fetched, strict=True):
      m = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
      loss = m['loss'] / max(m['tokens'], 1.0)
      if not math.isfinite(loss):
        return s, loss
      for k in sums:
        sums[k] += m[k]
    now = time.monotonic()
    elapsed, self._t = now - self._t, now
    tokens = max(sums['tokens'], 1.0)
    record = {
      'step': step,
      'epoch': epoch,
      'train_loss': sums['loss'] / tokens,
      'train_accuracy': sums['correct'] / tokens,
      'grad_norm': sums['grad_norm'] / len(steps),
      'tokens_per_s': sums['tokens'] / max(elapsed, 1e-9),
      'steps_per_s': len(steps) / max(elapsed, 1e-9),
    }
    self._write(record)
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(
        loss=f'{record["train_loss"]:.3f}', tok_s=f'{record["tokens_per_s"]:,.0f}'
      )
    if self.enabled:
      logging.info(
        'step %d (epoch %d): train loss %.4f, accuracy %.3f, %.0f tokens/s',
        step,
        epoch,
        record['train_loss'],
        record['train_accuracy'],
        record['tokens_per_s'],
      )
    return None

  def eval(self, step: int, record: dict[str, float], samples: list[dict]) -> None:
    self._write({'step': step, **record})
    if not self.enabled:
      return
    logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4f}' for k, v in record.items()))
    for s in samples:
      logging.info('  src: %s\n  ref: %s\n  hyp: %s', s['source'], s['reference'], s['hypothesis'])
    self.plot()

  def _write(self, record: dict) -> None:
    if not self.enabled:
      return
    self.history.append(record)
    with self.metrics_path.open('a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for k, v in record.items():
        if k not in ('step', 'epoch'):
          self._tb.add_scalar(k, v, record['step'])
      self._tb.flush()

  def plot(self) -> None:
    """Loss and validation BLEU against steps, as PNGs in `plots/`."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    out = self.workdir / 'plots'
    out.mkdir(exist_ok=True)

    def series(key: str) -> tuple[list, list]:
      points = [(r['step'], r[key]) for r in self.history if key in r]
      return [p[0] for p in points], [p[1] for p in points]

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (('train_loss', 'train'), ('val_loss', 'validation')):
      x, y = series(key)
      if x:
        ax.plot(x, y, marker='.' if key == 'val_loss' else None, label=label)
    ax.set(xlabel='step', ylabel='loss per target token', title='Loss')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / 'loss.png', dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (('val_bleu', 'BLEU'), ('val_chrf', 'chrF')):
      x, y = series(key)
      if x:
        ax.plot(x, y, marker='.', label=label)
    ax.set(xlabel='step', ylabel='score', title='Validation (greedy)')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / 'bleu.png', dpi=100)
    plt.close(fig)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()


def per_member(x: Any, size: int) -> np.ndarray:
  """A metric as `[size]` float64 from what a step returns: `[]` or `[devices]` for one
  model (size 1), `[members]` or `[devices, members]` for a population (every device
  holds the same psum-ed values)."""
  return np.asarray(x).reshape(-1, size)[0].astype(np.float64)


def _read_jsonl(path: Path, max_step: int) -> list[dict]:
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if record.get('step', 0) <= max_step:
      records.append(record)
  return records


class PopulationLog:
  """Writes interval aggregates to `metrics.jsonl` (all members, with `member`) and to
  each member's own `metrics.jsonl` and TensorBoard events; plots every member's curves.
  Only process 0 writes."""

  def __init__(
    self, workdir: Path, member_dirs: list[Path], *, enabled: bool, initial_step: int
  ) -> None:
    self.workdir, self.member_dirs, self.enabled = workdir, member_dirs, enabled
    self.size = len(member_dirs)
    self.pending: list[Any] = []
    self.history: list[dict] = []
    self.diverged: dict[int, int] = {}  # member -> first step with a non-finite loss
    self._t = time.monotonic()
    self._tb: list[Any] = []
    if not enabled:
      return
    for path in [workdir / 'metrics.jsonl'] + [d / 'metrics.jsonl' for d in member_dirs]:
      kept = _read_jsonl(path, initial_step)  # a resumed run keeps the steps it keeps
      path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
      if path.parent == workdir:
        self.history = kept
    try:
      from tensorboardX import SummaryWriter

      self._tb = [SummaryWriter(str(d / 'tensorboard')) for d in member_dirs]
    except ImportError:  # pragma: no cover
      self._tb = []

  def step_metrics(self, metrics: Any) -> None:
    self.pending.append(metrics)

  def flush(self, step: int, epoch: int) -> list[float]:
    """Writes the interval's aggregate per member; returns each member's train loss."""
    if not self.pending:
      return []
    fetched = jax.device_get(self.pending)
    count = len(fetched)
    self.pending = []
    sums = {k: np.zeros(self.size) for k in ('loss', 'correct', 'tokens', 'grad_norm')}
    for m in fetched:
      m = {k: per_member(v, self.size) for k, v in m.items()}
      for i in np.flatnonzero(~np.isfinite(m['loss'] / np.maximum(m['tokens'], 1.0))):
        if int(i) not in self.diverged:
          self.diverged[int(i)] = step
          logging.warning('member %d: the training loss became non-finite by step %d', i, step)
      for k in sums:
        sums[k] += m[k]
    now = time.monotonic()
    elapsed, self._t = max(now - self._t, 1e-9), now
    tokens = np.maximum(sums['tokens'], 1.0)
    losses = []
    for i in range(self.size):
      record = {
        'step': step,
        'epoch': epoch,
        'train_loss': float(sums['loss'][i] / tokens[i]),
        'train_accuracy': float(sums['correct'][i] / tokens[i]),
        'grad_norm': float(sums['grad_norm'][i] / count),
        'tokens_per_s': float(sums['tokens'][i] / elapsed),
        'steps_per_s': count / elapsed,
      }
      losses.append(record['train_loss'])
      if i not in self.diverged:
        self._write(i, record)
    if self.enabled:
      logging.info(
        'step %d (epoch %d): train loss by member %s; %.0f tokens/s (all members)',
        step,
        epoch,
        ' '.join(f'{x:.4f}' for x in losses),
        float(np.sum(sums['tokens'])) / elapsed,
      )
    return losses

  def eval(self, step: int, member: int, record: dict[str, float]) -> None:
    self._write(member, {'step': step, **record})

  def _write(self, member: int, record: dict) -> None:
    if not self.enabled:
      return
    tagged = {'step': record['step'], 'member': member, **record}
    self.history.append(tagged)
    with (self.workdir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps(tagged) + '\n')
    with (self.member_dirs[member] / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb:
      for k, v in record.items():
        if k not in ('step', 'epoch'):
          self._tb[member].add_scalar(k, v, record['step'])

  def plot(self, labels: list[str]) -> None:
    """Every member's training loss and validation BLEU against steps."""
    if not self.enabled:
      return
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    out = self.workdir / 'plots'
    out.mkdir(exist_ok=True)
    for key, name, ylabel in (
      ('train_loss', 'loss.png', 'training loss per target token'),
      ('val_bleu', 'bleu.png', 'validation BLEU (greedy)'),
    ):
      fig, ax = plt.subplots(figsize=(7, 4.5))
      for i, label in enumerate(labels):
        points = [(r['step'], r[key]) for r in self.history if r['member'] == i and key in r]
        if points:
          ax.plot(
            *zip(*points, strict=True), marker='.' if key == 'val_bleu' else None, label=label
          )
      ax.set(xlabel='step', ylabel=ylabel, title=f'Population of {self.size}')
      ax.legend(fontsize='small')
      ax.grid(alpha=0.3)
      fig.tight_layout()
      fig.savefig(out / name, dpi=100)
      plt.close(fig)

  def close(self) -> None:
    for writer in self._tb:
      writer.close()
