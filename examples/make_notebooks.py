"""Writes the chapter notebooks (examples/*.ipynb) from the cells below, without outputs.

  python examples/make_notebooks.py

Edit the cells here and rerun, so the two notebooks keep their shared cells alike;
tests/test_notebooks.py checks that the committed notebooks are what this writes, and runs
them. Cells are plain text: the notebooks use only `seq2seq_jax.api` (as `s2s`).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ('seq2seq_chapter', 'transformer_chapter')

SETUP = """\
%matplotlib inline
import sys
from pathlib import Path

import jax
from matplotlib import pyplot as plt

sys.path.insert(0, str(Path.cwd().parent))  # the checkout: the notebook runs in examples/
from seq2seq_jax import api as s2s"""

DATA_MD = """\
## The data

The first `TRAIN_PAIRS` English-French pairs of the book's `fra.txt` train, the next
`VAL_PAIRS` validate; the book's word tokens (lower-cased, punctuation split off), its
vocabulary (tokens seen at least twice) and `num_steps=9` (every sentence cut or padded
to 9 tokens, `<eos>` included)."""

CONFIG = """\
def book_config(name):
  \"\"\"configs/NAME.py (the book's run, as `train.py --config` reads it) with this
  notebook's parameters.\"\"\"
  config = s2s.load_config(name)
  config.seed = SEED
  config.data.manual_dir = DATA_DIR
  config.data.data_dir = TFDS_DIR
  config.data.train_split = f'full[:{TRAIN_PAIRS}]'
  config.data.val_split = f'full[{TRAIN_PAIRS}:{TRAIN_PAIRS + VAL_PAIRS}]'
  config.train.num_epochs = EPOCHS
  config.train.batch_size = BATCH_SIZE
  config.model.update(MODEL)
  return config


config = book_config(CONFIG_NAME)
data = s2s.load_data(config)
print(
  f'{len(data.train)} training and {len(data.val)} validation pairs of {data.max_len} '
  f'steps; vocabularies of {data.src_tok.vocab_size} English and '
  f'{data.tgt_tok.vocab_size} French tokens'
)
print(f'model.arch={config.model.arch!r}: {MODEL}')"""

LOOP_MD = """\
## Training

The loop the book writes, in full: `train_step` is one jitted update (the masked
cross-entropy over the target tokens, its gradient, Adam with the gradient norm clipped
at 1), and `train_batches` yields the book's shuffled batches for as many epochs as asked.
The metrics stay on the device until the end, so no step waits for the previous one.
Change anything here: the optimizer (any Optax transformation), the number of steps, what
is recorded."""

LOOP = """\
def train(config, data):
  \"\"\"The model of `config` trained for `config.train.num_epochs` epochs: returns it, its
  parameters and the loss per target token of every step.\"\"\"
  model = s2s.build_model(config, data)
  tx = s2s.make_optimizer(config)  # Adam, gradient clipping at 1, a constant rate
  state, dropout_key = s2s.init_state(model, tx, seed=config.seed)
  train_step = s2s.jit_train_step(model, tx)  # (state, batch, key) -> (state, metrics)
  batches = s2s.train_batches(config, data)
  metrics = []
  for batch in s2s.take(batches, config.train.num_epochs * batches.batches_per_epoch):
    state, step_metrics = train_step(state, batch, dropout_key)
    metrics.append(step_metrics)
  losses = [s2s.mean_loss(m) for m in jax.device_get(metrics)]
  return model, state.params, losses


def plot_loss(losses, title):
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(range(1, len(losses) + 1), losses)
  ax.set(xlabel='step', ylabel='loss per target token', title=title)
  ax.grid(alpha=0.3)
  plt.show()
  print(f'loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps')"""

EXAMPLES = """\
def book_examples(model, params, data, config):
  \"\"\"The book's four examples, greedy, in its format, with its BLEU (k=2).\"\"\"
  sources = [source for source, _ in config.examples]
  translations = s2s.translate(model, params, data, sources)
  for (source, reference), translation in zip(config.examples, translations, strict=True):
    print(f'{source} => {translation}, bleu {s2s.book_bleu(translation, reference, data):.3f}')"""

HEATMAP = """\
def show_attention(attention, weights, title):
  \"\"\"Heatmaps as the book draws them: `attention`'s source tokens across, its output
  tokens down; weights [out, src], or [heads, out, src] for a panel per head.\"\"\"
  panels = weights if weights.ndim == 3 else weights[None]
  rows, cols = panels.shape[1:]
  fig, axes = plt.subplots(
    1, len(panels), squeeze=False, figsize=(1.5 + 0.5 * cols * len(panels), 1.5 + 0.4 * rows)
  )
  for i, ax in enumerate(axes[0]):
    image = ax.imshow(panels[i], cmap='Reds', vmin=0.0, vmax=1.0)
    ax.set_xticks(range(cols), attention.src_tokens, rotation=60, ha='right')
    ax.set_yticks(range(rows), attention.out_tokens if i == 0 else [])
    ax.set_xlabel('keys (source)')
    if len(panels) > 1:
      ax.set_title(f'head {i + 1}')
  axes[0][0].set_ylabel('queries (output)')
  fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
  fig.suptitle(title)
  plt.show()"""


def parameters(model_lines: str) -> str:
  return f"""\
