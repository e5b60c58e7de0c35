"""End-to-end training on made-up data: workdir contents, checkpoints, exact resume after
a kill, SIGTERM, half-written checkpoints, mismatched configs and the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from seq2seq_jax import errors, inference
from seq2seq_jax.train import averaging, checkpointing, loop, reporting
from tests import fixtures_workdir, synthetic

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}


def tiny_config(data_dir: Path, **train: object):
  config = tiny.get_config()
  config.data.manual_dir = str(data_dir)
  config.data.data_dir = str(data_dir / 'tfds')
  for key, value in train.items():
    config.train[key] = value
  return config


def train_cmd(data_dir: Path, workdir: Path, *overrides: str) -> list[str]:
  return [
    sys.executable,
    str(ROOT / 'train.py'),
    '--config',
    str(ROOT / 'configs/tiny.py'),
    f'--workdir={workdir}',
    f'--config.data.manual_dir={data_dir}',
    f'--config.data.data_dir={data_dir / "tfds"}',
    *overrides,
  ]


def final_params(workdir: Path) -> dict:
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  _, meta = ckpts.read_meta('latest')
  manager, step = ckpts.resolve('latest')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return restored['state']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return synthetic.write_fra_txt(tmp_path_factory.mktemp('data'), n=80)


TRAINED = ('--config.model.dropout=0.2', '--config.train.log_every_steps=1')  # as `trained`


@pytest.fixture(scope='module')
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
  """The tiny config with dropout 0.2, trained in this process for 8 steps, each logged:
  also the uninterrupted run that the kill test's resumed run must end at."""
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(data_dir, log_every_steps=1)
  config.model.dropout = 0.2
  result = loop.train_and_evaluate(config, str(workdir))
  return workdir, result


def test_workdir_holds_everything(trained: tuple[Path, dict]) -> None:
  workdir, result = trained
  assert result['step'] == 8  # 64 pairs / batch 16 x 2 epochs
  for name in (
    'config.json',
    'vocab_src.json',
    'vocab_tgt.json',
    'metrics.jsonl',
    'plots/loss.png',
    'plots/bleu.png',
    'result.json',
  ):
    assert (workdir / name).exists(), name
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train_lines = [r for r in records if 'train_loss' in r]
  eval_lines = [r for r in records if 'val_loss' in r]
  assert [r['step'] for r in train_lines] == [1, 2, 3, 4, 5, 6, 7, 8]
  assert all(np.isfinite(r['train_loss']) and r['train_loss'] > 0 for r in train_lines)
  assert train_lines[-1]['train_loss'] < train_lines[0]['train_loss']
  assert eval_lines and {'val_bleu', 'val_chrf', 'val_accuracy'} <= set(eval_lines[-1])
  config = json.loads((workdir / 'config.json').read_text())
  assert config['model']['num_hiddens'] == 16


def test_checkpoint_round_trip_is_exact(trained: tuple[Path, dict], tmp_path: Path) -> None:
  workdir, _ = trained
  state = final_params(workdir)
  ckpts = checkpointing.Checkpoints(tmp_path)
  ckpts.save(5, state, {'position': {'epoch': 1, 'index': 2}})
  ckpts.wait()
  step, restored, meta = ckpts.restore('latest', state)
  ckpts.close()
  assert step == 5 and meta['position'] == {'epoch': 1, 'index': 2}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def kill_after_checkpoint(cmd: list[str], workdir: Path, step: int) -> None:
  """Starts `cmd` and kills it (-9) once it has saved a checkpoint of `step` or later."""
  proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  latest = workdir / 'checkpoints' / 'latest'
  while time.time() < deadline and proc.poll() is None:
    if latest.exists() and any(p.name.isdigit() and int(p.name) >= step for p in latest.iterdir()):
      proc.kill()
      break
    time.sleep(0.05)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run finished before it could be killed'


