"""What the loop drives: a run of `size` models trained together, 1 for a single run
(`single.SingleRun`) or N for a population (`population_run.PopulationRun`).

`Run` keeps the bookkeeping both share: every member's checkpoints (saved together, with
the same meta), one metrics log (`reporting.Reporter`), the evaluation (validation loss,
then greedy BLEU and chrF one member at a time) and one keep-the-best rule (`KeepBest`:
which evaluation is a member's best, which checkpoints go among its best, when to stop
early). A subclass builds the state, the compiled steps and resumes; it says how to take
member i out of its state (`member`) and what else a member's checkpoint records.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import jax
from absl import logging

from seq2seq_jax.train import averaging, checkpointing, evaluation, multihost, reporting
from seq2seq_jax.train.experiment import Experiment


@dataclasses.dataclass
class KeepBest:
  """Each member's best validation BLEU so far (and its step), and how many evaluations
  in a row improved no member's: what the checkpoints record and a resumed run reads."""

  bleu: list[float]
  step: list[int | None]
  evals_since_best: int = 0

  @classmethod
  def start(cls, size: int) -> KeepBest:
    return cls([-1.0] * size, [None] * size)

  @classmethod
  def from_meta(cls, metas: Sequence[dict]) -> KeepBest:
    """From each member's checkpoint meta (written by `meta`)."""
    return cls(
      [m.get('best_bleu', -1.0) for m in metas],
      [m.get('best_step') for m in metas],
      metas[0].get('evals_since_best', 0),
    )

  def meta(self, member: int) -> dict[str, Any]:
    return {
      'best_bleu': self.bleu[member],
      'best_step': self.step[member],
      'evals_since_best': self.evals_since_best,
    }

  def judge(
    self, step: int, bleus: Sequence[float], ckpts: Sequence[checkpointing.Checkpoints]
  ) -> list[float | None]:
    """Records each member's validation BLEU at `step`; returns, per member, the BLEU to
    save its checkpoint among its best with (a better BLEU than ever, or one among its
    best `train.keep_best`), or None. Process 0 decides, for every process."""
    to_best, improved = [], False
    for i, (bleu, ckpt) in enumerate(zip(bleus, ckpts, strict=True)):
      better = multihost.main_decides(bleu > self.bleu[i])
      if better:
        self.bleu[i], self.step[i] = bleu, step
      improved = improved or better
      ranks = multihost.main_decides(better or ckpt.ranks_among_best(bleu))
      to_best.append(bleu if ranks else None)
    self.evals_since_best = 0 if improved else self.evals_since_best + 1
    return to_best

  def stop_reason(self, patience: int) -> str | None:
    """Why to stop early (`train.patience` evaluations without a better BLEU), if so."""
    if patience and self.evals_since_best >= patience:
      return f'no better validation BLEU in {self.evals_since_best} evaluations (train.patience)'
    return None


