"""The book's Transformer ("The Transformer Architecture", PyTorch edition) as a yardstick.

A standalone script for the PyTorch environment (`make venv-torch`), not part of the
package: it imports nothing from `seq2seq_jax`. The data pipeline (preprocess, word
tokens, Vocab(min_freq=2), pad/trim to num_steps, `<bos>`-shifted targets), the
padding-masked loss and the book's BLEU come from the user's PyTorch reference
(`--reference`, default ../shared/bench/d2l_torch_reference.py from the repository root).
The model is written here as the book describes it: embeddings * sqrt(d) plus sinusoidal
positions, then dropout; multi-head attention with W_q/W_k/W_v/W_o without bias, a
masked softmax (source padding; causal in the decoder's self-attention) and dropout on
the weights; AddNorm = LayerNorm(dropout(Y) + X); the position-wise FFN (dense, ReLU,
dense); decoder blocks of self-attention, cross-attention and FFN; an output layer with
bias; PyTorch's default initialisation (the book sets none for the Transformer). Adam
and global-norm gradient clipping at 1.

Greedy decoding keeps a key/value cache: each block's projected self-attention keys and
values grow by one position a step, and the cross-attention's keys and values are
projected once per sentence. It always runs `--num-steps` steps (as the reference
does), so `--decode-sentences` times the worst case, every sentence at full length.

  .venv-torch/bin/python seq2seq_jax/benchmarks/d2l_torch_transformer.py \\
      --data ../shared/data/fra-eng/fra.txt                       # the book's run, 4 examples
  .venv-torch/bin/python seq2seq_jax/benchmarks/d2l_torch_transformer.py \\
      --data ../shared/data/fra-eng/fra.txt --num-train 0 --epochs 1 \\
      --max-train-steps 40 --warmup-steps 5 --amp --decode-sentences 1536   # timing

Prints the book's four examples (`go . => va !, bleu 1.000`), then one JSON object on the
last line (`step_ms`: the mean over the steps after `--warmup-steps`).
"""

import argparse
import importlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
BOOK_EXAMPLES = (
  ('go .', 'va !'),
  ('i lost .', "j'ai perdu ."),
  ("he's calm .", 'il est calme .'),
  ("i'm home .", 'je suis chez moi .'),
)


def positional_table(max_len, d):
  """The book's P: P[i, 2j] = sin(i / 10000^(2j/d)), P[i, 2j+1] = cos(i / 10000^(2j/d))."""
  angles = torch.arange(max_len, dtype=torch.float32)[:, None] / torch.pow(
    10000, torch.arange(0, d, 2, dtype=torch.float32) / d
  )
  table = torch.zeros(max_len, d)
  table[:, 0::2] = torch.sin(angles)
  table[:, 1::2] = torch.cos(angles)
  return table


class MultiHeadAttention(nn.Module):
  def __init__(self, d, num_heads, dropout):
    super().__init__()
    self.num_heads = num_heads
    self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d, d, bias=False) for _ in range(4))
    self.dropout = nn.Dropout(dropout)

  def split(self, x):  # [b, t, d] -> [b, heads, t, d / heads]
    return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

  def keys_values(self, x):
    return self.split(self.w_k(x)), self.split(self.w_v(x))

  def attend(self, x, keys, values, mask):
    """Queries from x [b, tq, d] over split keys/values; mask [b or 1, tq or 1, tk]
    (True: may attend). The book's masked softmax sets masked scores to -1e6."""
    q = self.split(self.w_q(x))
    scores = q @ keys.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask[:, None], -1e6), dim=-1)
    out = (self.dropout(weights) @ values).transpose(1, 2)
    return self.w_o(out.reshape(x.shape[0], x.shape[1], -1))


class AddNorm(nn.Module):
  def __init__(self, d, dropout):
    super().__init__()
    self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)

  def forward(self, x, y):
    return self.norm(self.dropout(y) + x)


def ffn(d, ffn_size):
  return nn.Sequential(nn.Linear(d, ffn_size), nn.ReLU(), nn.Linear(ffn_size, d))


