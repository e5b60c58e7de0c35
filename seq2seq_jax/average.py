"""Checkpoint averaging: the mean of the last (or best) K checkpoints' parameters.

  python -m seq2seq_jax.average --workdir=DIR --last=K
  python -m seq2seq_jax.average --workdir=DIR --best=K
  python -m seq2seq_jax.translate --workdir=DIR --checkpoint=averaged "Hello."

Reads the last K steps of `checkpoints/latest/` (training keeps
`train.keep_checkpoints` of them, one per `train.checkpoint_every_steps`) or the K best
by validation BLEU of `checkpoints/best/` (training keeps `train.keep_best` of them),
averages their parameters leaf by leaf (in float64, stored in each leaf's own dtype) and
writes them as `checkpoints/averaged/` at the newest step, with that step's optimizer
state and record plus `averaged_steps`. `translate`, `evaluate` and `inference.load` take it as
`--checkpoint=averaged`; a later average replaces it. Prints one JSON line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import app, flags

from seq2seq_jax import build, cli, errors
from seq2seq_jax.data import tokenizers
from seq2seq_jax.train import checkpointing

FLAGS = flags.FLAGS


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


def average_checkpoints(workdir: str | Path, last: int = 0, best: int = 0) -> dict:
  """Writes the average of the last `last` (or the best `best`) checkpoints; returns what
  it did."""
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
    ckpts.save_averaged(
      chosen[-1], newest.replace(params=params), {**meta, 'averaged_steps': chosen}
    )
  finally:
    ckpts.close()
  return {'workdir': str(workdir), 'step': chosen[-1], 'averaged_steps': chosen}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_cli_logs()
  with errors.one_line_errors('average'):
    if not FLAGS.workdir:
      raise errors.ConfigError('--workdir is required')
    done = average_checkpoints(FLAGS.workdir, last=FLAGS.last, best=FLAGS.best)
    print(json.dumps(done), flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
  flags.DEFINE_integer('last', 0, 'Average the latest K checkpoints.')
  flags.DEFINE_integer('best', 0, 'Average the K best checkpoints by validation BLEU.')
  cli.run(main)
