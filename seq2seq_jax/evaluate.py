"""Corpus BLEU and chrF of a trained workdir on held-out pairs.

  python -m seq2seq_jax.evaluate --workdir=DIR --pairs=FILE.tsv   # source<TAB>target lines
  python -m seq2seq_jax.evaluate --workdir=DIR --split=test        # the workdir's test split
  python -m seq2seq_jax.evaluate --workdir=DIR --src_file=F --ref_file=G [--ref_file=H]
  ... --beam_size=4 --alpha=0.75                                    # beam search (1: greedy)
  ... --ensemble=DIR2,DIR3                                          # an ensemble

`--scored_on=book` scores any workdir on the book's normal form (comparable with word-token
runs). The decoding flags are translate's (`--max_len_ratio`, `--sample`, ...).

With `--pairs` and `--split`, all references of a repeated source count together
(sacreBLEU's multi-reference BLEU); with `--src_file`, line i of each `--ref_file` is a
reference of source line i (files of different line counts: a one-line error; lines with
an empty source are skipped and counted, their hypothesis left empty). A repeated source
is translated once. The hypotheses go to a file beside the input (`FILE.hyp`, or
`--output`; `DIR/SPLIT.hyp` for `--split`) that reads against the input: one line per
input line, in input order, tab-separated columns `source`, `hypothesis`, `reference`
(with `--src_file`, one reference column per `--ref_file`); a line that was not
translated (blank, malformed, an empty source) has an empty hypothesis, and tabs within
a sentence become spaces. Logs show warnings and errors only (standard error); the
scores, the number of sentences and sentences/s are printed as one JSON object on the
last line of standard output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import flags, logging

from seq2seq_jax import cli, compile_cache, errors, inference, scoring, translation_flags
from seq2seq_jax.data import input_pipeline, text

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (defined when run as a program, so the module imports
  without them)."""
  translation_flags.define(batch_size=512)
  flags.DEFINE_string('pairs', None, 'A file of source<TAB>reference lines.')
  flags.DEFINE_string('split', None, "A split of the workdir's data (e.g. 'test').")
  flags.DEFINE_string('src_file', None, 'Source sentences, one a line (with --ref_file).')
  flags.DEFINE_multi_string('ref_file', [], 'References, one a line (repeat for several).')
  flags.DEFINE_string(
    'output', None, 'Where to write the hypotheses (per input line: source, hypothesis, reference).'
  )
  flags.DEFINE_enum(
    'scored_on',
    'auto',
    ['auto', 'book'],
    "auto: the workdir's own form (the book's normal form for word tokens, detokenised text "
    "for SentencePiece); book: the book's normal form whatever the tokenizer (lowercased, "
    'punctuation split off), to compare a SentencePiece run with a word-token run.',
  )


def read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 text file; a one-line error naming the file and the line that
  is not UTF-8."""
  try:
    data = Path(path).read_bytes()
  except FileNotFoundError:
    raise errors.MissingFileError(f'{path} does not exist') from None
  except IsADirectoryError:
    raise errors.MissingFileError(f'{path} is a directory, not a text file') from None
  try:
    return data.decode('utf-8').removeprefix('\ufeff').splitlines()
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b'\n') + 1
    raise errors.DataError(f'{path}: line {line} is not valid UTF-8 ({e.reason})') from None


def read_pair_lines(path: str) -> list[tuple[str, str]]:
  """Every line of a source<TAB>reference file as (source, reference), stripped (extra
  columns ignored, '' for a missing one). A line without both is not evaluated: a blank
  line, or a malformed one (counted in a warning); a file without a pair is an error."""
  lines, skipped = [], 0
  for line in read_lines(path):
    parts = [part.strip() for part in line.split('\t')]
    lines.append((parts[0], parts[1] if len(parts) > 1 else ''))
    if not text.is_blank(line) and not all(lines[-1]):
      skipped += 1
  if skipped:
    logging.warning('%s: skipped %d malformed lines', path, skipped)
  if not any(all(line) for line in lines):
    raise errors.DataError(f'{path} holds no source<TAB>reference pairs')
  return lines


def read_pairs(path: str) -> list[tuple[str, str]]:
  """The pairs of `read_pair_lines`: the lines with a source and a reference."""
  return [line for line in read_pair_lines(path) if all(line)]


_NOT_IN_A_FIELD = str.maketrans({'\t': ' ', '\n': ' ', '\r': ' '})


def hypotheses_text(rows: list[tuple[str, str, list[str]]]) -> str:
  """The hypotheses file: per input line (source, hypothesis, its references), one line
  of tab-separated columns (tabs and line breaks within a sentence become spaces)."""
  return ''.join(
    '\t'.join(field.translate(_NOT_IN_A_FIELD) for field in (src, hyp, *refs)) + '\n'
    for src, hyp, refs in rows
  )


def write_hypotheses(output: str, rows: list[tuple[str, str, list[str]]]) -> None:
  """Writes `hypotheses_text(rows)` to `output` (a one-line error when its folder does not
  exist)."""
  path = Path(output)
  if not path.parent.is_dir():
    raise errors.MissingFileError(f'cannot write {output}: the folder {path.parent} does not exist')
  path.write_text(hypotheses_text(rows), encoding='utf-8')


def read_parallel(src_file: str, ref_files: list[str]) -> tuple[list[str], list[list[str]]]:
  """Source lines and, per reference file, its lines (one-line errors for differing
  line counts, naming both files and both counts)."""
  if not ref_files:
    raise errors.ConfigError('--src_file needs at least one --ref_file')
  sources = read_lines(src_file)
  streams = [read_lines(f) for f in ref_files]
  for ref_file, refs in zip(ref_files, streams, strict=True):
    if len(refs) != len(sources):
      raise errors.DataError(
        f'{src_file} has {len(sources)} lines but {ref_file} has {len(refs)}: '
        'a reference file holds one line per source line'
      )
  if not inference.nonblank(sources):
    raise errors.DataError(f'{src_file} holds no source sentences')
  return sources, streams


def score(
  translator: inference.Translator, sources: list[str], refs: list[list[str]], form: scoring.Form
) -> tuple[dict, list[str]]:
  """Scores of the translations of `sources` (none blank) against their references
  `refs`, with sacreBLEU's signatures and sentences/s; the hypotheses."""
  t0 = time.perf_counter()
  hyps = translator.translate(sources)
  seconds = time.perf_counter() - t0
  scores = scoring.score_translations(hyps, refs, form, signatures=True)
  scores['sentences_per_s'] = len(sources) / max(seconds, 1e-9)
  return scores, hyps


