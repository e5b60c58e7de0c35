"""The export (`seq2seq_jax.export`) and its runner (`seq2seq_jax.exported`): translations
identical to `translate`'s (greedy, beam 4 and its n-best) for the attention GRU, the
Transformer and an ensemble; the runner without the training stack; bfloat16 parameters;
broken folders; and the train step and searches lowering for cuda and tpu here."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import build, export, exported, inference
from seq2seq_jax.models import ops
from seq2seq_jax.train import steps
from tests import fixtures_workdir, synthetic

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
SOURCES = [src for src, _ in synthetic.make_pairs(60)[48:60]] + ['the the the the the the the']
VAL_SPLIT = fixtures_workdir.VAL_SPLIT


def _export(tmp: Path, workdirs: list[Path], **kw) -> Path:  # noqa: ANN003
  out = tmp / 'model'
  export.export(workdirs, out, platforms=('cpu',), score_split='', **kw)
  return out


@pytest.fixture(scope='module')
def attention_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.trained_workdir(tmp_path_factory, 'attention')


@pytest.fixture(scope='module')
def attention_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.exported_model(tmp_path_factory, 'attention')  # cpu, cuda and tpu


def _same_as_translate(model_dir: Path, workdirs: list[Path], nbest: bool = True) -> None:
  """Greedy and beam-4 translations as `translate`'s; with `nbest`, the whole n-best lists
  and their scores too (translate's n-best search is a program of its own: compiled for
  one model only, the exported side is the beam program either way)."""
  searcher = exported.load(model_dir, max_batch=8)
  greedy = inference.load(workdirs, batch_size=8)
  beam = inference.load(workdirs, batch_size=8, beam_size=4)
  assert [h[0].text for h in searcher.translate(SOURCES)] == greedy.translate(SOURCES)
  assert [h[0].text for h in searcher.translate(SOURCES, beam=True)] == beam.translate(SOURCES)
  if not nbest:
    return
  ours = searcher.translate(SOURCES, beam=True, nbest=4)
  theirs = beam.nbest(SOURCES, 4)
  assert [[h.text for h in hs] for hs in ours] == [[t for t, _ in hs] for hs in theirs]
  np.testing.assert_allclose(
    [h.score for hs in ours for h in hs], [s for hs in theirs for _, s in hs], rtol=1e-5
  )


def test_attention_model_translates_as_translate_does(attention_model, attention_dir) -> None:  # noqa: ANN001
  _same_as_translate(attention_model, [attention_dir])
  manifest = json.loads((attention_model / 'manifest.json').read_text())
  assert manifest['platforms']['cpu']['greedy'] == 'greedy.cpu.jaxexport'
  assert manifest['model']['arch'] == 'rnn' and manifest['decoding']['beam_size'] == 4
  score = manifest['test_score']
  distinct = len({src for src, _ in synthetic.make_pairs(60)[48:60]})  # repeated sources once
  assert score['split'] == VAL_SPLIT and score['sentences'] == distinct
  assert 0 <= score['bleu'] <= 100 and 0 <= score['chrf'] <= 100
  assert set(manifest['files']) == {p.name for p in attention_model.iterdir()} - {'manifest.json'}


def test_transformer_and_ensemble_translate_as_translate_does(
  tmp_path_factory: pytest.TempPathFactory, attention_dir: Path
) -> None:
  transformer = fixtures_workdir.trained_workdir(tmp_path_factory, 'transformer')
  tmp = tmp_path_factory.mktemp('exported_more')
  _same_as_translate(_export(tmp / 't', [transformer]), [transformer], nbest=False)
  members = [attention_dir, attention_dir]  # one shape, stacked parameters: an ensemble of 2
  model_dir = _export(tmp / 'e', members)
  assert json.loads((model_dir / 'manifest.json').read_text())['model']['ensemble'] == 2
  _same_as_translate(model_dir, members, nbest=False)


def test_runner_needs_no_training_stack(attention_model: Path, attention_dir: Path) -> None:
  proc = subprocess.run(
    [sys.executable, 'tests/no_training_stack.py', 'seq2seq_jax.exported']
    + [f'--model={attention_model}', '--nbest=2', *SOURCES[:3]],
    capture_output=True,
    env=ENV,
    cwd=ROOT,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr.decode()
  records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
  expected = inference.load(attention_dir, beam_size=4).nbest(SOURCES[:3], 2)
  assert [[h['text'] for h in r['hypotheses']] for r in records] == [
    [t for t, _ in hs] for hs in expected
  ]


def test_bfloat16_parameters_are_the_rounded_float32_ones(tmp_path: Path, attention_dir) -> None:  # noqa: ANN001
  model_dir = _export(tmp_path, [attention_dir], dtype='bfloat16')
  searcher = exported.load(model_dir)
  full = jax.tree.leaves(inference.load(attention_dir).params)
  assert all(x.dtype == jnp.bfloat16 for x in searcher.params)
  for ours, theirs in zip(searcher.params, full, strict=True):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs.astype(jnp.bfloat16)))
  assert all(h[0].text for h in searcher.translate(SOURCES[:4]))


def _copy(src: Path, dst: Path) -> Path:
  dst.mkdir()
  for p in src.iterdir():
    (dst / p.name).write_bytes(p.read_bytes())
  return dst


def test_broken_folders_are_one_line_errors(tmp_path: Path, attention_model: Path) -> None:
  def problem(folder: Path) -> str:
    with pytest.raises(exported.ExportError) as e:
      exported.load(folder)
    assert '\n' not in str(e.value)
    return str(e.value)

  assert 'not a folder' in problem(tmp_path / 'nowhere')
  incomplete = _copy(attention_model, tmp_path / 'incomplete')
  (incomplete / 'beam.cpu.jaxexport').unlink()
  assert 'incomplete: beam.cpu.jaxexport missing' in problem(incomplete)
  corrupted = _copy(attention_model, tmp_path / 'corrupted')
  data = bytearray((corrupted / 'params.npz').read_bytes())
  data[-100] ^= 0xFF
  (corrupted / 'params.npz').write_bytes(bytes(data))
  assert 'params.npz is corrupted' in problem(corrupted)
  for field, value, says in (
    ('format_version', 99, 'format version 99'),
    ('calling_convention_version', 1, 'export it again with this JAX'),
  ):
    changed = _copy(attention_model, tmp_path / field)
    manifest = json.loads((changed / 'manifest.json').read_text())
    manifest[field] = value
    (changed / 'manifest.json').write_text(json.dumps(manifest))
    assert says in problem(changed)
  proc = subprocess.run(
    [sys.executable, '-m', 'seq2seq_jax.exported', f'--model={corrupted}', 'hello'],
    capture_output=True,
    env=ENV,
    cwd=ROOT,
    timeout=120,
  )
  assert proc.returncode == 1 and proc.stdout == b''
  assert proc.stderr.decode().strip().count('\n') == 0 and 'corrupted' in proc.stderr.decode()
  with pytest.raises(exported.ExportError, match='exported for tpu, and JAX runs on cpu'):
    manifest = json.loads((attention_model / 'manifest.json').read_text())
    manifest['platforms'] = {'tpu': manifest['platforms']['cpu']}
    other = _copy(attention_model, tmp_path / 'tpu_only')
    (other / 'manifest.json').write_text(json.dumps(manifest))
    exported.load(other)


@pytest.mark.parametrize('decoder', ['attention', 'transformer'])
def test_train_step_lowers_for_cuda_and_tpu(tmp_path_factory, decoder: str) -> None:  # noqa: ANN001
  """With the plain kernel forms, as on a GPU or TPU: a construct with no cuda or tpu
  lowering fails here (the searches are lowered for them by the `attention_model` export)."""
  config = build.workdir_config(fixtures_workdir.trained_workdir(tmp_path_factory, decoder))
  config.model.dtype = 'bfloat16'
  config.model.dropout = 0.1
  model = build.model(config, 40, 50)
  tx = build.optimizer(config, total_steps=10)
  state = jax.eval_shape(lambda: steps.init_state(model, tx, jax.random.key(0)))
  shapes = {'src': (4, 6), 'src_len': (4,), 'tgt_in': (4, 5), 'tgt_out': (4, 5)}
  batch = {k: jax.ShapeDtypeStruct(s, jnp.int32) for k, s in shapes.items()}
  key = jax.eval_shape(lambda: jax.random.key(0))
  with ops.use_forms('plain'):
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, label_smoothing=0.1))
    exp = jax.export.export(step, platforms=('cuda', 'tpu'))(state, batch, key)
  assert exp.platforms == ('cuda', 'tpu')
  new_state, metrics = jax.tree.unflatten(exp.out_tree, exp.out_avals)
  shapes_of = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
  assert shapes_of(new_state.params) == shapes_of(state.params) and metrics