class EncoderBlock(nn.Module):
  def __init__(self, d, ffn_size, num_heads, dropout):
    super().__init__()
    self.attention = MultiHeadAttention(d, num_heads, dropout)
    self.addnorm1, self.addnorm2 = AddNorm(d, dropout), AddNorm(d, dropout)
    self.ffn = ffn(d, ffn_size)

  def forward(self, x, mask):
    y = self.addnorm1(x, self.attention.attend(x, *self.attention.keys_values(x), mask))
    return self.addnorm2(y, self.ffn(y))


class DecoderBlock(nn.Module):
  def __init__(self, d, ffn_size, num_heads, dropout):
    super().__init__()
    self.attention1 = MultiHeadAttention(d, num_heads, dropout)
    self.attention2 = MultiHeadAttention(d, num_heads, dropout)
    self.addnorm1, self.addnorm2, self.addnorm3 = (AddNorm(d, dropout) for _ in range(3))
    self.ffn = ffn(d, ffn_size)

  def forward(self, x, cache, memory, src_mask, causal):
    """cache: this block's (keys, values) of the earlier positions (None in training);
    memory: the cross-attention's (keys, values) of the encoder outputs."""
    keys, values = self.attention1.keys_values(x)
    if cache is not None:
      keys, values = torch.cat((cache[0], keys), 2), torch.cat((cache[1], values), 2)
    y = self.addnorm1(x, self.attention1.attend(x, keys, values, causal))
    z = self.addnorm2(y, self.attention2.attend(y, *memory, src_mask))
    return self.addnorm3(z, self.ffn(z)), (keys, values)


class Stack(nn.Module):
  def __init__(self, block, vocab_size, d, ffn_size, num_heads, num_blocks, dropout):
    super().__init__()
    self.d = d
    self.embedding = nn.Embedding(vocab_size, d)
    self.register_buffer('positions', positional_table(1000, d), persistent=False)
    self.dropout = nn.Dropout(dropout)
    self.blocks = nn.ModuleList(block(d, ffn_size, num_heads, dropout) for _ in range(num_blocks))

  def embed(self, ids, start=0):
    x = self.embedding(ids) * math.sqrt(self.d)
    return self.dropout(x + self.positions[start : start + ids.shape[1]])


