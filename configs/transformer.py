"""The Transformer on all the data: configs/default.py's data, schedule and evaluation
with `model.arch='transformer'`.

  python train.py --config=configs/transformer.py --workdir=workdirs/transformer \
      --config.data.manual_dir=../shared/data/fra-eng --config.train.time_budget_s=1800

Width 256, 2 encoder and 2 decoder blocks, 4 heads, FFN 1024, dropout 0.1, post-norm (the
book's AddNorm), the output layer tied to the target embeddings, matmuls in bfloat16
where the hardware has it (`model.dtype='auto'`), Adam at a peak of 0.002 after 500
warmup steps with inverse-square-root decay, label smoothing 0.1: the best of
`python -m seq2seq_jax.benchmarks.recipes`' transformer* candidates at equal training
time (width 384, 3 blocks, peak 0.001, no decay; README, "The Transformer"). At 10
minutes on one core the GRU default still wins (19.4 against 15.6 test BLEU, greedy).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.arch = 'transformer'
  config.model.num_hiddens = 256
  config.model.num_layers = 2  # blocks in the encoder and in the decoder
  config.model.num_heads = 4
  config.model.ffn_size = 1024
  config.model.dropout = 0.1
  config.model.pre_norm = False
  config.train.learning_rate = 0.002
  config.train.warmup_steps = 500
  return config