# Parameters: the book's run. Everything the test suite changes (it runs this notebook on
# made-up data with a tiny model) is in this cell; the rest is the same for both.
DATA_DIR = '../../shared/data/fra-eng'  # the book's fra.txt ('': download fra-eng.zip)
TFDS_DIR = '~/tensorflow_datasets'  # where the prepared splits are kept
TRAIN_PAIRS = 512  # the first 512 pairs of the file train
VAL_PAIRS = 128  # the next 128 validate (their words count for the vocabulary, as the book)
EPOCHS = 30
BATCH_SIZE = 128
SEED = 0
{model_lines}
SENTENCE = "i'm home ."  # the sentence whose attention is drawn"""


def notebook(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
  """A notebook of ('md' | 'code' | 'parameters', source) cells, with fixed cell ids (so
  rewriting changes nothing) and the parameters cell tagged as papermill and others
  expect."""
  made = []
  for i, (kind, source) in enumerate(cells):
    if kind == 'md':
      made.append(v4.new_markdown_cell(source, id=f'{name}-{i:02d}'))
    else:
      tags = {'tags': ['parameters']} if kind == 'parameters' else {}
      made.append(v4.new_code_cell(source, id=f'{name}-{i:02d}', metadata=tags))
  return v4.new_notebook(
    cells=made,
    metadata={
      'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
      'language_info': {'name': 'python'},
    },
  )


SEQ2SEQ_INTRO = """\
# Sequence-to-sequence learning for machine translation

Dive into Deep Learning, section 10.7 "Sequence-to-Sequence Learning for Machine
Translation" (and 11.4 "The Bahdanau Attention Mechanism" for the heatmap), written on
this package's public API, `seq2seq_jax.api`: the data, the GRU encoder-decoder, a
training loop you can read and change, the book's four examples with their BLEU, and the
Bahdanau decoder's attention as a heatmap.

As written, the parameters cell below holds the book's settings (512 pairs, 30 epochs, 2
GRU layers of 256; a few minutes on a 2-core CPU). The test suite runs this notebook with
that cell's values replaced by tiny ones (tests/test_notebooks.py)."""

SEQ2SEQ_PARAMS = """\
CONFIG_NAME = 'd2l'  # configs/d2l.py: the book's seq2seq run
MODEL = dict(embed_size=256, num_hiddens=256, num_layers=2, dropout=0.2)  # the book's"""

SEQ2SEQ_TRAIN = """\
model, params, losses = train(config, data)
plot_loss(losses, 'GRU encoder-decoder')"""

SEQ2SEQ_EXAMPLES_MD = """\
## The book's four examples

At the book's settings this prints what `train.py --config=configs/d2l.py` prints: 3 of
the 4 at `bleu 1.000`, as the book's PyTorch run gets:

```
go . => va !, bleu 1.000
i lost . => j'ai perdu ., bleu 1.000
he's calm . => soyez calmes !, bleu 0.000
i'm home . => je suis chez moi ., bleu 1.000
```"""

SEQ2SEQ_ATTENTION_MD = """\
## Bahdanau attention

The plain decoder has no attention to show: every step reads the same context, the
encoder's last state. The Bahdanau decoder (`model.decoder='attention'`,
configs/d2l_attention.py) instead reads at each step a weighted average of all the
encoder's outputs. Same data, same loop: train it and look at the weights of each output
token over the source tokens (`s2s.attention` translates the sentence, then feeds the
translation back through the model to collect them). At the book's settings it too gets 3
of the 4 at `bleu 1.000`, as configs/d2l_attention.py does (`he's calm . => je suis calme .,
bleu 0.537`)."""

SEQ2SEQ_ATTENTION = """\
attention_config = book_config('d2l_attention')
attention_model, attention_params, attention_losses = train(attention_config, data)
plot_loss(attention_losses, 'GRU encoder-decoder with Bahdanau attention')
book_examples(attention_model, attention_params, data, attention_config)"""

SEQ2SEQ_HEATMAP = """\
attention = s2s.attention(attention_model, attention_params, data, SENTENCE)
print(f'{SENTENCE} => {attention.translation}')
show_attention(attention, attention.weights, 'Bahdanau attention')"""

TRANSFORMER_INTRO = """\
# The Transformer

Dive into Deep Learning, section 11.7 "The Transformer Architecture", written on this
package's public API, `seq2seq_jax.api`: the book's data, its Transformer (sinusoidal
positions, multi-head attention, `AddNorm` after each sublayer, a key/value cache when
decoding), a training loop you can read and change, the book's four examples with their
BLEU, and the decoder's cross-attention as heatmaps, averaged over the heads and per head.

As written, the parameters cell below holds the book's settings (512 pairs, 30 epochs, 2
blocks of width 256 with 4 heads; a couple of minutes on a 2-core CPU). The test suite
runs this notebook with that cell's values replaced by tiny ones
(tests/test_notebooks.py)."""

TRANSFORMER_PARAMS = """\
CONFIG_NAME = 'd2l_transformer'  # configs/d2l_transformer.py: the book's Transformer run
MODEL = dict(num_hiddens=256, num_layers=2, num_heads=4, ffn_size=64, dropout=0.2)"""

TRANSFORMER_TRAIN = """\
model, params, losses = train(config, data)
plot_loss(losses, 'Transformer')"""

TRANSFORMER_EXAMPLES_MD = """\
## The book's four examples

Greedy decoding, one token at a time with the decoder's key/value cache. At the book's
settings this prints what `train.py --config=configs/d2l_transformer.py` prints (README:
how it compares with the PyTorch counterpart); when written, on a CPU in float32:

```
go . => va !, bleu 1.000
i lost . => j'ai perdu ., bleu 1.000
he's calm . => je suis calme ., bleu 0.537
i'm home . => je suis chez moi ., bleu 1.000
```"""

TRANSFORMER_ATTENTION_MD = """\
## Cross-attention

The weights of the last decoder block's cross-attention (each output token, the query,
over the source tokens, the keys): `s2s.attention` translates the sentence, then feeds the
translation back through the model to collect them. With `heads=True` it returns one map
per head, [heads, output tokens, source tokens]; their mean over the heads is the map it
returns without (and `translate --plot_attention` draws)."""

TRANSFORMER_HEATMAP = """\
attention = s2s.attention(model, params, data, SENTENCE, heads=True)
print(f'{SENTENCE} => {attention.translation}')
show_attention(attention, attention.weights.mean(axis=0), 'cross-attention, mean over heads')
show_attention(attention, attention.weights, 'per head')"""


def seq2seq_chapter() -> nbformat.NotebookNode:
  return notebook(
    'seq2seq',
    [
      ('md', SEQ2SEQ_INTRO),
      ('parameters', parameters(SEQ2SEQ_PARAMS)),
      ('code', SETUP),
      ('md', DATA_MD),
      ('code', CONFIG),
      ('md', LOOP_MD),
      ('code', LOOP),
      ('code', SEQ2SEQ_TRAIN),
      ('md', SEQ2SEQ_EXAMPLES_MD),
      ('code', EXAMPLES),
      ('code', 'book_examples(model, params, data, config)'),
      ('md', SEQ2SEQ_ATTENTION_MD),
      ('code', SEQ2SEQ_ATTENTION),
      ('code', HEATMAP),
      ('code', SEQ2SEQ_HEATMAP),
    ],
  )


def transformer_chapter() -> nbformat.NotebookNode:
  return notebook(
    'transformer',
    [
      ('md', TRANSFORMER_INTRO),
      ('parameters', parameters(TRANSFORMER_PARAMS)),
      ('code', SETUP),
      ('md', DATA_MD),
      ('code', CONFIG),
      ('md', LOOP_MD),
      ('code', LOOP),
      ('code', TRANSFORMER_TRAIN),
      ('md', TRANSFORMER_EXAMPLES_MD),
      ('code', EXAMPLES),
      ('code', 'book_examples(model, params, data, config)'),
      ('md', TRANSFORMER_ATTENTION_MD),
      ('code', HEATMAP),
      ('code', TRANSFORMER_HEATMAP),
    ],
  )


def written() -> dict[str, str]:
  """Each notebook's file name and text, as this script writes them."""
  makers = {'seq2seq_chapter': seq2seq_chapter, 'transformer_chapter': transformer_chapter}
  return {f'{name}.ipynb': nbformat.writes(makers[name]()) + '\n' for name in NOTEBOOKS}


def main() -> None:
  for name, text in written().items():
    (HERE / name).write_text(text, encoding='utf-8')
    print(f'wrote {HERE / name}')


if __name__ == '__main__':
  main()
