"""Orbax checkpoints: the latest K in `checkpoints/latest/`, the best (or best K, by
`train.keep_best`) by validation BLEU in `checkpoints/best/`, an average of the last or
best K (`python -m seq2seq_jax.average`, or training's end: `train.average_last`) in
`checkpoints/averaged/`, each step a
directory holding the train state and a JSON record (data position, best score, the
model's shape) that makes resuming and translating self-checking.

Orbax writes a step into a temporary directory and renames it when complete, so a save
that was killed half-way leaves no step directory and is never restored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from seq2seq_jax import build, errors, models

CheckpointChoice = str  # 'auto' | 'best' | 'latest' | 'averaged' | a step number


class CheckpointError(errors.UserError):
  """A missing, unreadable or mismatched checkpoint (the message says which)."""


BEST_METRIC = 'val_bleu'


def _manager(
  directory: Path, keep: int, read_only: bool = False, by_metric: bool = False
) -> ocp.CheckpointManager:
  ranking = {}
  if by_metric:  # keep the `keep` steps of highest validation BLEU (older ones without a
    # metric, written before `keep_best` existed, are kept too)
    ranking = dict(best_fn=lambda m: m[BEST_METRIC], best_mode='max')
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=not read_only,
    read_only=read_only,
    **ranking,
    # Two managers may save the same step at once: across processes their barriers need
    # names of their own ('latest_...', 'best_...'), or Orbax fails with "already ongoing".
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      barrier_sync_key_prefix=directory.name
    ),
  )
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpoints:
  """The managers of a workdir: the latest `keep` steps, the best `keep_best` by validation
  BLEU, and the average."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    keep: int = 3,
    read_only: bool = False,
    keep_best: int = 1,
  ):
    root = Path(workdir) / 'checkpoints'
    if read_only and not root.is_dir():
      raise CheckpointError(f'no checkpoints in {workdir} (looked for {root})')
    if keep < 1 or keep_best < 1:
      raise errors.ConfigError(
        f'train.keep_checkpoints and train.keep_best must be at least 1, got {keep} and {keep_best}'
      )
    self.root, self.read_only, self.keep_best = root, read_only, keep_best
    self.latest = _manager(root / 'latest', keep, read_only)
    self.best = _manager(root / 'best', keep_best, read_only, by_metric=True)
    self._averaged: ocp.CheckpointManager | None = None

  @property
  def averaged(self) -> ocp.CheckpointManager:
    """`checkpoints/averaged/` (made on first use: training never writes it)."""
    if self._averaged is None:
      path = self.root / 'averaged'
      if self.read_only and not path.is_dir():
        raise CheckpointError(
          f'no averaged checkpoint in {self.root.parent}; make one with '
          f'python -m seq2seq_jax.average --workdir={self.root.parent} --last=K'
        )
      self._averaged = _manager(path, 1, self.read_only)
    return self._averaged

  def averaged_is_current(self) -> bool:
    """Whether `checkpoints/averaged/` holds what training's end chose over the best
    checkpoint by validation BLEU (`train.average_last`), at the latest step (not one a
    resumed run has gone past)."""
    if not (self.root / 'averaged').is_dir():
      return False
    step = self.averaged.latest_step()
    if step is None or step != self.latest.latest_step():
      return False
    return bool(self.read_meta('averaged')[1].get('chosen_by_validation'))

  def save_averaged(self, step: int, state: Any, meta: dict) -> None:
    """Replaces the averaged checkpoint (one is kept) with `state` at `step`."""
    manager = self.averaged
    if step in manager.all_steps():
      manager.delete(step)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    manager.save(step, args=args)
    manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def best_steps(self) -> list[tuple[int, float | None]]:
    """The steps kept in `checkpoints/best/` with their validation BLEU, best first (a step
    saved before BLEU was recorded with it: None, last); of equal BLEU the later first, as
    Orbax keeps them."""
    ranked = [(s, (self.best.metrics(s) or {}).get(BEST_METRIC)) for s in self.best.all_steps()]
    return sorted(ranked, key=lambda r: (r[1] is None, -(r[1] or 0.0), -r[0]))

  def ranks_among_best(self, bleu: float) -> bool:
    """Whether a checkpoint of this BLEU belongs in `checkpoints/best/` (one of the best
    `keep_best` so far)."""
    kept = [b for _, b in self.best_steps() if b is not None]
    return len(kept) < self.keep_best or bleu > min(kept)

  def save(self, step: int, state: Any, meta: dict, *, best_bleu: float | None = None) -> None:
    """Saves `step` among the latest and, with its validation BLEU, among the best."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if step not in self.latest.all_steps():
      self.latest.save(step, args=args)
    if best_bleu is not None and step not in self.best.all_steps():
      self.best.save(step, args=args, metrics={BEST_METRIC: float(best_bleu)})

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
    if self._averaged is not None:
      self._averaged.close()

  def resolve(self, choice: CheckpointChoice) -> tuple[ocp.CheckpointManager, int]:
    """'best' (falls back to latest when no best was saved), 'latest', 'averaged', 'auto'
    (the averaged checkpoint when training's end chose it, `averaged_is_current`; else
    'best') or a step."""
    if choice == 'auto':
      choice = 'averaged' if self.averaged_is_current() else 'best'
    if choice == 'averaged':
      step = self.averaged.latest_step()
      if step is None:
        raise CheckpointError('the averaged checkpoint directory is empty; run seq2seq_jax.average')
      return self.averaged, step
    if choice == 'best':
      ranked = self.best_steps()
      step = ranked[0][0] if ranked else None
      if step is not None:
        return self.best, step
      choice = 'latest'
    if choice == 'latest':
      step = self.latest.latest_step()
      if step is None:
        raise CheckpointError('the workdir holds no complete checkpoint')
      return self.latest, step
    try:
      step = int(choice)
    except ValueError:
      raise CheckpointError(
        f"--checkpoint must be 'auto', 'best', 'latest', 'averaged' or a step, got {choice!r}"
      ) from None
    for manager in (self.latest, self.best):
      if step in manager.all_steps():
        return manager, step
    steps = sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))
    raise CheckpointError(f'no checkpoint at step {step}; the workdir has steps {steps}')

  def read_meta(self, choice: CheckpointChoice) -> tuple[int, dict]:
    manager, step = self.resolve(choice)
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return step, dict(restored['meta'])

  def restore(self, choice: CheckpointChoice, abstract_state: Any) -> tuple[int, Any, dict]:
    """Restores (step, state, meta); `abstract_state` gives the tree, shapes and dtypes."""
    manager, step = self.resolve(choice)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        ),
      )
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
        f'checkpoint step {step} does not match this model: {str(e).splitlines()[0][:300]}'
      ) from e
    return step, restored['state'], dict(restored['meta'])


def signature(config: ml_collections.ConfigDict, src_vocab_size: int, tgt_vocab_size: int) -> dict:
  """What a checkpoint must agree on with a config to be restored: the model family and
  its fields (but dtype and unroll, which may change between runs: they do not change the
  parameters), the vocabulary sizes and the tokenizer."""
  model_cfg = config.model.to_dict()
  own = models.registry.fields(model_cfg['arch']) or tuple(model_cfg)
  return {
    'arch': model_cfg['arch'],
    **{k: model_cfg[k] for k in own if k in model_cfg and k not in ('dtype', 'unroll')},
    'src_vocab_size': src_vocab_size,
    'tgt_vocab_size': tgt_vocab_size,
    'tokenizer': config.data.tokenizer,
  }


def check_compatible(saved: dict, current: dict) -> None:
  """Fails with a clear message when a checkpoint's model shape differs from the config's.
  A model field the checkpoint's record predates counts as the value runs had before it
  existed (`build.model_fields_before`: `arch` 'rnn', ...)."""
  saved = {**build.model_fields_before(), **saved}
  diffs = [
    f'{k}: checkpoint {saved.get(k)!r} vs config {v!r}'
    for k, v in current.items()
    if saved.get(k) != v
  ]
  if diffs:
    raise CheckpointError(
      'the checkpoint in this workdir was trained with another model or '
      'vocabulary (' + '; '.join(diffs) + '); use a new --workdir or the '
      'original config'
    )
