"""Translate with a trained workdir.

  python -m seq2seq_jax.translate --workdir=DIR [--checkpoint=best|latest|STEP] [SENTENCE ...]

With sentences as arguments, translates them; otherwise reads standard input line by
line (an interactive prompt on a terminal). Writes exactly one line per input line to
standard output and nothing else there; logs and warnings go to standard error.
"""

from __future__ import annotations

import sys

from absl import app, flags

from seq2seq_jax import errors, inference

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
flags.DEFINE_integer('batch_size', 256, 'Sentences translated together.')
flags.mark_flag_as_required('workdir')


def interactive(translator: inference.Translator) -> None:
  print(
    f'seq2seq_jax: English -> French (step {translator.step}); Ctrl-D to quit.', file=sys.stderr
  )
  while True:
    try:
      line = input('en> ')
    except EOFError:
      print(file=sys.stderr)
      return
    print(translator.translate([line])[0], flush=True)


def main(argv: list[str]) -> None:
  sentences = argv[1:]
  with errors.one_line_errors('translate'):
    translator = inference.load(FLAGS.workdir, FLAGS.checkpoint, FLAGS.batch_size)
    if sentences:
      lines = sentences
    elif sys.stdin.isatty():
      interactive(translator)
      return
    else:
      lines = [line.rstrip('\r\n') for line in sys.stdin]
    for out in translator.translate(lines):
      sys.stdout.write(out + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
