"""The translate command on a small trained workdir: sentences as arguments, a pipe,
the interactive prompt (in-process and on a real pseudo-terminal), empty, blank,
unknown, undecodable and very long lines, and beam search through the command line."""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import math
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq_jax import errors, inference, translate
from tests import fixtures_workdir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
SENTENCES = ['I see the cat.', 'You like the dog!', 'We have a book.']
LONG = 'the cat ' * 1000  # 8,000 characters


@pytest.fixture(scope='module')
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.trained_workdir(tmp_path_factory, 'attention')


@pytest.fixture(scope='module')
def translator(workdir: Path) -> inference.Translator:
  return inference.load(workdir)


def _cmd(workdir: Path, *args: str) -> list[str]:
  return [sys.executable, '-m', 'seq2seq_jax.translate', f'--workdir={workdir}', *args]


def _run(workdir: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(
    _cmd(workdir, *args), input=stdin, capture_output=True, env=ENV, cwd=ROOT, timeout=120
  )


def test_arguments_are_translated_one_line_each(workdir: Path, translator) -> None:  # noqa: ANN001
  beam = inference.load(workdir, beam_size=3)
  proc = _run(workdir, '--beam_size=3', *SENTENCES)
  assert proc.returncode == 0, proc.stderr.decode()
  assert proc.stdout.decode('utf-8').split('\n') == beam.translate(SENTENCES) + ['']
  assert all(line.strip() for line in beam.translate(SENTENCES))


def test_a_pipe_gives_one_line_per_line_in_order(workdir: Path, translator) -> None:  # noqa: ANN001
  lines = [
    SENTENCES[0].encode(),
    b'',  # empty
    b'   ',  # blank
    b'Xylophones quibble zzz.',  # unknown words
    LONG.encode(),  # far longer than the model's maximum length
    b'You like the dog!\r',  # a Windows line end
    b'caf\xff\xfe.',  # not UTF-8
    SENTENCES[2].encode(),
  ]
  proc = _run(workdir, stdin=b'\n'.join(lines) + b'\n')
  assert proc.returncode == 0, proc.stderr.decode()
  out = proc.stdout.decode('utf-8').split('\n')
  assert len(out) == len(lines) + 1 and out[-1] == ''
  expected = translator.translate([SENTENCES[0], '', '', 'Xylophones quibble zzz.', LONG])
  assert out[:5] == expected
  assert out[1] == out[2] == ''
  assert out[5] == translator.translate([SENTENCES[1]])[0]
  assert out[7] == translator.translate([SENTENCES[2]])[0]
  assert out[3] and out[4] and out[6]  # translated, not dropped
  err = proc.stderr.decode()
  assert f'warning: line 5 has 2001 tokens; the model reads at most {translator.max_len}' in err
  assert 'Traceback' not in err


def test_interactive_prompt_in_process(translator, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
  typed = iter(['I see the cat.', '', LONG, 'We have a book.'])

  def fake_input(prompt: str = '') -> str:
    try:
      return next(typed)
    except StopIteration:
      raise EOFError from None

  monkeypatch.setattr(builtins, 'input', fake_input)
  stdout, stderr = io.StringIO(), io.StringIO()
  count = translate.interactive(translator.translate, 'hello', stdout, stderr)
  assert count == 4
  expected = [translator.translate([s])[0] for s in ['I see the cat.', '', LONG, 'We have a book.']]
  assert stdout.getvalue() == ''.join(e + '\n' for e in expected)
  assert stderr.getvalue().startswith('hello\n') and stderr.getvalue().count('en> ') == 5


def test_interactive_prompt_on_a_terminal(workdir: Path, translator) -> None:  # noqa: ANN001
  """Standard input is a real pseudo-terminal: the prompt goes to stderr (stdout is a
  pipe), each line typed gets its translation, Ctrl-D ends the session."""
  main, secondary = pty.openpty()
  proc = subprocess.Popen(
    _cmd(workdir),
    stdin=secondary,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    env=ENV,
    cwd=ROOT,
  )
  os.close(secondary)
  try:
    os.write(main, b'I see the cat.\n\nWe have a book.\n\x04')  # \x04: Ctrl-D
    out, err = proc.communicate(timeout=120)
  finally:
    os.close(main)
  assert proc.returncode == 0, err.decode()
  expected = translator.translate(['I see the cat.', '', 'We have a book.'])
  assert out.decode('utf-8') == ''.join(e + '\n' for e in expected)
  assert 'Ctrl-D to quit' in err.decode() and err.decode().count('en> ') == 4


def test_a_missing_workdir_is_a_one_line_error(tmp_path: Path) -> None:
  proc = _run(tmp_path / 'nope', 'hello')
  assert proc.returncode == 1
  assert proc.stdout == b''
  assert proc.stderr.decode().strip().splitlines()[-1].startswith('translate: workdir ')


def _evaluate(workdir: Path, *args: str) -> tuple[dict, list[list[str]], str]:
  """evaluate in a child: its JSON line, the hypotheses file's lines split into columns,
  its standard error (checked to hold no INFO log line: Orbax's, JAX's or ours)."""
  cmd = [sys.executable, '-m', 'seq2seq_jax.evaluate', f'--workdir={workdir}', *args]
  proc = subprocess.run(cmd, capture_output=True, env=ENV, cwd=ROOT, timeout=120)
  err = proc.stderr.decode()
  assert proc.returncode == 0, err
  assert 'orbax' not in err.lower() and not re.search(r'^I\d{4} ', err, re.M), err
  result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
  text = Path(result['hypotheses']).read_text(encoding='utf-8')
  assert text.endswith('\n')
  return result, [line.split('\t') for line in text[:-1].split('\n')], err


def test_evaluate_takes_the_beam_size(workdir: Path, tmp_path: Path) -> None:
  """--pairs: a repeated source (translated once, its references scored together), a
  malformed and a blank line; the hypotheses file has a line per input line, in order:
  source, hypothesis, reference; standard error holds the warning and no INFO line."""
  pairs = tmp_path / 'pairs.tsv'
  lines = [
    'I see the cat.\tJe vois le chat.',
    'We have a book.\tNous avons un livre.',
    'I see the cat.\tJe vois un chat.',
    'bad line',
    '',
    'You like the dog!\tTu aimes le chien !',
  ]
  pairs.write_text(''.join(line + '\n' for line in lines))
  result, rows, err = _evaluate(
    workdir,
    f'--pairs={pairs}',
    f'--ensemble={workdir}',  # the same model twice: an ensemble that decodes as the model
    '--beam_size=2',
    '--alpha=0.5',
  )
  assert result['beam_size'] == 2 and result['alpha'] == 0.5 and result['sentences'] == 3
  assert result['ensemble'] == 2 and result['hypotheses'] == f'{pairs}.hyp'
  beam = inference.load(workdir, beam_size=2, alpha=0.5)
  cat, book, dog = beam.translate(['I see the cat.', 'We have a book.', 'You like the dog!'])
  assert rows == [
    ['I see the cat.', cat, 'Je vois le chat.'],
    ['We have a book.', book, 'Nous avons un livre.'],
    ['I see the cat.', cat, 'Je vois un chat.'],
    ['bad line', '', ''],
    ['', '', ''],
    ['You like the dog!', dog, 'Tu aimes le chien !'],
  ]
  assert f'{pairs}: skipped 1 malformed lines' in err  # warnings still show
  with pytest.raises(errors.UserError, match='beam size'):
    inference.load(workdir, beam_size=0)


def test_evaluate_split_writes_each_pair_in_order(
  workdir: Path,
  translator,  # noqa: ANN001
  tmp_path: Path,
) -> None:
  """--split: a line per pair of the split, in its order, with the pair's own reference."""
  from seq2seq_jax.data import input_pipeline

  split = 'full[44:60]'
  pairs = input_pipeline.load_pairs(translator.config.data, split)
  output = tmp_path / 'split.hyp'
  result, rows, _ = _evaluate(workdir, f'--split={split}', f'--output={output}')
  assert result['hypotheses'] == str(output) and len(rows) == len(pairs) == 16
  assert result['sentences'] == len({s for s, _ in pairs})
  hyps = translator.translate([s for s, _ in pairs])
  assert rows == [[s, h, t] for (s, t), h in zip(pairs, hyps, strict=True)]


def test_many_long_lines_are_named_then_counted(translator, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
  sentences = [LONG] * 8 + [SENTENCES[0]]
  ids = translator.encode(sentences)
  assert [len(i) for i in ids[:8]] == [translator.max_len] * 8
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == inference.MAX_LINE_WARNINGS + 1
  assert err[0].startswith('warning: line 1 has 2001 tokens')
  assert err[-1] == (
    f'warning: 8 of 9 lines in all had more than {translator.max_len} tokens and were cut'
  )


def test_nbest_lines_hold_k_scored_hypotheses(translator) -> None:  # noqa: ANN001
  """--nbest=3: one JSON object per input line, its hypotheses best first; the first is
  what beam search with the same beam translates; a blank line has none."""
  import json

  lines = translate.make_translate_fn(translator, None, nbest=3)(
    ['I see the cat.', '', 'We like a book.']
  )
  objects = [json.loads(line) for line in lines]
  assert [o['source'] for o in objects] == ['I see the cat.', '', 'We like a book.']
  assert objects[1]['hypotheses'] == []
  beam3 = dataclasses.replace(translator, beam_size=3)
  for o, best in zip(
    [objects[0], objects[2]], beam3.translate(['I see the cat.', 'We like a book.']), strict=True
  ):
    scores = [h['score'] for h in o['hypotheses']]
    assert 1 <= len(scores) <= 3 and scores == sorted(scores, reverse=True)
    assert o['hypotheses'][0]['text'] == best
  with pytest.raises(errors.UserError, match='do not go together'):
    translate.make_translate_fn(translator, '/tmp/plots', nbest=2)


@pytest.mark.parametrize('beam_size', [1, 3])
def test_a_translation_does_not_depend_on_its_batch(translator, beam_size: int) -> None:  # noqa: ANN001
  """The same sentence, the same output: alone, in batches of other sizes and company,
  in any order (greedy and beam)."""
  import random

  t = dataclasses.replace(translator, beam_size=beam_size, batch_size=16)
  pool = [
    f'{s} {v} {o}.'
    for s in ('I', 'You', 'He', 'We')
    for v in ('see', 'like')
    for o in ('the cat', 'a book', 'the car')
  ]
  alone = {s: t.translate([s])[0] for s in pool[:6]}
  rng = random.Random(0)
  for size in (5, 16, 24):  # shapes 8, 16 and two batches (16 + 8)
    batch = rng.sample(pool, size)
    for s, out in zip(batch, t.translate(batch), strict=True):
      if s in alone:
        assert out == alone[s], (size, s)
  assert t.translate(pool[:6]) == t.translate(pool[:6][::-1])[::-1]


def test_an_ensemble_loads_from_several_workdirs_and_checks_their_vocabularies(
  workdir: Path, translator, tmp_path: Path
) -> None:  # noqa: ANN001
  """Two copies of one workdir: an ensemble of 2 that translates as the model, greedy and
  beam; a copy whose target vocabulary differs (two words swapped) is refused."""
  import shutil

  pair = inference.load([workdir, workdir])
  assert pair.ensemble_size == 2 and pair.workdirs == (str(workdir), str(workdir))
  pool = SENTENCES + ['He likes the car.', 'I see a book.']
  assert pair.translate(pool) == translator.translate(pool)
  beam = dataclasses.replace(pair, beam_size=3)
  assert beam.translate(pool) == dataclasses.replace(translator, beam_size=3).translate(pool)
  other = tmp_path / 'other'
  shutil.copytree(workdir, other)
  vocab = json.loads((other / 'vocab_tgt.json').read_text())
  vocab[5], vocab[6] = vocab[6], vocab[5]
  (other / 'vocab_tgt.json').write_text(json.dumps(vocab))
  with pytest.raises(errors.UserError, match='one vocabulary'):
    inference.load([workdir, other])


def test_sampling_and_length_limits_through_the_command_line(workdir: Path, translator) -> None:  # noqa: ANN001
  """translate --sample --seed --top_k --temperature --max_len_ratio, on an ensemble of
  the workdir twice: the lines the in-process translator gives; the same seed, the same
  samples (whatever the batch); sampling with beam search is refused."""
  flags = ['--sample', '--seed=3', '--top_k=4', '--temperature=1.5', '--max_len_ratio=0.6']
  proc = _run(workdir, f'--ensemble={workdir}', *flags, *SENTENCES)
  assert proc.returncode == 0, proc.stderr.decode()
  sampler = inference.load(
    [workdir, workdir], sample=True, seed=3, top_k=4, temperature=1.5, max_len_ratio=0.6
  )
  lines = proc.stdout.decode('utf-8').split('\n')[:-1]
  assert lines == sampler.translate(SENTENCES)
  assert dataclasses.replace(sampler, batch_size=1).translate(SENTENCES) == lines
  assert dataclasses.replace(sampler, seed=4).translate(SENTENCES * 4) != lines * 4
  for s, out in zip(SENTENCES, lines, strict=True):
    assert len(out.split()) <= math.ceil(0.6 * len(translator.encode([s])[0]))
  proc = _run(workdir, '--sample', '--beam_size=2', 'hello')
  assert proc.returncode == 1 and 'beam_size=1' in proc.stderr.decode().splitlines()[-1]


def test_beam_never_scores_below_greedy_and_lists_are_complete(translator) -> None:  # noqa: ANN001
  """On every sentence of the made-up grammar (240, most never seen in training), beam 4's
  best scores at least as high as the greedy translation under the same scoring (the search
  only stops when no alive hypothesis can still win); its n-best lists hold 4 distinct
  hypotheses, best first, each scored as the model scores it."""
  import jax.numpy as jnp
  import numpy as np

  from seq2seq_jax.decoding import beam_search, greedy_search
  from tests import synthetic

  pool = [
    f'{s} {v} {o}{end}'.capitalize()
    for s, _ in synthetic.SUBJECTS
    for v, _ in synthetic.VERBS
    for o, _ in synthetic.OBJECTS
    for end in '.!'
  ]
  t, alpha = translator, 0.75
  src, src_len = input_pipeline_batch(t, pool)
  greedy = greedy_search.make_greedy(t.model, t.output_len)(t.params, src, src_len)
  rescore = jax_jit(beam_search.sequence_scores, t.model, alpha)
  greedy_score = np.asarray(rescore(t.params, src, src_len, greedy))
  search = beam_search.make_beam_search(t.model, beam_size=4, max_len=t.output_len, alpha=alpha)
  seqs, scores = (np.asarray(x) for x in search(t.params, src, src_len))
  worse = np.flatnonzero(scores[:, 0] < greedy_score - 1e-4)
  assert worse.size == 0, [(pool[i], scores[i, 0], greedy_score[i]) for i in worse[:5]]
  assert (scores[:, 0] > greedy_score + 1e-4).any(), 'want sentences where beam search wins'
  assert np.all(np.isfinite(scores)) and np.all(np.diff(scores, axis=1) <= 0)
  for j in range(4):
    rescored = rescore(t.params, src, src_len, jnp.asarray(seqs[:, j]))
    np.testing.assert_allclose(scores[:, j], rescored, rtol=1e-4, atol=1e-4)
  assert all(len({tuple(row) for row in seqs[b]}) == 4 for b in range(len(pool)))


def input_pipeline_batch(t: inference.Translator, sentences: list[str]):  # noqa: ANN201
  from seq2seq_jax.data import input_pipeline

  return input_pipeline.make_source_batch(t.encode(sentences), t.max_len)


def jax_jit(fn, model, alpha: float):  # noqa: ANN001, ANN201
  import jax

  return jax.jit(lambda *args: fn(model, *args, alpha=alpha))
