"""Population pieces without the loop: the roster a config asks for, the step computed
as one vmap, one member after another or in groups, and the log's handling of members
that diverge."""

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

from configs import tiny
from seq2seq_jax import errors, models
from seq2seq_jax.train import population, population_run, reporting, steps
from tests.test_population import RATES, SEEDS, assert_trees_close


def test_population_roster_defaults_and_errors() -> None:
  config = tiny.get_config()
  config.seed = 5
  config.population.size = 3
  assert population.roster(config) == [
    population.Member(i, 5 + i, config.train.learning_rate) for i in range(3)
  ]
  config.population.learning_rates = (0.1, 0.2)
  with pytest.raises(ValueError, match='learning_rates has 2 values but population.size is 3'):
    population.roster(config)
  config.population.learning_rates = (0.1, 0.0, 0.2)
  with pytest.raises(ValueError, match='must be positive'):
    population.roster(config)


def test_population_chunks_compute_the_same_step() -> None:
  """One vmap over all members, one member after another (`lax.map`) and groups of 2
  (`lax.map` over vmaps) give the same step."""
  model = models.build_model(
    src_vocab_size=12, tgt_vocab_size=13, embed_size=8, num_hiddens=8, num_layers=2, dropout=0.2
  )
  tx = steps.make_optimizer(learning_rate=1.0)
  states, keys = population.init_population(model, tx, SEEDS)
  rates = jnp.asarray(RATES, jnp.float32)
  rng = np.random.default_rng(0)
  batch = {
    'src': rng.integers(4, 12, (4, 5)).astype(np.int32),
    'src_len': np.array([5, 3, 2, 1], np.int32),
    'tgt_in': rng.integers(4, 13, (4, 6)).astype(np.int32),
    'tgt_out': rng.integers(4, 13, (4, 6)).astype(np.int32),
  }
  results = []
  for chunk in (0, 1, 2):
    step = jax.jit(
      functools.partial(population.population_train_step, model=model, tx=tx, chunk=chunk)
    )
    results.append(step(states, batch, keys, rates))
  assert results[0][1]['loss'].shape == (len(SEEDS),)
  for other in results[1:]:
    assert_trees_close(results[0], other, rtol=1e-5, atol=1e-6)


def test_population_log_reports_diverged_members(tmp_path: Path) -> None:
  dirs = [tmp_path / 'members' / str(i) for i in range(3)]
  for d in dirs:
    d.mkdir(parents=True)
  log = reporting.PopulationLog(tmp_path, dirs, enabled=True, initial_step=0)
  ok = {
    'loss': np.array([4.0, 8.0, 2.0]),
    'correct': np.ones(3),
    'tokens': np.full(3, 4.0),
    'grad_norm': np.ones(3),
  }
  log.step_metrics(ok)
  log.step_metrics({**ok, 'loss': np.array([4.0, np.nan, 2.0])})
  losses = log.flush(2, epoch=0)
  assert log.diverged == {1: 2}
  assert losses[0] == pytest.approx(1.0) and losses[2] == pytest.approx(0.5)
  population_run.check_alive(log, 3)  # two members are fine: training goes on
  log.step_metrics({**ok, 'loss': np.full(3, np.inf)})
  log.flush(3, epoch=0)
  with pytest.raises(errors.TrainingError, match='every member'):
    population_run.check_alive(log, 3)
  log.close()
  member1 = (dirs[1] / 'metrics.jsonl').read_text().splitlines()
  assert member1 == []  # the diverged member's lines stop
  assert len((dirs[0] / 'metrics.jsonl').read_text().splitlines()) == 1  # then it diverged


def test_population_benchmark_prints_the_ratio() -> None:
  """The benchmark's command line on tiny shapes: one JSON line with both costs."""
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'seq2seq_jax.benchmarks.population_speed',
      '--members=2',
      '--steps=1',
      '--batch_size=4',
      '--embed_size=8',
      '--num_hiddens=8',
      '--num_layers=1',
      '--run_steps=10',
    ],
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    capture_output=True,
    text=True,
    cwd=Path(__file__).resolve().parents[1],
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith('population of 2: ')
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['members'] == 2 and result['chunk'] == 1  # auto on CPU: one after another
  assert result['step_ratio'] == pytest.approx(
    result['population_step_ms'] / result['separate_steps_ms']
  )
  assert result['population_step_ms'] > 0 and result['separate_steps_ms'] > 0
