"""What a run shows, one model or a population of N alike: a progress bar, log lines,
`metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow) and PNG plots in
`plots/`, refreshed at each evaluation.

One `Reporter` serves both: a single run is a population of one whose member directory is
its workdir. Each member's directory gets its own `metrics.jsonl` (one JSON object per
line: `step`, `epoch`, `train_loss`, ... for a log interval; `step`, `val_loss`,
`val_bleu`, ... for an evaluation) and `tensorboard/`; a population's workdir also gets
every member's lines in one `metrics.jsonl`, each with its `member`. A new training
metric is one entry in `interval_record` (from the sums of what the step returns; an
evaluation metric: one in the record `runs.Run.evaluate` makes); the files, TensorBoard
and the plots' history take every key from there, for single runs and populations.

Step metrics stay on the device until a log interval ends, so logging adds no host
round trip to each step.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tensorboardX
import tqdm
from absl import logging

from seq2seq_jax.errors import TrainingError

METRICS = 'metrics.jsonl'
# The plots: file, title, y label and the curves (metric, its label in a single run's
# plot). A population's plot draws the first metric only, one curve per member.
PLOTS = (
  (
    'loss.png',
    'Loss',
    'loss per target token',
    (('train_loss', 'train'), ('val_loss', 'validation')),
  ),
  ('bleu.png', 'Validation (greedy)', 'score', (('val_bleu', 'BLEU'), ('val_chrf', 'chrF'))),
)


def per_member(x: Any, size: int) -> np.ndarray:
  """A metric as `[size]` float64 from what a step returns: `[]` or `[devices]` for one
  model (size 1), `[members]` or `[devices, members]` for a population (every device
  holds the same psum-ed values)."""
  return np.asarray(x).reshape(-1, size)[0].astype(np.float64)


def interval_record(
  step: int, epoch: int, sums: dict[str, float], count: int, elapsed: float
) -> dict[str, Any]:
  """One member's `metrics.jsonl` line for a log interval of `count` steps from its
  step metrics summed over the interval (`loss`, `correct`, `tokens`, `grad_norm`) and
  the interval's wall seconds."""
  tokens = max(sums['tokens'], 1.0)
  return {
    'step': step,
    'epoch': epoch,
    'train_loss': float(sums['loss'] / tokens),
    'train_accuracy': float(sums['correct'] / tokens),
    'grad_norm': float(sums['grad_norm'] / count),
    'tokens_per_s': float(sums['tokens'] / elapsed),
    'steps_per_s': count / elapsed,
  }


