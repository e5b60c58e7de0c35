"""A tiny model on a few pairs, for tests and smoke runs (seconds on a CPU).

  python train.py --config=configs/tiny.py --workdir=/tmp/tiny \
      --config.data.manual_dir=../shared/data/fra-eng
"""

import ml_collections

from configs import d2l


def get_config() -> ml_collections.ConfigDict:
  config = d2l.get_config()
  config.data.train_split = 'full[:64]'
  config.data.val_split = 'full[64:80]'
  config.data.num_steps = 6
  config.model.embed_size = 16
  config.model.num_hiddens = 16
  config.model.num_layers = 2
  config.model.dropout = 0.0
  config.train.batch_size = 16
  config.train.num_epochs = 2
  config.train.log_every_steps = 2
  config.train.eval_every_steps = 0
  config.train.checkpoint_every_steps = 0
  config.eval.batch_size = 16
  config.eval.decode_batch_size = 16
  config.examples = ()
  return config
