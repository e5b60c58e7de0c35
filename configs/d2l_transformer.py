"""The book's Transformer run ("The Transformer Architecture"): the data and training of
configs/d2l.py (512 training pairs, 9 steps, batch 128, 30 epochs) with the book's
Transformer (2 blocks of width 256, 4 heads, FFN 64, dropout 0.2) and Adam at 0.001.

  python train.py --config=configs/d2l_transformer.py --workdir=workdirs/d2l_transformer \
      --config.data.manual_dir=../shared/data/fra-eng

Ends by printing the book's four examples as configs/d2l.py does (README: how many reach
`bleu 1.000` here and in the PyTorch counterpart).
"""

import ml_collections

from configs import d2l


def get_config() -> ml_collections.ConfigDict:
  config = d2l.get_config()
  config.model.arch = 'transformer'
  config.model.num_hiddens = 256
  config.model.num_layers = 2  # blocks
  config.model.num_heads = 4
  config.model.ffn_size = 64
  config.model.dropout = 0.2
  config.model.pre_norm = False  # the book's AddNorm after each sublayer
  config.train.learning_rate = 0.001
  return config
