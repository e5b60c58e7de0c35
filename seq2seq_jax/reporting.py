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


def quiet_library_logs() -> None:
  """Keeps Orbax's per-save INFO chatter out of the training log (warnings still show)."""
  import logging as py_logging

  class _Filter(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
      return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname

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
      for line in self.metrics_path.read_text().splitlines():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        if record.get('step', 0) <= initial_step:
          self.history.append(record)
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
