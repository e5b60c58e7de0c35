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

from absl import app, flags

from seq2seq_jax import cli, errors
from seq2seq_jax.train import averaging

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_cli_logs()
  with errors.one_line_errors('average'):
    if not FLAGS.workdir:
      raise errors.ConfigError('--workdir is required')
    done = averaging.average_checkpoints(FLAGS.workdir, last=FLAGS.last, best=FLAGS.best)
    print(json.dumps(done), flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
  flags.DEFINE_integer('last', 0, 'Average the latest K checkpoints.')
  flags.DEFINE_integer('best', 0, 'Average the K best checkpoints by validation BLEU.')
  cli.run(main)