def evaluate_lines(
  translator: inference.Translator,
  sources: list[str],
  streams: list[list[str]],
  form: scoring.Form,
) -> tuple[dict, list[str]]:
  """Scores of the sources' translations against the references, line by line; the
  hypotheses (empty for blank sources, which are skipped and counted)."""
  keep = inference.nonblank(sources)
  if len(keep) < len(sources):
    logging.warning('skipped %d empty source lines', len(sources) - len(keep))
  references = [[refs[i] for refs in streams if not text.is_blank(refs[i])] for i in keep]
  scores, translated = score(translator, [sources[i] for i in keep], references, form)
  scores['skipped'] = len(sources) - len(keep)
  return scores, inference.scatter(len(sources), keep, translated, '')


def score_form(translator: inference.Translator, scored_on: str) -> scoring.Form:
  """The form the workdir's translations are scored on (`scoring.form_for`, or the
  book's with `scored_on='book'`)."""
  if scored_on == 'book':
    return scoring.BOOK_FORM
  tgt_lang = input_pipeline.languages(translator.config.data)[1]
  return scoring.form_for(translator.tgt_tok.kind, tgt_lang)


def evaluate(
  translator: inference.Translator, pairs: list[tuple[str, str]], form: scoring.Form
) -> tuple[dict, list]:
  """Scores on (source, reference) pairs, all references of a repeated source together
  (each distinct source translated once); the (source, hypothesis) pairs."""
  refs = scoring.group_references([p[0] for p in pairs], [p[1] for p in pairs])
  sources = list(refs)
  scores, hyps = score(translator, sources, [refs[s] for s in sources], form)
  return scores, list(zip(sources, hyps, strict=True))


def main(argv: list[str]) -> None:
  del argv
  cli.quiet_cli_logs()  # warnings and errors only, as translate
  compile_cache.enable()
  with errors.one_line_errors('evaluate'):
    if sum(map(bool, (FLAGS.pairs, FLAGS.split, FLAGS.src_file))) != 1:
      raise errors.ConfigError(
        'give exactly one of --pairs=FILE, --split=NAME or --src_file=FILE --ref_file=FILE'
      )
    if FLAGS.ref_file and not FLAGS.src_file:
      raise errors.ConfigError('--ref_file goes with --src_file')
    if FLAGS.src_file:
      sources, streams = read_parallel(FLAGS.src_file, FLAGS.ref_file)
      translator = translation_flags.load(FLAGS)
      form = score_form(translator, FLAGS.scored_on)
      scores, hyps = evaluate_lines(translator, sources, streams, form)
      rows = [
        (src, hyp, [refs[i] for refs in streams])
        for i, (src, hyp) in enumerate(zip(sources, hyps, strict=True))
      ]
      output = FLAGS.output or f'{FLAGS.src_file}.hyp'
    else:
      translator = translation_flags.load(FLAGS)
      if FLAGS.pairs:
        lines = read_pair_lines(FLAGS.pairs)
        output = FLAGS.output or f'{FLAGS.pairs}.hyp'
      else:
        lines = input_pipeline.load_pairs(translator.config.data, FLAGS.split)
        output = FLAGS.output or str(Path(FLAGS.workdir) / f'{FLAGS.split}.hyp')
      pairs = [line for line in lines if all(line)]
      scores, translations = evaluate(translator, pairs, score_form(translator, FLAGS.scored_on))
      hyp_of = dict(translations)  # each distinct source was translated once
      rows = [(src, hyp_of[src] if src and ref else '', [ref]) for src, ref in lines]
    write_hypotheses(output, rows)
    result = {
      'bleu': round(scores['bleu'], 2),
      'chrf': round(scores['chrf'], 2),
      'scored_on': scores['scored_on'],
      'bleu_signature': scores['bleu_signature'],
      'chrf_signature': scores['chrf_signature'],
      'sentences': scores['sentences'],
      'sentences_per_s': round(scores['sentences_per_s'], 1),
      'checkpoint_step': translator.step,
      'beam_size': FLAGS.beam_size,
      'alpha': FLAGS.alpha,
      'ensemble': translator.ensemble_size,
      'hypotheses': output,
    }
    if scores.get('skipped'):
      result['skipped'] = scores['skipped']
    print(json.dumps(result))


if __name__ == '__main__':
  define_flags()
  cli.run(main, flag_modules=[translation_flags])
