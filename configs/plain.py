"""The seed's plain decoder on all the English-French pairs: configs/default.py with the
context-vector decoder of the book instead of attention, everything else equal.

  python train.py --config=configs/plain.py --workdir=workdirs/plain \
      --config.data.manual_dir=../shared/data/fra-eng --config.train.time_budget_s=1800

For a comparison at equal training time, give both runs the same budget, then compare
greedy and beam-search BLEU with
`python -m seq2seq_jax.evaluate --workdir=DIR --split=test [--beam_size=4]`.
Time and results: see the README.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.decoder = 'plain'  # the encoder's final top-layer state as the context
  return config
