"""Default: the best recipe we measured for all the English-French pairs.

  python train.py --config=configs/default.py --workdir=workdirs/default \
      --config.data.manual_dir=../shared/data/fra-eng --config.train.time_budget_s=1800

The seed's GRU encoder (2 layers of 256) with the Bahdanau-attention decoder, the output
layer tied to the target embeddings, word tokens for the book's corpus and SentencePiece
for any other (`data.tokenizer='auto'`), matmuls in bfloat16 (float32
accumulation and parameters) where the hardware has bfloat16 dot products and float32
elsewhere (`model.dtype='auto'`), Adam at 0.005 with 500 warmup steps and
inverse-square-root decay, label smoothing 0.1: each choice measured against the
alternatives at equal training time (README, "Choosing the defaults").

Splits are assigned by English source (a stable hash: 96% train, 2% validation, 2% test;
on a larger corpus validation and test stop at 5,000 sources each: `data.heldout_share`,
`data.heldout_max_sources`), so no test source is seen in training; the vocabulary comes
from the training split.
Pairs longer than the length that keeps 99% of them whole are dropped and counted;
batches are bucketed by length. Time and results: see the README's table.
"""

import ml_collections

from seq2seq_jax.data import heldout


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = '~/tensorflow_datasets'  # where TFDS keeps the prepared splits
  # A manythings file of English and another language (fra.txt, deu.txt, spa-eng.zip, ...)
  # or a directory holding it; '' = download the book's fra-eng.zip.
  config.data.manual_dir = ''
  config.data.src_lang = 'en'  # language codes (ISO 639-1 or the file's 639-3): the direction
  config.data.tgt_lang = 'fr'
  # Other sources (exactly one per run; seq2seq_jax/data/sources.py): parallel text files
  # PREFIX.<src_lang> / PREFIX.<tgt_lang> (validation/test: their own prefixes, else split
  # off the training files by source sentence), a TSV file, or a prepared TFDS dataset.
  config.data.train_prefix = ''
  config.data.validation_prefix = ''
  config.data.test_prefix = ''
  config.data.tsv_file = ''
  config.data.tsv_columns = (0, 1)  # source, target (0-based)
  config.data.tfds_name = ''  # e.g. 'wmt14_translate/de-en', prepared in data_dir
  config.data.train_split = 'train'
  config.data.val_split = 'validation'
  # Validation and test carved from the training pairs (a Tatoeba or TSV file, text files
  # without their own): each takes this share of the source sentences (a stable hash of
  # the source), up to `heldout_max_sources` distinct sources (0 = no cap); sources past the
  # cap stay in training. The book's file (at most 3,150 sources each) is under the cap.
  config.data.heldout_share = heldout.SHARE  # 0.02
  config.data.heldout_max_sources = heldout.MAX_SOURCES  # 5,000
  config.data.max_pairs = 0  # keep only the first N pairs of each split (0 = all)
  config.data.tokenizer = 'auto'  # 'word' (the book's), 'sentencepiece' (cased subwords) or
  # 'auto': word for the book's corpus (a Tatoeba English-French file), sentencepiece else
  config.data.vocab_size = 8000  # sentencepiece: pieces per language
  config.data.tokenizer_sentences = 200_000  # sentencepiece: trained on a sample this big
  config.data.min_freq = 2  # the book's vocabulary threshold
  config.data.vocab_includes_validation = False  # the book counts validation tokens too
  config.data.num_steps = 0  # > 0: trim/pad every sentence to this (the book); 0: buckets
  config.data.max_len = 0  # 0: the length that keeps `length_quantile` of the pairs whole
  config.data.length_quantile = 0.99
  config.data.buckets = ()  # bucket lengths; () = the `num_buckets` that pad least
  config.data.num_buckets = 8  # automatic buckets (each one more compiled shape)

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'rnn'  # the model family: 'rnn' or 'transformer' (models/registry.py)
  config.model.embed_size = 256
  config.model.num_hiddens = 256
  config.model.num_layers = 2
  config.model.dropout = 0.2
  config.model.decoder = 'attention'  # 'attention' (Bahdanau) or 'plain' (the seed's)
  config.model.cell = 'gru'  # recurrent cell: 'gru' (the seed) or 'lstm' (PyTorch's equations)
  config.model.bidirectional = False  # the encoder reads each source both ways
  config.model.tie_embeddings = True  # the output layer reuses the target embeddings
  # Matmul inputs: 'bfloat16' (float32 accumulation), 'float32', or 'auto': bfloat16 on
  # GPU/TPU and CPUs with bfloat16 dot products (AMX, AVX512_BF16), float32 on others.
  config.model.dtype = 'auto'
  config.model.unroll = 1  # time steps per scan iteration (0: whole sequences, no loop)
  # model.arch='transformer' (models/transformer.py; configs/transformer.py) reads
  # num_hiddens (d), num_layers (blocks), dropout, tie_embeddings, dtype and these:
  config.model.num_heads = 4  # attention heads (they must divide num_hiddens)
  config.model.ffn_size = 1024  # the position-wise FFN's hidden width
  config.model.pre_norm = False  # True: the norm before each sublayer (deeper stacks)
  config.model.max_positions = 1000  # the positional table: the longest source and output

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128  # global, over all devices and hosts
  config.train.num_epochs = 10
  config.train.num_train_steps = 0  # > 0 overrides num_epochs
  config.train.learning_rate = 0.005  # the book's (the peak of a warmup schedule)
  config.train.schedule = 'rsqrt'  # 'rsqrt', 'constant' or 'cosine' (each with warmup)
  config.train.warmup_steps = 500
  config.train.weight_decay = 0.0
  config.train.label_smoothing = 0.1
  config.train.grad_clip = 1.0  # global-norm clipping, as the seed
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 1000  # 0: once per epoch
  config.train.checkpoint_every_steps = 0  # 0: once per epoch
  config.train.keep_checkpoints = 3  # the latest K (python -m seq2seq_jax.average --last=K)
  config.train.keep_best = 1  # the best K by validation BLEU (seq2seq_jax.average --best=K)
  # At the end of a run, average the parameters of the last K checkpoints (of those kept)
  # and keep the average in checkpoints/averaged/ when its validation BLEU beats the best
  # checkpoint's: translate and evaluate then use it by default (`--checkpoint=auto`).
  # 0 or 1: off. README, "Averaging checkpoints".
  config.train.average_last = 3
  config.train.time_budget_s = 0  # > 0: stop cleanly after this many seconds
  config.train.patience = 0  # > 0: stop after this many evaluations without a better BLEU
  config.train.grad_accum_steps = 1  # > 1: micro-batches of batch_size / K, one update
  # Several devices: 'jit' (global arrays on a mesh, the step jitted with shardings) or
  # 'pmap'; 'auto' = 'jit' (docs/distributed.md).
  config.train.parallel = 'auto'

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.decode_batch_size = 512
  config.eval.bleu_sentences = 1000  # validation sources translated for BLEU (0 = all)
  config.eval.num_samples = 3  # sample translations in the log

  # Multi-process runs (several hosts, or a process per GPU): see docs/distributed.md.
  config.distributed = ml_collections.ConfigDict()
  # 'auto': start when a coordinator is given (here or JAX_COORDINATOR_ADDRESS) or a
  # multi-process SLURM / Open MPI / Cloud TPU launch is detected; 'yes': always; 'no'.
  config.distributed.initialize = 'auto'
  config.distributed.coordinator_address = ''  # 'host:port' of process 0 ('' = from env)
  config.distributed.num_processes = 0  # 0 = JAX_NUM_PROCESSES or detected
  config.distributed.process_id = -1  # -1 = JAX_PROCESS_ID or detected

  # Populations: N models in one vmapped step on shared batches (see docs/research.md).
  config.population = ml_collections.ConfigDict()
  config.population.size = 1  # > 1: train that many members at once (train/population.py)
  config.population.learning_rates = ()  # one per member; () = train.learning_rate for all
  config.population.seeds = ()  # one per member (init and dropout); () = seed, seed + 1, ...
  # Members vectorised together in the one program: 0 = all (one vmap), k = groups of k,
  # -1 = auto (all on GPU/TPU; one after another on CPU, where batched matmuls are slower).
  config.population.chunk = -1
  # train.parallel='jit' on several devices: split the members over this many groups of
  # devices (a ('members', 'data') mesh) instead of running every member on every device.
  config.population.member_shards = 1

  config.examples = ()  # (source, reference) pairs printed with the book's BLEU at the end
  return config
