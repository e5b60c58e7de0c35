"""Eight of the book's models (configs/d2l.py) trained together in one compiled step:
four learning rates times two seeds, on the same batches.

  python train.py --config=configs/population.py --workdir=workdirs/population \
      --config.data.manual_dir=../shared/data/fra-eng

About 2 minutes on a 2-core CPU (120 s; eight separate runs of configs/d2l.py take
8 x 23 s = 3 minutes). Ends by printing the members' table (seed, learning rate, final
losses, validation BLEU; `*` marks the winner by validation BLEU) and the winner's
translations of the book's four examples. On a 2-core x86 CPU (JAX 0.10):

  | member | seed | learning rate | train loss | val loss | val BLEU | best BLEU (step) |
  | 0 | 0 | 0.001 | 0.3115 | 3.0281 | 9.26 | 9.26 (120) |
  | 1 | 0 | 0.002 | 0.2085 | 3.3366 | 18.70 | 18.70 (120) |
  | 2 | 0 | 0.005 | 0.1988 | 3.8060 | 18.46 | 18.46 (120) |
  | 3 | 0 | 0.01 | 0.2130 | 4.0565 | 8.59 | 10.54 (80) |
  | 4 | 1 | 0.001 | 0.3054 | 3.0930 | 10.65 | 10.65 (120) |
  | 5 | 1 | 0.002 | 0.2066 | 3.3628 | 17.96 | 17.96 (120) |
  | 6 * | 1 | 0.005 | 0.2043 | 3.7846 | 18.94 | 18.94 (120) |
  | 7 | 1 | 0.01 | 0.2161 | 4.3650 | 13.64 | 14.16 (80) |
  go . => va !, bleu 1.000
  i lost . => j'ai perdu ., bleu 1.000
  he's calm . => je suis calme ., bleu 0.537
  i'm home . => je suis chez moi ., bleu 1.000

The book's 0.005 and 0.002 are best; 0.001 is too slow for 30 epochs and 0.01 peaks
early. Member 2 (seed 0, 0.005) is configs/d2l.py's own run: the same validation loss
and BLEU as `train.py --config=configs/d2l.py`. Each member's directory is a single
run's workdir: `python -m seq2seq_jax.translate --workdir=workdirs/population/members/6`.
"""

import ml_collections

from configs import d2l


def get_config() -> ml_collections.ConfigDict:
  config = d2l.get_config()
  config.population.size = 8
  # Member i: learning rate learning_rates[i], seed seeds[i] (initialisation and dropout).
  config.population.learning_rates = (0.001, 0.002, 0.005, 0.01) * 2
  config.population.seeds = (0, 0, 0, 0, 1, 1, 1, 1)
  return config