def assert_same_run(straight: Path, resumed: Path, steps: int) -> None:
  """The same final state (bit for bit) and the same logged training losses."""
  a, b = final_params(straight), final_params(resumed)
  assert int(a['step']) == int(b['step']) == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  losses = [
    [
      json.loads(line)['train_loss']
      for line in (w / 'metrics.jsonl').read_text().splitlines()
      if 'train_loss' in line
    ]
    for w in (straight, resumed)
  ]
  assert losses[0] == losses[1] and len(losses[0]) == steps


def test_killed_run_resumes_to_the_same_parameters(
  trained: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
  """`train.py` with the `trained` fixture's settings, checkpointing every 2 steps, killed
  (-9) after a checkpoint of step 2 or later and run again, ends with the parameters
  (bit for bit) and logged losses of the fixture's uninterrupted run: dropout masks, data
  order and the optimizer resume where they were, mid-epoch (4 steps an epoch)."""
  overrides = [*TRAINED, '--config.train.checkpoint_every_steps=2']
  resumed = tmp_path / 'resumed'
  kill_after_checkpoint(train_cmd(data_dir, resumed, *overrides), resumed, 2)
  subprocess.run(train_cmd(data_dir, resumed, *overrides), env=ENV, check=True, capture_output=True)
  assert_same_run(trained[0], resumed, 8)


def test_a_killed_transformer_resumes_exactly_and_not_as_an_rnn(
  tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
  """The Transformer of fixtures_workdir (its data and sizes: the compiled steps are
  shared with it) trained for 12 steps in this process, and by `train.py` killed (-9)
  after a checkpoint of step 4 or later (3 steps an epoch: mid-epoch) and run again: the
  same parameters and losses; resuming its checkpoint with model.arch='rnn' is a one-line
  error naming arch."""
  data = fixtures_workdir.data_dir(tmp_path_factory)
  config = fixtures_workdir.use_transformer(tiny_config(data))
  config.data.data_dir = str(tmp_path / 'tfds')  # data_dir is shared by the xdist workers
  config.data.train_split, config.data.val_split = 'full[:48]', 'full[48:60]'
  settings = {
    'learning_rate': 0.02,
    'num_epochs': 4,
    'eval_every_steps': 12,
    'checkpoint_every_steps': 4,
    'log_every_steps': 1,
  }
  config.train.update(settings)
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  loop.train_and_evaluate(config, str(straight))
  overrides = [f'--config.model.{k}={config.model[k]}' for k in ('arch', 'num_heads', 'ffn_size')]
  overrides += [f'--config.model.num_hiddens={config.model.num_hiddens}']
  overrides += [f'--config.data.{k}={config.data[k]}' for k in ('train_split', 'val_split')]
  overrides += [f'--config.train.{k}={v}' for k, v in settings.items()]
  kill_after_checkpoint(train_cmd(data, resumed, *overrides), resumed, 4)
  subprocess.run(train_cmd(data, resumed, *overrides), env=ENV, check=True, capture_output=True)
  assert_same_run(straight, resumed, 12)
  as_rnn = tiny_config(data)  # model.arch='rnn'
  as_rnn.data.train_split, as_rnn.data.val_split = 'full[:48]', 'full[48:60]'
  with pytest.raises(errors.UserError) as info:
    loop.train_and_evaluate(as_rnn, str(straight))
  message = str(info.value)
  assert "arch: checkpoint 'transformer' vs config 'rnn'" in message and '\n' not in message


def test_sigterm_saves_and_exits_cleanly(data_dir: Path, tmp_path: Path) -> None:
  workdir = tmp_path / 'w'
  cmd = train_cmd(
    data_dir, workdir, '--config.train.num_epochs=1000', '--config.train.log_every_steps=1'
  )
  proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('\n') > 3):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert 'SIGTERM received' in err
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  step = ckpts.latest_step()
  ckpts.close()
  last = json.loads(metrics.read_text().splitlines()[-1])
  assert step is not None and step == last['step'] and step < 4000


def test_half_written_checkpoint_is_ignored(
  trained: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
  workdir = tmp_path / 'w'
  shutil.copytree(trained[0], workdir)  # a finished run of the tiny config: 8 steps
  # What a save killed half-way leaves: a temporary directory Orbax never renamed.
  junk = workdir / 'checkpoints' / 'latest' / '999.orbax-checkpoint-tmp-1234'
  junk.mkdir()
  (junk / 'garbage').write_bytes(b'\0' * 100)
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  assert ckpts.latest_step() == 8
  ckpts.close()
  out = subprocess.run(
    train_cmd(data_dir, workdir, *TRAINED, '--config.train.num_epochs=3'),
    env=ENV,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'resumed from step 8' in out.stderr
  assert final_params(workdir)['step'] == 12


def test_resume_with_another_model_fails_clearly(
  trained: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
  workdir, _ = trained
  out = subprocess.run(
    train_cmd(data_dir, workdir, *TRAINED, '--config.model.num_hiddens=32'),
    env=ENV,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'num_hiddens' in last and 'Traceback' not in out.stderr


def test_bad_config_value_is_one_line(data_dir: Path, tmp_path: Path) -> None:
  out = subprocess.run(
    train_cmd(data_dir, tmp_path / 'w', '--config.model.decoder=lstm'),
    env=ENV,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith('error: model.decoder must be one of')
  assert not (tmp_path / 'w').exists()  # the workdir it made (tokenizers copied) is removed


def test_a_failed_start_leaves_no_workdir_it_created(data_dir: Path, tmp_path: Path) -> None:
  missing = tiny_config(data_dir)
  missing.data.manual_dir = str(tmp_path / 'no_such_data')
  new = tmp_path / 'runs' / 'new'
  with pytest.raises(errors.UserError, match='does not exist'):
    loop.train_and_evaluate(missing, str(new))
  assert not (tmp_path / 'runs').exists()  # nor the folder made above it
  bad_model = tiny_config(data_dir)  # fails after the data is prepared into the workdir
  bad_model.model.decoder = 'nope'
  with pytest.raises(ValueError, match='model.decoder must be one of'):
    loop.train_and_evaluate(bad_model, str(new))
  assert not (tmp_path / 'runs').exists()
  existing = tmp_path / 'existing'  # a workdir that was there is left as it was
  existing.mkdir()
  (existing / 'notes.txt').write_text('mine')
  with pytest.raises(errors.UserError, match='does not exist'):
    loop.train_and_evaluate(missing, str(existing))
  assert [p.name for p in existing.iterdir()] == ['notes.txt']


def test_unknown_config_field_is_one_line_with_the_closest_names(
  data_dir: Path, tmp_path: Path
) -> None:
  out = subprocess.run(
    train_cmd(data_dir, tmp_path / 'w', '--config.model.dropot=0.1'),
    env=ENV,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: unknown config field 'model.dropot'; did you mean model.dropout")
  assert not (tmp_path / 'w').exists()
  config = tiny.get_config()
  message = errors.unknown_config_field(config, ['--config.modl.num_layers=1'])
  assert message.startswith("unknown config field 'modl.num_layers'; did you mean model.num_layers")
  assert errors.unknown_config_field(config, ['--config.model.num_layers=1']) is None
  assert errors.unknown_config_field(config, ['--config.model']) is None  # a whole group


def test_non_finite_loss_names_the_step(tmp_path: Path) -> None:
  report = reporting.Reporter(tmp_path)
  ok = {
    'loss': np.float32(2.0),
    'correct': np.float32(1),
    'tokens': np.float32(4),
    'grad_norm': np.float32(1),
  }
  report.step_metrics(1, ok)
  report.step_metrics(2, {**ok, 'loss': np.float32(np.nan)})
  assert report.flush(2) == (2, pytest.approx(np.nan, nan_ok=True))
  report.close()


def test_translate_and_evaluate_clis(trained: tuple[Path, dict], tmp_path: Path) -> None:
  workdir, _ = trained
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'seq2seq_jax.translate',
      f'--workdir={workdir}',
      'I see the cat.',
      '',
      'We like the dog!',
    ],
    env=ENV,
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.split('\n')
  assert len(lines) == 4 and lines[1] == '' and lines[3] == ''
  pairs = tmp_path / 'pairs.tsv'
  pairs.write_text('I see the cat.\tJe vois le chat.\nbad line\nWe like the dog!\tNous aimons.\n')
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'seq2seq_jax.evaluate',
      f'--workdir={workdir}',
      f'--pairs={pairs}',
      '--checkpoint=latest',
    ],
    env=ENV,
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['sentences'] == 2 and 0 <= result['bleu'] <= 100 and result['sentences_per_s'] > 0
  # One line per input line (the malformed one untranslated): source, hypothesis, reference.
  rows = [line.split('\t') for line in Path(result['hypotheses']).read_text().splitlines()]
  assert [r[0] for r in rows] == ['I see the cat.', 'bad line', 'We like the dog!']
  assert [r[2] for r in rows] == ['Je vois le chat.', '', 'Nous aimons.'] and rows[1][1] == ''
  hyps = [rows[0][1], rows[2][1]]
  # Source and reference files, one sentence a line; the second reference file is the
  # hypotheses themselves, so BLEU is 100; an empty source line is skipped and counted.
  src, ref, own = tmp_path / 'src.txt', tmp_path / 'ref.txt', tmp_path / 'own.txt'
  src.write_text('I see the cat.\n\nWe like the dog!\n')
  ref.write_text('Je vois le chat.\nRien.\nNous aimons.\n')
  own.write_text(f'{hyps[0]}\n\n{hyps[1]}\n')
  cmd = [sys.executable, '-m', 'seq2seq_jax.evaluate', f'--workdir={workdir}']
  cmd += ['--checkpoint=latest', f'--src_file={src}', f'--ref_file={ref}']
  out = subprocess.run(
    [*cmd, f'--ref_file={own}'], env=ENV, capture_output=True, text=True, cwd=ROOT
  )
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert (result['sentences'], result['skipped'], result['bleu']) == (2, 1, 100.0)
  assert Path(result['hypotheses']).read_text().split('\n') == [
    f'I see the cat.\t{hyps[0]}\tJe vois le chat.\t{hyps[0]}',
    '\t\tRien.\t',  # an empty source: skipped, its references kept in their columns
    f'We like the dog!\t{hyps[1]}\tNous aimons.\t{hyps[1]}',
    '',
  ]
  ref.write_text('Je vois le chat.\nNous aimons.\n')
  out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
    f'evaluate: {src} has 3 lines but {ref} has 2: a reference file holds one line per source line'
  )
  out = subprocess.run(
    [sys.executable, '-m', 'seq2seq_jax.translate', f'--workdir={tmp_path / "nothing"}', 'hi'],
    env=ENV,
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert out.returncode == 1 and out.stderr.strip().startswith('translate: ')


def test_sentencepiece_with_length_buckets(data_dir: Path, tmp_path: Path) -> None:
  config = tiny_config(data_dir)
  config.data.tokenizer = 'sentencepiece'
  config.data.vocab_size = 60
  config.data.num_steps = 0  # length buckets, max_len from the 99% quantile
  config.data.buckets = ()
  config.data.num_buckets = 2  # two of the automatic buckets: two compiled shapes, not up to 8
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['step'] >= 8 and np.isfinite(result['val_loss'])  # 2 epochs of buckets
  assert (tmp_path / 'spm_src.model').exists() and (tmp_path / 'spm_tgt.model').exists()
  translator = inference.load(tmp_path, 'latest')
  out = translator.translate(['I see the cat.', ''])
  assert len(out) == 2 and out[1] == '' and isinstance(out[0], str)
  assert translator.max_len >= 8  # subword sequences of these pairs


def test_patience_stops_early_and_stays_stopped(data_dir: Path, tmp_path: Path) -> None:
  """train.patience=1: a run whose validation BLEU cannot improve (a learning rate too
  small to change a translation) stops at the second evaluation; run again, it resumes,
  sees the stop it saved and trains no further."""
  config = tiny_config(data_dir, num_epochs=10, eval_every_steps=2, patience=1, learning_rate=1e-9)
  config.train.schedule = 'constant'
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 4, result  # evaluations at 2 (the first best) and 4 (no better)
  assert 'train.patience' in result['stopped']
  evals = [
    json.loads(line)['step']
    for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()
    if 'val_bleu' in line
  ]
  assert evals == [2, 4]  # the stop step is not evaluated twice
  again = loop.train_and_evaluate(config, str(tmp_path))
  assert again['step'] == 4 and 'train.patience' in again['stopped']
  assert checkpointing.Checkpoints(tmp_path, read_only=True).latest_step() == 4


def test_checkpoint_averaging(trained: tuple[Path, dict], tmp_path: Path) -> None:
  """`average`: identical trees average to themselves bit for bit; the averaged checkpoint
  of the last 2 steps (4 and 8) is their mean and loads as --checkpoint=averaged."""
  tree = {'a': np.float32([0.1, 0.7, -3.3]), 'b': {'c': np.float32(2.5)}}
  same = averaging.average_trees([tree, tree, tree])
  for x, y in zip(jax.tree.leaves(same), jax.tree.leaves(tree), strict=True):
    np.testing.assert_array_equal(x, y)
    assert x.dtype == y.dtype
  workdir = tmp_path / 'w'
  shutil.copytree(trained[0], workdir)
  with pytest.raises(errors.UserError, match='keep_checkpoints'):
    averaging.average_checkpoints(workdir, last=5)
  with pytest.raises(checkpointing.CheckpointError, match='seq2seq_jax.average'):
    inference.load(workdir, checkpoint='averaged')
  done = averaging.average_checkpoints(workdir, last=2)
  assert done['step'] == 8 and done['averaged_steps'] == [4, 8]
  steps_params = [inference.load(workdir, checkpoint=str(s)).params for s in (4, 8)]
  averaged = inference.load(workdir, checkpoint='averaged')
  assert averaged.step == 8
  for got, a, b in zip(
    *(jax.tree.leaves(p) for p in (averaged.params, *steps_params)), strict=True
  ):
    np.testing.assert_allclose(got, (np.float64(a) + np.float64(b)) / 2, rtol=1e-6)
  assert averaged.translate(['I see the cat.'])  # it translates


def test_the_best_k_checkpoints_are_kept_and_averaged(data_dir: Path, tmp_path: Path) -> None:
  """train.keep_best=3 with 4 evaluations: `checkpoints/best/` keeps the 3 steps of highest
  validation BLEU (from metrics.jsonl), 'best' is the highest, `average --best=2` is the
  mean of the top two."""
  config = tiny_config(data_dir, eval_every_steps=2, keep_best=3, learning_rate=0.02)
  loop.train_and_evaluate(config, str(tmp_path))
  bleu = {
    r['step']: r['val_bleu']
    for r in map(json.loads, (tmp_path / 'metrics.jsonl').read_text().splitlines())
    if 'val_bleu' in r
  }
  assert sorted(bleu) == [2, 4, 6, 8] and len(set(bleu.values())) > 1, bleu
  expected = sorted(bleu, key=lambda s: (-bleu[s], -s))[:3]  # of equal BLEU, the later
  ckpts = checkpointing.Checkpoints(tmp_path, read_only=True)
  assert [s for s, _ in ckpts.best_steps()] == expected
  assert [b for _, b in ckpts.best_steps()] == pytest.approx([bleu[s] for s in expected])
  assert ckpts.resolve('best')[1] == expected[0]
  ckpts.close()
  with pytest.raises(errors.UserError, match='keep_best'):
    averaging.average_checkpoints(tmp_path, best=4)
  with pytest.raises(errors.UserError, match='one of --last'):
    averaging.average_checkpoints(tmp_path, last=2, best=2)
  done = averaging.average_checkpoints(tmp_path, best=2)
  assert done['averaged_steps'] == sorted(expected[:2])
  top = [inference.load(tmp_path, checkpoint=str(s)).params for s in expected[:2]]
  averaged = inference.load(tmp_path, checkpoint='averaged').params
  for got, a, b in zip(*(jax.tree.leaves(p) for p in (averaged, *top)), strict=True):
    np.testing.assert_allclose(got, (np.float64(a) + np.float64(b)) / 2, rtol=1e-6)
