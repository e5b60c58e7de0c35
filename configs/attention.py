"""Bahdanau attention on all the English-French pairs: configs/default.py with the
attention decoder, everything else equal, for a comparison with the plain decoder.

  python train.py --config=configs/attention.py --workdir=workdirs/attention \
      --config.data.manual_dir=../shared/data/fra-eng

For a comparison at equal training time, give both runs the same budget, e.g.
`--config.train.time_budget_s=1800`, then compare greedy and beam-search BLEU with
`python -m seq2seq_jax.evaluate --workdir=DIR --split=test [--beam_size=4]`.
Time and results: see the README's table (the attention decoder does more work per
step than the plain one: an attention over the source at every target position).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.decoder = 'attention'  # additive attention over the encoder outputs
  return config