class Run:
  """The shared part of a run; a subclass's `__init__` sets the attributes below."""

  exp: Experiment
  size: int  # members (1: a single run)
  state: Any  # the train state: stacked over members in a population, placed on devices
  ckpts: list[checkpointing.Checkpoints]  # one per member
  best: KeepBest
  log: reporting.Reporter
  train_fn: Any
  eval_fn: Any
  start_step: int

  def train(self, step: int, batch: Any) -> None:
    """One step on a (sharded) batch; `step` is the step it makes (the subclass's)."""
    raise NotImplementedError

  def member(self, tree: Any, index: int) -> Any:
    """Member `index` of a tree shaped like the state (a single run's is the tree)."""
    return tree

  def member_meta(self, index: int) -> dict[str, Any]:
    """What member `index`'s checkpoints record besides the shared meta."""
    return {}

  def flush(self, step: int) -> None:
    """Metrics out; an error when every member's training loss became non-finite."""
    self.log.flush(step, self.exp.batcher.epoch)
    self.log.check_alive()

  def save(self, step: int, bleus: Sequence[float | None] | None = None) -> None:
    """Saves every member at `step`; one with a validation BLEU in `bleus` among its best
    too."""
    # This process's first replica, as host arrays (no gather; the same files in every
    # mode: saving the global arrays would record the devices' topology in the
    # checkpoint, which then needs a target tree with shardings to be read back).
    host = jax.device_get(self.exp.devices.unreplicate(self.state))
    for i, ckpt in enumerate(self.ckpts):
      meta = {**self.exp.checkpoint_meta(), **self.best.meta(i), **self.member_meta(i)}
      bleu = bleus[i] if bleus else None
      ckpt.save(step, self.member(host, i), meta, best_bleu=bleu)

  def evaluate(self, step: int) -> list[dict[str, float]]:
    """Each member's validation loss and accuracy (one pass over the batches), greedy
    BLEU and chrF (one member at a time, as a single run computes them); a member's BLEU
    among its best saves a best checkpoint."""
    exp, ecfg = self.exp, self.exp.config.eval
    records = evaluation.evaluate_loss(
      self.eval_fn, self.state.params, exp.val_batcher, exp.devices, self.size
    )
    params = exp.devices.unreplicate(self.state).params
    if exp.devices.member_shards > 1:  # one member at a time from host memory
      params = jax.device_get(params)
    samples = []
    for i, record in enumerate(records):
      bleu, samples = evaluation.evaluate_bleu(
        exp.translator,
        self.member(params, i),
        exp.data,
        max_sentences=ecfg.bleu_sentences,
        batch_size=ecfg.decode_batch_size,
        num_samples=ecfg.num_samples if self.size == 1 else 0,
      )
      record.update(val_bleu=bleu['bleu'], val_chrf=bleu['chrf'])
    self.log.eval(step, records, samples)
    to_best = self.best.judge(step, [r['val_bleu'] for r in records], self.ckpts)
    if any(b is not None for b in to_best):
      self.save(step, to_best)
    return records

  def close(self) -> None:
    for ckpt in self.ckpts:
      ckpt.wait()
    for ckpt in self.ckpts:
      ckpt.close()
    self.log.close()

  def average(self, last: int) -> None:
    """After `close`: averages each member's last `last` checkpoints (of those kept; at
    least 2) and keeps the average in its `checkpoints/averaged/` when its validation
    BLEU beats the member's best (`checkpoints/averaged/` is then what translate and
    evaluate use by default). One process only: a multi-process run logs how to average."""
    if jax.process_count() > 1:
      if self.exp.is_main:
        logging.info(
          'train.average_last: average on one process after a multi-process run: '
          '`python -m seq2seq_jax.average --workdir=DIR --last=%d`',
          last,
        )
      return
    for i, ckpt in enumerate(self.ckpts):
      workdir = ckpt.root.parent
      kept = checkpointing.Checkpoints(workdir, read_only=True)
      count = len(kept.latest.all_steps())
      kept.close()
      if min(count, last) < 2:
        logging.info('train.average_last=%d: %s keeps %d checkpoint(s)', last, workdir, count)
        continue
      best = self.best.bleu[i]
      scores: dict[str, float] = {}

      def judge(params: Any, best: float = best, scores: dict = scores) -> dict | None:
        scores.update(self.validation_bleu(params))
        if scores['bleu'] <= best:
          return None
        return {'chosen_by_validation': True, 'averaged_val_bleu': scores['bleu']}

      done = averaging.average_checkpoints(workdir, last=min(count, last), judge=judge)
      logging.info(
        "the average of steps %s scores validation BLEU %.2f against the best checkpoint's "
        '%.2f: %s',
        done['averaged_steps'],
        scores['bleu'],
        best,
        f'kept in {workdir}/checkpoints/averaged, which translate and evaluate use by default'
        if done['written']
        else 'not kept; translate and evaluate use the best checkpoint',
      )

  def validation_bleu(self, params: Any) -> dict[str, float]:
    """Greedy BLEU and chrF of `params` (one member's) on the validation sources, as
    `evaluate` scores a member during training."""
    ecfg = self.exp.config.eval
    bleu, _ = evaluation.evaluate_bleu(
      self.exp.translator,
      params,
      self.exp.data,
      max_sentences=ecfg.bleu_sentences,
      batch_size=ecfg.decode_batch_size,
      num_samples=0,
    )
    return bleu

  def finish(self, result: dict[str, Any], last_eval: list[dict[str, float]]) -> dict[str, Any]:
    """Writes `result.json` and prints the config's examples (a single run's)."""
    result = {**result, **last_eval[0]}
    self.write_result(result, 0)
    return result

  def write_result(self, result: dict[str, Any], member: int) -> None:
    """`result.json`, then member `member`'s translations of the config's examples."""
    exp = self.exp
    if not exp.is_main:
      return
    (exp.workdir / 'result.json').write_text(json.dumps(result, indent=2))
    params = self.member(exp.devices.unreplicate(self.state).params, member)
    evaluation.print_examples(exp.config, exp.data, exp.translator, params)