class Transformer(nn.Module):
  def __init__(self, src_vocab, tgt_vocab, tgt_pad, d, ffn_size, num_heads, num_blocks, dropout):
    super().__init__()
    sizes = (d, ffn_size, num_heads, num_blocks, dropout)
    self.encoder = Stack(EncoderBlock, src_vocab, *sizes)
    self.decoder = Stack(DecoderBlock, tgt_vocab, *sizes)
    self.dense = nn.Linear(d, tgt_vocab)
    self.tgt_pad = tgt_pad

  def encode(self, src, src_len):
    """The decoder's starting state: the source mask, each block's cross-attention keys
    and values, empty self-attention caches, the next position."""
    src_mask = (torch.arange(src.shape[1], device=src.device) < src_len[:, None])[:, None]
    x = self.encoder.embed(src)
    for block in self.encoder.blocks:
      x = block(x, src_mask)
    memory = [b.attention2.keys_values(x) for b in self.decoder.blocks]
    return {'src_mask': src_mask, 'memory': memory, 'cache': None, 'pos': 0}

  def decode(self, tgt_in, state):
    steps, pos = tgt_in.shape[1], state['pos']
    key_pos = torch.arange(pos + steps, device=tgt_in.device)
    causal = (key_pos[None, :] <= (pos + torch.arange(steps, device=tgt_in.device))[:, None])[None]
    x = self.decoder.embed(tgt_in, pos)
    caches = state['cache'] or [None] * len(self.decoder.blocks)
    new_caches = []
    for block, cache, memory in zip(self.decoder.blocks, caches, state['memory'], strict=True):
      x, cache = block(x, cache, memory, state['src_mask'], causal)
      new_caches.append(cache)
    return self.dense(x), {**state, 'cache': new_caches, 'pos': pos + steps}

  def forward(self, src, src_len, tgt_in):
    return self.decode(tgt_in, self.encode(src, src_len))[0]

  def loss(self, logits, labels):
    per_token = nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction='none'
    )
    mask = (labels.reshape(-1) != self.tgt_pad).float()
    return (per_token * mask).sum() / mask.sum()

  @torch.no_grad()
  def greedy(self, src, src_len, bos, num_steps):
    """num_steps argmax tokens per source, with the key/value cache."""
    state = self.encode(src, src_len)
    y = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    out = []
    for _ in range(num_steps):
      logits, state = self.decode(y, state)
      y = logits.argmax(-1)
      out.append(y)
    return torch.cat(out, 1)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(
    description="The book's Transformer in PyTorch (see the module docstring)."
  )
  ap.add_argument('--data', required=True, help='tab-separated fra-eng pairs (fra.txt)')
  ap.add_argument(
    '--reference',
    default=str(REPO / '..' / 'shared' / 'bench' / 'd2l_torch_reference.py'),
    help='the PyTorch reference whose data pipeline, loss and BLEU are used',
  )
  ap.add_argument('--num-train', type=int, default=512, help='0: all but --num-val')
  ap.add_argument('--num-val', type=int, default=128)
  ap.add_argument('--num-steps', type=int, default=9)
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--epochs', type=int, default=30)
  ap.add_argument('--max-train-steps', type=int, default=0, help='stop early (timing runs)')
  ap.add_argument('--warmup-steps', type=int, default=0, help='steps left out of the timing')
  ap.add_argument('--lr', type=float, default=0.001)
  ap.add_argument('--grad-clip', type=float, default=1.0)
  ap.add_argument('--num-hiddens', type=int, default=256)
  ap.add_argument('--num-blocks', type=int, default=2)
  ap.add_argument('--num-heads', type=int, default=4)
  ap.add_argument('--ffn-size', type=int, default=64)
  ap.add_argument('--dropout', type=float, default=0.2)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--amp', action='store_true', help='bfloat16 autocast (training and decoding)')
  ap.add_argument(
    '--decode-sentences', type=int, default=0, help='time greedy decoding of this many sources'
  )
  ap.add_argument('--decode-batch', type=int, default=512)
  ap.add_argument('--decode-repeats', type=int, default=3, help='timed passes (median)')
  args = ap.parse_args(argv)
  if not Path(args.reference).is_file():
    ap.error(f'--reference {args.reference} does not exist')
  if not Path(args.data).is_file():
    ap.error(f'--data {args.data} does not exist')
  if args.num_hiddens % args.num_heads:
    ap.error(f'--num-heads {args.num_heads} must divide --num-hiddens {args.num_hiddens}')
  return args


def load_reference(path):
  path = Path(path).resolve()
  sys.path.insert(0, str(path.parent))
  return importlib.import_module(path.stem)


def train(model, loader, args):
  """The book's loop; returns (steps, timed steps, timed seconds, target tokens, last loss)."""
  optim = torch.optim.Adam(model.parameters(), lr=args.lr)
  steps = timed = tokens = 0
  seconds, loss = 0.0, float('nan')
  for _ in range(args.epochs):
    model.train()
    for src, tgt_in, src_len, labels in loader:
      t0 = time.perf_counter()
      with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
        batch_loss = model.loss(model(src, src_len, tgt_in), labels)
      optim.zero_grad()
      batch_loss.backward()
      nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
      optim.step()
      steps += 1
      if steps > args.warmup_steps:
        seconds += time.perf_counter() - t0
        timed += 1
        tokens += int((labels != model.tgt_pad).sum())
      loss = float(batch_loss.detach())
      if args.max_train_steps and steps >= args.max_train_steps:
        return steps, timed, seconds, tokens, loss
  return steps, timed, seconds, tokens, loss


def greedy_texts(model, src, src_len, tgt_vocab, args):
  with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
    out = model.greedy(src, src_len, tgt_vocab.token_to_idx['<bos>'], args.num_steps)
  hyps = []
  for row in out.tolist():
    words = []
    for i in row:
      if tgt_vocab.idx_to_token[i] == '<eos>':
        break
      words.append(tgt_vocab.idx_to_token[i])
    hyps.append(' '.join(words))
  return hyps


