"""The book's run: 512 training pairs, 128 validation pairs, 9 steps, 30 epochs.

  python train.py --config=configs/d2l.py --workdir=workdirs/d2l \
      --config.data.manual_dir=../shared/data/fra-eng

About a minute on a 2-core CPU. Ends by printing the book's four examples; the book's
PyTorch run and this one get 3 of the 4 at `bleu 1.000` (`he's calm .` is the miss).
"""

import ml_collections

from configs import default

BOOK_EXAMPLES = (
  ('go .', 'va !'),
  ('i lost .', "j'ai perdu ."),
  ("he's calm .", 'il est calme .'),
  ("i'm home .", 'je suis chez moi .'),
)


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.train_split = 'full[:512]'  # the first 512 pairs of the file
  config.data.val_split = 'full[512:640]'  # the next 128
  config.data.num_steps = 9
  config.data.tokenizer = 'word'  # the book's rules (lowercased, punctuation split off)
  config.data.vocab_includes_validation = True  # the book builds it on all 640 pairs
  # The book's model and optimisation (configs/default.py goes beyond them).
  config.model.decoder = 'plain'
  config.model.dtype = 'float32'
  config.model.tie_embeddings = False
  config.train.learning_rate = 0.005
  config.train.schedule = 'constant'
  config.train.warmup_steps = 0
  config.train.label_smoothing = 0.0
  config.train.num_epochs = 30
  config.train.batch_size = 128
  config.train.log_every_steps = 4  # once per epoch
  config.train.eval_every_steps = 40  # every 10 epochs
  config.train.checkpoint_every_steps = 40
  config.train.average_last = 0  # the book translates with its final parameters
  config.eval.bleu_sentences = 0
  config.examples = BOOK_EXAMPLES
  return config