class Reporter:
  """Aggregates step metrics over log intervals and writes them out (process 0 only).

  `member_dirs`: a population's member directories (None: a single run, written to
  `workdir`); `labels`: the members' names in the plots. A resumed run keeps the lines of
  the steps up to `initial_step`."""

  def __init__(
    self,
    workdir: Path,
    member_dirs: Sequence[Path] | None = None,
    *,
    enabled: bool = True,
    total_steps: int = 0,
    initial_step: int = 0,
    labels: Sequence[str] = (),
  ) -> None:
    self.workdir, self.enabled = Path(workdir), enabled
    self.population = member_dirs is not None
    self.member_dirs = [Path(d) for d in member_dirs] if self.population else [self.workdir]
    self.size = len(self.member_dirs)
    self.labels = list(labels) or [str(i) for i in range(self.size)]
    self.pending: list[tuple[int, Any]] = []
    self.history: list[dict] = []  # every line written, with its `member` (0: a single run)
    self.diverged: dict[int, tuple[int, float]] = {}  # member -> first non-finite (step, loss)
    self._t = time.monotonic()
    self._bar: Any = None
    self._tb: list[tensorboardX.SummaryWriter] = []
    if not enabled:
      return
    self._keep_lines(initial_step)
    self._bar = tqdm.tqdm(
      total=total_steps,
      initial=initial_step,
      unit='step',
      dynamic_ncols=True,
      file=sys.stderr,
      disable=not sys.stderr.isatty(),
      mininterval=1.0,
    )
    self._tb = [tensorboardX.SummaryWriter(str(d / 'tensorboard')) for d in self.member_dirs]

  def _keep_lines(self, initial_step: int) -> None:
    """Drops the lines after `initial_step` (a resumed run writes them again)."""
    for path in [d / METRICS for d in self.member_dirs]:
      path.write_text(''.join(json.dumps(r) + '\n' for r in _read_jsonl(path, initial_step)))
    if self.population:
      kept = _read_jsonl(self.workdir / METRICS, initial_step)
      (self.workdir / METRICS).write_text(''.join(json.dumps(r) + '\n' for r in kept))
      self.history = kept
    else:
      self.history = [{**r, 'member': 0} for r in _read_jsonl(self.workdir / METRICS, initial_step)]

  def step_metrics(self, step: int, metrics: Any) -> None:
    """The metrics of the step that made `step` (left on the device until `flush`)."""
    self.pending.append((step, metrics))

  def flush(self, step: int, epoch: int = 0) -> tuple[int, float] | None:
    """Writes the interval's aggregate per member; a member whose step loss became
    non-finite is reported once (in `diverged`) and writes no more training lines.
    Returns (step, loss) of the first such step loss in the interval, if any."""
    if not self.pending:
      return None
    fetched = jax.device_get([m for _, m in self.pending])
    steps = [s for s, _ in self.pending]
    self.pending = []
    sums = {k: np.zeros(self.size) for k in fetched[0]}  # every metric a step returns
    first_bad = None
    for s, m in zip(steps, fetched, strict=True):
      m = {k: per_member(v, self.size) for k, v in m.items()}
      losses = m['loss'] / np.maximum(m['tokens'], 1.0)
      for i in map(int, np.flatnonzero(~np.isfinite(losses))):
        if i not in self.diverged:
          self.diverged[i] = (s, float(losses[i]))
          first_bad = first_bad or self.diverged[i]
          if self.population:
            logging.warning('member %d: the training loss became non-finite at step %d', i, s)
      for k in sums:
        sums[k] += m[k]
    now = time.monotonic()
    elapsed, self._t = max(now - self._t, 1e-9), now
    records = [
      interval_record(step, epoch, {k: v[i] for k, v in sums.items()}, len(steps), elapsed)
      for i in range(self.size)
    ]
    for i, record in enumerate(records):
      if i not in self.diverged:
        self._write(i, record)
    self._show(records, float(np.sum(sums['tokens'])) / elapsed)
    return first_bad

  def _show(self, records: list[dict], tokens_per_s: float) -> None:
    """The progress bar and the log line of an interval."""
    step, epoch = records[0]['step'], records[0]['epoch']
    losses = [r['train_loss'] for r in records]
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(loss=f'{min(losses):.3f}', tok_s=f'{tokens_per_s:,.0f}')
    if not self.enabled:
      return
    if self.population:
      logging.info(
        'step %d (epoch %d): train loss by member %s; %.0f tokens/s (all members)',
        step,
        epoch,
        ' '.join(f'{x:.4f}' for x in losses),
        tokens_per_s,
      )
      return
    logging.info(
      'step %d (epoch %d): train loss %.4f, accuracy %.3f, %.0f tokens/s',
      step,
      epoch,
      losses[0],
      records[0]['train_accuracy'],
      tokens_per_s,
    )

  def check_alive(self) -> None:
    """Training goes on while one member's loss is finite; a TrainingError when none is."""
    if len(self.diverged) < self.size:
      return
    if not self.population:
      step, loss = self.diverged[0]
      raise TrainingError(
        f'the training loss became {loss} at step {step}; '
        'lower train.learning_rate or check the data'
      )
    first = min(step for step, _ in self.diverged.values())
    raise TrainingError(
      f'the training loss of every member became non-finite (the first at step {first}); '
      'lower the learning rates or check the data'
    )

  def eval(self, step: int, records: list[dict[str, float]], samples: list[dict] = ()) -> None:
    """Each member's validation record at `step` (and sample translations, logged):
    written, logged, plotted."""
    for i, record in enumerate(records):
      self._write(i, {'step': step, **record})
    if not self.enabled:
      return
    if self.population:
      scores = ' '.join(f'{r["val_bleu"]:.2f}' for r in records)
      logging.info('step %d: validation BLEU by member %s', step, scores)
    else:
      logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4f}' for k, v in records[0].items()))
    for s in samples:
      logging.info('  src: %s\n  ref: %s\n  hyp: %s', s['source'], s['reference'], s['hypothesis'])
    self.plot()

  def _write(self, member: int, record: dict) -> None:
    if not self.enabled:
      return
    tagged = {'step': record['step'], 'member': member, **record}
    self.history.append(tagged)
    _append(self.member_dirs[member] / METRICS, record)
    if self.population:
      _append(self.workdir / METRICS, tagged)
    writer = self._tb[member]
    for k, v in record.items():
      if k not in ('step', 'epoch'):
        writer.add_scalar(k, v, record['step'])
    writer.flush()

  def plot(self) -> None:
    """`PLOTS` against steps, as PNGs in `plots/`: a single run's curves, or each
    member's curve of the first metric of each plot."""
    if not self.enabled:
      return
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    out = self.workdir / 'plots'
    out.mkdir(exist_ok=True)
    for name, title, ylabel, metrics in PLOTS:
      fig, ax = plt.subplots(figsize=(7, 4.5))
      for key, label, member in self._curves(metrics):
        points = [(r['step'], r[key]) for r in self.history if r['member'] == member and key in r]
        if points:
          marker = None if key.startswith('train_') else '.'
          ax.plot(*zip(*points, strict=True), marker=marker, label=label)
      if self.population:
        title = f'{title}: population of {self.size}'
      ax.set(xlabel='step', ylabel=ylabel, title=title)
      ax.legend(fontsize='small')
      ax.grid(alpha=0.3)
      fig.tight_layout()
      fig.savefig(out / name, dpi=100)
      plt.close(fig)

  def _curves(self, metrics: tuple[tuple[str, str], ...]) -> list[tuple[str, str, int]]:
    """(metric, label, member) of each curve of a plot."""
    if not self.population:
      return [(key, label, 0) for key, label in metrics]
    return [(metrics[0][0], label, i) for i, label in enumerate(self.labels)]

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    for writer in self._tb:
      writer.close()


def _append(path: Path, record: dict) -> None:
  with path.open('a') as f:
    f.write(json.dumps(record) + '\n')


def _read_jsonl(path: Path, max_step: int) -> list[dict]:
  """The records of a `metrics.jsonl` up to `max_step` (none when there is no file; a
  line cut short by a kill is left out)."""
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