def book_examples(ref, model, src_vocab, tgt_vocab, args):
  """The book's four sentences through its own pipeline (as `data.build` does); prints
  `<source> => <translation>, bleu <score>` and returns {source: [translation, bleu]}."""
  model.eval()
  raw = '\n'.join(f'{e}\t{f}' for e, f in BOOK_EXAMPLES)
  src, tgt = ref.tokenize(ref.preprocess(raw))
  arrays, _, _ = ref.build_arrays(src, tgt, args.num_steps, src_vocab, tgt_vocab)
  hyps = greedy_texts(model, arrays[0], arrays[2], tgt_vocab, args)
  result = {}
  for (eng, fra), hyp in zip(BOOK_EXAMPLES, hyps, strict=True):
    score = ref.bleu(hyp, fra, k=2)
    print(f'{eng} => {hyp}, bleu {score:.3f}', flush=True)
    result[eng] = [hyp, round(score, 3)]
  return result


def time_decoding(model, src, src_len, bos, args):
  """Greedy decoding of --decode-sentences sources (the loaded pairs', repeated as needed),
  --decode-batch at a time: one untimed batch, then the median of --decode-repeats passes."""
  model.eval()
  reps = -(-args.decode_sentences // len(src))
  src, src_len = src.repeat(reps, 1)[: args.decode_sentences], src_len.repeat(reps)
  src_len = src_len[: args.decode_sentences]
  batch = args.decode_batch
  with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
    model.greedy(src[:batch], src_len[:batch], bos, args.num_steps)
    times = []
    for _ in range(max(args.decode_repeats, 1)):
      t0 = time.perf_counter()
      for i in range(0, len(src), batch):
        model.greedy(src[i : i + batch], src_len[i : i + batch], bos, args.num_steps)
      times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  return {
    'sentences': len(src),
    'batch': batch,
    'steps': args.num_steps,
    'decode_seconds': round(median, 3),
    'sentences_per_s': round(len(src) / median, 1),
  }


def main(argv=None):
  args = parse_args(argv)
  ref = load_reference(args.reference)
  torch.manual_seed(args.seed)
  with open(args.data, encoding='utf-8') as f:
    raw = f.read()
  num_train = args.num_train or (raw.count('\n') - args.num_val - 1)
  src, tgt = ref.tokenize(ref.preprocess(raw), num_train + args.num_val)
  arrays, src_vocab, tgt_vocab = ref.build_arrays(src, tgt, args.num_steps)
  train_set = torch.utils.data.TensorDataset(*(a[:num_train] for a in arrays))
  val = tuple(a[num_train:] for a in arrays)
  loader = torch.utils.data.DataLoader(train_set, args.batch, shuffle=True)
  pad = tgt_vocab.token_to_idx['<pad>']
  model = Transformer(
    len(src_vocab), len(tgt_vocab), pad, args.num_hiddens, args.ffn_size, args.num_heads,
    args.num_blocks, args.dropout,
  )  # fmt: skip
  steps, timed, seconds, tokens, loss = train(model, loader, args)
  model.eval()
  with torch.no_grad():
    val_loss = float(model.loss(model(val[0], val[2], val[1]), val[3])) if len(val[0]) else None
  examples = book_examples(ref, model, src_vocab, tgt_vocab, args)
  scores = [b for _, b in examples.values()]
  result = dict(
    impl='d2l-pytorch-transformer', torch=torch.__version__, threads=torch.get_num_threads(),
    num_train=num_train, src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab), amp=args.amp,
    seed=args.seed, params=sum(p.numel() for p in model.parameters()), steps=steps,
    timed_steps=timed, train_seconds=round(seconds, 3),
    step_ms=round(1000 * seconds / max(timed, 1), 3),
    target_tokens_per_s=round(tokens / max(seconds, 1e-9), 1), final_train_loss=round(loss, 4),
    val_loss=val_loss and round(val_loss, 4), decoding='greedy, key/value cache',
    book_examples=examples, book_bleu=scores, book_perfect=sum(b == 1.0 for b in scores),
  )  # fmt: skip
  if args.decode_sentences:
    result['decode'] = time_decoding(
      model, arrays[0], arrays[2], tgt_vocab.token_to_idx['<bos>'], args
    )
    result['decode_sentences_per_s'] = result['decode']['sentences_per_s']
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
