"""Populations with data parallelism and resume: `train.py` on 2 (forced) CPU devices runs
the vmapped population jitted with shardings (the default) or inside `jax.pmap`, and
matches the one-device population either way; a
population resumed from its checkpoints ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs import tiny
from seq2seq_jax import errors
from seq2seq_jax.train import loop
from tests import distributed_runs as runs
from tests import synthetic
from tests.test_population import assert_trees_close, saved_state

ROOT = Path(__file__).resolve().parents[1]
RATES = (0.005, 0.02)


def config_for(data_dir: Path, epochs: int = 2) -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.data.manual_dir = str(data_dir)
  config.data.data_dir = str(data_dir / 'tfds')
  config.train.num_epochs = epochs  # no dropout: each device draws its own masks
  config.population.size = len(RATES)
  config.population.learning_rates = RATES
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return synthetic.write_fra_txt(tmp_path_factory.mktemp('data'), n=80)


@pytest.fixture(scope='module')
def straight(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
  workdir = tmp_path_factory.mktemp('straight')
  loop.train_and_evaluate(config_for(data_dir), str(workdir))
  return workdir


def losses(path: Path) -> list[tuple[int, int, float]]:
  records = [json.loads(line) for line in path.read_text().splitlines()]
  return [(r['step'], r['member'], r['train_loss']) for r in records if 'train_loss' in r]


@pytest.mark.parametrize('mode', ['jit', 'pmap', 'members'])
def test_population_on_2_devices_matches_one_device(
  straight: Path, data_dir: Path, tmp_path: Path, mode: str
) -> None:
  workdir = tmp_path / mode
  env = runs.env_with_devices(2)
  cmd = [
    sys.executable,
    str(ROOT / 'train.py'),
    f'--config={ROOT / "configs/tiny.py"}',
    f'--workdir={workdir}',
    f'--config.data.manual_dir={data_dir}',
    f'--config.data.data_dir={data_dir / "tfds"}',
    f'--config.population.size={len(RATES)}',
    f'--config.population.learning_rates={RATES}',
    f'--config.train.parallel={"pmap" if mode == "pmap" else "jit"}',
  ]
  if mode == 'members':  # one member on each device, each with the whole batch
    cmd.append('--config.population.member_shards=2')
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  expected = {
    'jit': 'jit with shardings',
    'pmap': 'pmap',
    'members': 'jit with shardings, members over 2 device groups',
  }[mode]
  assert f'on 2 device(s), {expected}' in out.stderr
  assert '| member |' in out.stdout  # the summary table
  # Each device computes half the batch; psum then adds the halves: float tolerance.
  for member in range(len(RATES)):
    a = saved_state(workdir / 'members' / str(member))
    b = saved_state(straight / 'members' / str(member))
    assert int(a['step']) == int(b['step']) == 8
    assert_trees_close(a['params'], b['params'], rtol=1e-4, atol=1e-5)
  ours, theirs = losses(workdir / 'metrics.jsonl'), losses(straight / 'metrics.jsonl')
  assert [x[:2] for x in ours] == [x[:2] for x in theirs]
  np.testing.assert_allclose([x[2] for x in ours], [x[2] for x in theirs], rtol=1e-5)


def test_population_resumes_to_the_same_parameters(
  straight: Path, data_dir: Path, tmp_path: Path
) -> None:
  loop.train_and_evaluate(config_for(data_dir, epochs=1), str(tmp_path))
  assert saved_state(tmp_path / 'members' / '1')['step'] == 4
  result = loop.train_and_evaluate(config_for(data_dir, epochs=2), str(tmp_path))
  assert result['step'] == 8
  for member in range(len(RATES)):  # the same program on the same device: bit for bit
    a = saved_state(tmp_path / 'members' / str(member))
    b = saved_state(straight / 'members' / str(member))
    assert_trees_close(a, b, rtol=0, atol=0)
  assert losses(tmp_path / 'metrics.jsonl') == losses(straight / 'metrics.jsonl')


def test_population_resume_with_other_members_fails_clearly(straight: Path, data_dir: Path):
  config = config_for(data_dir)
  config.population.learning_rates = (0.005, 0.03)
  with pytest.raises(errors.TrainingError, match='member 1 in this workdir was'):
    loop.train_and_evaluate(config, str(straight))
