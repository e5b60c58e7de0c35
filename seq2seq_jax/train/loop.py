"""The training loop: one model or a population, the same cadence.

`train_and_evaluate(config, workdir)` is what `train.py` calls. It prepares the shared
pieces (`experiment.prepare`), builds the run (`single.SingleRun`, or a
`population_run.PopulationRun` when `population.size > 1`; both `runs.Run`s) and drives it:

  every step          run.train(step, batch)
  every log interval  run.flush(step)         metrics out; a non-finite loss stops
  every evaluation    run.evaluate(step)      val loss/BLEU; the best checkpoint
  every checkpoint    run.save(step)          latest checkpoint (exact resume)
  after each step     stop?                   a signal, the time budget (agreed by all
                                              processes) or train.patience evaluations
                                              without a better BLEU
  at the end          evaluate, save, close, average (`train.average_last`; not after a
                      signal), run.finish(...)   result.json, examples

A run resumes itself from its workdir when it is built. A run that fails before its
first step (bad data, a bad config) removes the workdir it created (`_undone_on_failure`);
a workdir that was there before is left as it was. A new training feature that changes
the cadence is written here once, for single runs and populations alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from seq2seq_jax import errors
from seq2seq_jax.train import experiment, multihost, population, population_run, runs, single


class StopSignal:
  """SIGTERM / Ctrl-C: finish the current step, save, exit. A second Ctrl-C aborts."""

  def __init__(self) -> None:
    self.received: str | None = None
    self.started = time.monotonic()  # the time budget counts from here
    self._old = {}

  def __enter__(self) -> StopSignal:
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    if self.received and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    logging.warning('%s received: finishing the current step, then saving', self.received)

  def reason(self, step: int, time_budget_s: float, agree_every: int) -> str | None:
    """Why to stop after `step` (a signal, the time budget), the same on every process."""
    reason = None
    if time_budget_s and time.monotonic() - self.started > time_budget_s:
      reason = f'time budget of {time_budget_s} s reached'
    if self.received:
      reason = f'{self.received} received'
    return multihost.agree_to_stop(reason, check=step % agree_every == 0)

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


class _SideTime:
  """Seconds spent evaluating and saving, apart from training steps."""

  def __init__(self) -> None:
    self.seconds = 0.0

  def __call__(self, fn: Any, *args: Any) -> Any:
    t0 = time.monotonic()
    try:
      return fn(*args)
    finally:
      self.seconds += time.monotonic() - t0


@contextlib.contextmanager
def _undone_on_failure(workdir: str) -> Iterator[None]:
  """Removes the workdir when the block fails and the workdir did not exist before it (with
  the folders above it that were made for it, when empty); one that existed is left as it
  was. What the block wrote there (tokenizers, config.json) is of no use without a run."""
  path = Path(workdir).absolute()
  made = [p for p in (path, *path.parents) if not p.exists()]  # the workdir, then upwards
  try:
    yield
  except BaseException:
    if made:
      shutil.rmtree(path, ignore_errors=True)
      for parent in made[1:]:
        try:
          os.rmdir(parent)
        except OSError:
          break  # not empty (or gone): someone else's now
    raise


def make_run(exp: experiment.Experiment) -> runs.Run:
  if population.size(exp.config) > 1:  # N models in one vmapped step
    return population_run.PopulationRun(exp)
  return single.SingleRun(exp)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` when it holds a checkpoint); returns final metrics.
  A failure before the first step leaves no workdir behind that this call created."""
  tcfg = config.train
  if tcfg.patience < 0:
    raise errors.ConfigError(f'train.patience must be 0 (off) or positive, got {tcfg.patience}')
  with _undone_on_failure(workdir):
    exp = experiment.prepare(config, workdir)
    run = make_run(exp)
  batcher, total_steps = exp.batcher, exp.total_steps
  eval_every = tcfg.eval_every_steps or batcher.batches_per_epoch
  ckpt_every = tcfg.checkpoint_every_steps or batcher.batches_per_epoch
  side = _SideTime()
  t_start, step, last_eval, last_eval_step = time.monotonic(), run.start_step, None, None
  # A resumed run may have stopped early already. Early stops are the same on every
  # process: process 0 decides which evaluation is the best.
  stop_reason = run.best.stop_reason(tcfg.patience)
  with StopSignal() as stop:
    batches = iter(batcher)
    while step < total_steps and not stop_reason:
      batch = next(batches)
      step += 1
      run.train(step, exp.devices.shard(batch))
      if step % tcfg.log_every_steps == 0 or step == total_steps:
        run.flush(step)
      if step % eval_every == 0 and step < total_steps:
        last_eval, last_eval_step = side(run.evaluate, step), step
      if step % ckpt_every == 0:
        side(run.save, step)
      stop_reason = run.best.stop_reason(tcfg.patience) or stop.reason(
        step, tcfg.time_budget_s, tcfg.log_every_steps
      )

    # Final evaluation and checkpoint (also after a signal, the time budget or patience).
    run.flush(step)
    if last_eval_step != step:
      last_eval = side(run.evaluate, step)
    side(run.save, step)
    run.close()
    if tcfg.average_last > 1 and not stop.received:
      side(run.average, tcfg.average_last)
  _log_end(step, stop_reason, run, time.monotonic() - t_start, side.seconds, tcfg.patience)
  result = run.finish({'step': step, 'stopped': stop_reason}, last_eval)
  sys.stdout.flush()
  return result


def _log_end(
  step: int, stop_reason: str | None, run: runs.Run, elapsed: float, side_s: float, patience: int
) -> None:
  """Why training stopped (if before the last step) and where the time went."""
  if stop_reason:
    resumable = run.best.stop_reason(patience) is None  # an early stop is final
    logging.warning(
      'stopped at step %d: %s; the checkpoint is saved%s',
      step,
      stop_reason,
      ', rerun the same command to resume' if resumable else '',
    )
  logging.info(
    'trained %d steps in %.1f s (%.1f s of training steps, compilation included; %.1f s '
    'evaluating and saving)',
    step - run.start_step,
    elapsed,
    elapsed - side_s,
    side_s,
  )
