"""Checkpoint averaging: the mean of the last (or best) K checkpoints' parameters,
written as `checkpoints/averaged/` (the `seq2seq_jax.average` command, and training's
end with `train.average_last`).

The parameters are averaged leaf by leaf (in float64, stored in each leaf's own dtype)
and written at the newest averaged step, with that step's optimizer state and record
plus `averaged_steps`. At the end of a run (`train.average_last`) training averages the
last K checkpoints and keeps the result only when its validation BLEU beats the best
checkpoint's, marking it `chosen_by_validation`; `--checkpoint=auto` (the default of
`translate`, `evaluate` and `inference.load`) takes such an averaged checkpoint when it
holds the run's latest step, else the best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seq2seq_jax import build, errors
from seq2seq_jax.data import tokenizers
from seq2seq_jax.train import checkpointing


def average_trees(trees: Sequence[Any]) -> Any:
  """The leaf-wise mean of trees of one structure, each leaf in its own dtype."""
  if not trees:
    raise ValueError('nothing to average')

  def mean(*xs: Any) -> np.ndarray:
    total = np.zeros(np.shape(xs[0]), np.float64)
    for x in xs:
      total += np.asarray(x, np.float64)
    return (total / len(xs)).astype(np.asarray(xs[0]).dtype)

  return jax.tree.map(mean, *trees)


def average_checkpoints(
  workdir: str | Path,
  last: int = 0,
  best: int = 0,
  judge: Callable[[Any], dict | None] | None = None,
) -> dict:
  """Writes the average of the last `last` (or the best `best`) checkpoints; returns what
  it did. With `judge`, only when `judge(averaged params)` returns a record (added to the
  checkpoint's meta) rather than None ('written' says which)."""
  workdir = Path(workdir)
  if (last > 0) == (best > 0) or last < 0 or best < 0:
    raise errors.ConfigError(f'give one of --last=K or --best=K (K >= 1), got {last} and {best}')
  config = build.workdir_config(workdir)
  src_tok, tgt_tok = tokenizers.load(workdir, config.data.tokenizer)
  abstract = build.abstract_state(
    config, build.model(config, src_tok.vocab_size, tgt_tok.vocab_size)
  )
  checkpointing.Checkpoints(workdir, read_only=True).close()  # a clear error if none
  ckpts = checkpointing.Checkpoints(
    workdir,
    keep=int(config.train.keep_checkpoints),
    keep_best=int(config.train.keep_best),
  )
  try:
    if last:
      saved = sorted(ckpts.latest.all_steps())
      if len(saved) < last:
        raise errors.ConfigError(
          f'--last={last} asks for more checkpoints than {workdir} keeps ({len(saved)}: steps '
          f'{saved}); train with a larger train.keep_checkpoints'
        )
      chosen = saved[-last:]
      states = [ckpts.restore(str(s), abstract) for s in chosen]
    else:
      ranked = ckpts.best_steps()
      if len(ranked) < best:
        raise errors.ConfigError(
          f'--best={best} asks for more checkpoints than {workdir} keeps among its best '
          f'({len(ranked)}: steps {[s for s, _ in ranked]}); train with a larger '
          'train.keep_best'
        )
      chosen = sorted(s for s, _ in ranked[:best])
      states = [ckpts.restore(str(s), abstract) for s in chosen]
    _, newest, meta = states[-1]
    params = average_trees([state.params for _, state, _ in states])
    verdict = {} if judge is None else judge(params)
    if verdict is not None:
      meta = {**meta, **verdict, 'averaged_steps': chosen}
      ckpts.save_averaged(chosen[-1], newest.replace(params=params), meta)
  finally:
    ckpts.close()
  return {
    'workdir': str(workdir),
    'step': chosen[-1],
    'averaged_steps': chosen,
    'written': verdict is not None,
  }
