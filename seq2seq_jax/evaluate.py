"""Corpus BLEU and chrF of a trained workdir on held-out pairs.

  python -m seq2seq_jax.evaluate --workdir=DIR --pairs=FILE.tsv   # English<TAB>French lines
  python -m seq2seq_jax.evaluate --workdir=DIR --split=test        # the TFDS test split
  ... --beam_size=4 --alpha=0.75                                    # beam search (1: greedy)
  ... --ensemble=DIR2,DIR3                                          # an ensemble

The decoding flags are translate's (`--max_len_ratio`, `--sample`, ...).

All references of a repeated source count together (sacreBLEU's multi-reference BLEU).
The hypotheses go to a file beside the input (or `--output`); the scores, the number of
sentences and sentences/s are printed as one JSON object on the last line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags, logging

from seq2seq_jax import errors, inference, scoring
from seq2seq_jax.data import input_pipeline, text

FLAGS = flags.FLAGS
inference.define_flags(batch_size=512)
flags.DEFINE_string('pairs', None, 'A file of English<TAB>French lines.')
flags.DEFINE_string('split', None, "A TFDS split of the workdir's data (e.g. 'test').")
flags.DEFINE_string('output', None, 'Where to write the hypotheses (one per source).')


def read_pairs(path: str) -> list[tuple[str, str]]:
  """English<TAB>French lines (extra columns ignored); malformed lines are counted."""
  pairs, skipped = [], 0
  try:
    lines = Path(path).read_text(encoding='utf-8').splitlines()
  except UnicodeDecodeError as e:
    raise errors.UserError(f'{path} is not UTF-8 text ({e.reason} at byte {e.start})') from e
  for line in lines:
    parts = line.split('\t')
    if len(parts) >= 2 and parts[0].strip() and parts[1].strip():
      pairs.append((parts[0].strip(), parts[1].strip()))
    elif line.strip():
      skipped += 1
  if skipped:
    logging.warning('%s: skipped %d malformed lines', path, skipped)
  if not pairs:
    raise errors.UserError(f'{path} holds no English<TAB>French pairs')
  return pairs


def evaluate(translator: inference.Translator, pairs: list[tuple[str, str]]) -> tuple[dict, list]:
  refs = scoring.group_references([p[0] for p in pairs], [p[1] for p in pairs])
  sources = list(refs)
  t0 = time.perf_counter()
  hyps = translator.translate(sources)
  seconds = time.perf_counter() - t0
  references = [[translator.tgt_tok.reference(r) for r in refs[s]] for s in sources]
  scores = scoring.corpus_scores([text.score_form(h) for h in hyps], references)
  scores['sentences_per_s'] = len(sources) / max(seconds, 1e-9)
  return scores, list(zip(sources, hyps, strict=True))


def main(argv: list[str]) -> None:
  del argv
  with errors.one_line_errors('evaluate'):
    if bool(FLAGS.pairs) == bool(FLAGS.split):
      raise errors.UserError('give exactly one of --pairs=FILE or --split=NAME')
    translator = inference.load_from_flags(FLAGS)
    if FLAGS.pairs:
      pairs = read_pairs(FLAGS.pairs)
      output = FLAGS.output or f'{FLAGS.pairs}.hyp'
    else:
      pairs = input_pipeline.load_pairs(translator.config.data, FLAGS.split)
      output = FLAGS.output or str(Path(FLAGS.workdir) / f'{FLAGS.split}.hyp')
    scores, translations = evaluate(translator, pairs)
    Path(output).write_text(''.join(h + '\n' for _, h in translations), encoding='utf-8')
    result = {
      'bleu': round(scores['bleu'], 2),
      'chrf': round(scores['chrf'], 2),
      'sentences': scores['sentences'],
      'sentences_per_s': round(scores['sentences_per_s'], 1),
      'checkpoint_step': translator.step,
      'beam_size': FLAGS.beam_size,
      'alpha': FLAGS.alpha,
      'ensemble': translator.ensemble_size,
      'hypotheses': output,
    }
    print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
