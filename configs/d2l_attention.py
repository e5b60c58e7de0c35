"""The book's Bahdanau-attention run: configs/d2l.py with the attention decoder.

  python train.py --config=configs/d2l_attention.py --workdir=workdirs/d2l_attention \
      --config.data.manual_dir=../shared/data/fra-eng

Same data and hyperparameters as the book's plain run (512 training pairs, 9 steps,
30 epochs, 2 layers of 256). About a minute on a 2-core CPU. Ends by printing the book's
four examples; like the book's PyTorch run, it gets 3 of the 4 at `bleu 1.000`:
  go . => va !, bleu 1.000
  i lost . => j'ai perdu ., bleu 1.000
  he's calm . => je suis calme ., bleu 0.537
  i'm home . => je suis chez moi ., bleu 1.000
"""

import ml_collections

from configs import d2l


def get_config() -> ml_collections.ConfigDict:
  config = d2l.get_config()
  config.model.decoder = 'attention'  # Bahdanau attention over the encoder outputs
  return config
