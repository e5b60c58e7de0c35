"""Translate with a trained workdir.

  python -m seq2seq_jax.translate --workdir=DIR [--ensemble=DIR2,DIR3]
      [--checkpoint=best|latest|averaged|STEP] [--beam_size=K] [--alpha=A] [--nbest=K]
      [--sample [--temperature=T] [--top_k=K] [--seed=S]] [--max_len=N]
      [--max_len_ratio=R] [--plot_attention=PLOTDIR [--attention_heads]] [SENTENCE ...]

With sentences as arguments, translates them; otherwise reads standard input line by
line: from a pipe or a file, all lines in batches; on a terminal, an interactive prompt
(a line in, its translation out, until end of input). Writes exactly one line per input
line to standard output and nothing else there (an empty line gives an empty line);
logs, warnings and the prompt go to standard error. A line longer than the model's
maximum length is translated from its first tokens, with a warning.

`--beam_size=K` (K > 1) decodes with beam search, scoring hypotheses by
`log P / length**alpha`; `--nbest=K` writes one JSON object per input line instead, with
its K best translations and their scores; `--sample` draws each translation from the
model (`--temperature`, `--top_k`; the same `--seed` gives the same samples, whatever
the batching); `--max_len=N` and `--max_len_ratio=R` stop an output at N tokens and at
R times its source's tokens (`<eos>` counted on both sides); `--plot_attention=PLOTDIR`
writes a heatmap of the attention weights per sentence (models with attention: the
Bahdanau decoder's weights; the Transformer's last-block cross-attention, averaged over
heads, or with `--attention_heads` one panel per head). `--ensemble=DIR2,DIR3` (more
workdirs beside `--workdir`), or a population's workdir, translate as an ensemble: the
mean of the members' log-probabilities, in one compiled search. `--checkpoint=auto` (the
default) takes the averaged checkpoint a run wrote at its end (`train.average_last`),
else the best by validation BLEU.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from absl import flags

from seq2seq_jax import attention_plot, cli, compile_cache, errors, inference, translation_flags
from seq2seq_jax.data import input_pipeline

FLAGS = flags.FLAGS
translation_flags.define(batch_size=256)
flags.DEFINE_string(
  'plot_attention', None, 'Write an attention heatmap per sentence into this directory.'
)
flags.DEFINE_bool(
  'attention_heads',
  False,
  'With --plot_attention: one panel per attention head (model.arch=transformer: the last '
  "block's cross-attention) instead of their mean.",
)
flags.DEFINE_integer(
  'nbest',
  0,
  'Write the K best translations of each line as one JSON object per line '
  '({"source", "hypotheses": [{"text", "score"}, ...]}) instead of plain text.',
  lower_bound=0,
)
TranslateFn = Callable[[Sequence[str]], list[str]]


def make_translate_fn(
  translator: inference.Translator, plot_dir: str | None, nbest: int = 0, heads: bool = False
) -> TranslateFn:
  """Sentences -> translations; with `plot_dir`, also writes their attention heatmaps (and
  fails at once, with a one-line error, when the model has no attention); with `nbest`,
  each output line is a JSON object with the K best translations and their scores."""
  if nbest:
    if plot_dir:
      raise errors.ConfigError('--nbest and --plot_attention do not go together')

    def lines(sentences: Sequence[str]) -> list[str]:
      return [
        json.dumps(
          {
            'source': s,
            'hypotheses': [{'text': t, 'score': round(p, 6)} for t, p in hyps],
          },
          ensure_ascii=False,
        )
        for s, hyps in zip(sentences, translator.nbest(sentences, nbest), strict=True)
      ]

    return lines
  if not plot_dir:
    if heads:
      raise errors.ConfigError('--attention_heads goes with --plot_attention=PLOTDIR')
    return translator.translate
  return attention_plot.Plotter(translator, plot_dir, heads=heads)


def interactive(
  translate_fn: TranslateFn,
  banner: str = '',
  stdout: TextIO | None = None,
  stderr: TextIO | None = None,
) -> int:
  """The prompt: reads lines with `input` until end of input (Ctrl-D) or Ctrl-C, writes
  each translation to `stdout`. Returns the number of lines translated."""
  stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
  if banner:
    print(banner, file=stderr)
  # input() writes its prompt to stdout; keep stdout for translations when it is
  # redirected, and show the prompt on the terminal (stderr) instead.
  prompt_on_stdout = stdout.isatty()
  count = 0
  while True:
    try:
      if prompt_on_stdout:
        line = input('en> ')
      else:
        print('en> ', end='', file=stderr, flush=True)
        line = input()
    except (EOFError, KeyboardInterrupt):
      print(file=stderr)
      return count
    print(translate_fn([line])[0], file=stdout, flush=True)
    count += 1


def translate_stream(translate_fn: TranslateFn, lines: Sequence[str], stdout: TextIO) -> None:
  """One output line per input line, in order."""
  for out in translate_fn([line.rstrip('\r\n') for line in lines]):
    stdout.write(out + '\n')
  stdout.flush()


def main(argv: list[str]) -> None:
  sentences = argv[1:]
  cli.quiet_cli_logs()
  compile_cache.enable()
  with errors.one_line_errors('translate'):
    translator = translation_flags.load(FLAGS)
    translate_fn = make_translate_fn(
      translator, FLAGS.plot_attention, FLAGS.nbest, FLAGS.attention_heads
    )
    if sentences:
      translate_stream(translate_fn, sentences, sys.stdout)
    elif sys.stdin.isatty():
      decoding = 'greedy' if FLAGS.beam_size == 1 else f'beam {FLAGS.beam_size}'
      decoding = 'sampling' if FLAGS.sample else decoding
      if translator.ensemble_size > 1:
        decoding += f', an ensemble of {translator.ensemble_size}'
      src, tgt = input_pipeline.languages(translator.config.data)
      banner = f'seq2seq_jax: {src} -> {tgt} (step {translator.step}, {decoding}); Ctrl-D to quit.'

      interactive(translate_fn, banner)
    else:
      sys.stdin.reconfigure(errors='replace')  # a stray byte is no reason to stop
      translate_stream(translate_fn, sys.stdin.readlines(), sys.stdout)


if __name__ == '__main__':
  cli.run(main, flag_modules=[translation_flags])
