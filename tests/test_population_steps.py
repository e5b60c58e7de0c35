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
from seq2seq_jax.train import population, reporting, runs, steps
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
  log = reporting.Reporter(tmp_path, dirs, enabled=True, initial_step=0)
  ok = {
    'loss': np.array([4.0, 8.0, 2.0]),
    'correct': np.ones(3),
    'tokens': np.full(3, 4.0),
    'grad_norm': np.ones(3),
  }
  log.step_metrics(1, ok)
  log.step_metrics(2, {**ok, 'loss': np.array([4.0, np.nan, 2.0])})
  first = log.flush(2, epoch=0)
  assert first[0] == 2 and np.isnan(first[1])
  assert list(log.diverged) == [1] and log.diverged[1][0] == 2
  lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['member'], r['step']) for r in lines] == [(0, 2), (2, 2)]
  assert lines[0]['train_loss'] == pytest.approx(1.0) and lines[1]['train_loss'] == 0.5
  log.check_alive()  # two members are fine: training goes on
  log.step_metrics(3, {**ok, 'loss': np.full(3, np.inf)})
  log.flush(3, epoch=0)
  with pytest.raises(errors.TrainingError, match='every member'):
    log.check_alive()
  log.close()
  member1 = (dirs[1] / 'metrics.jsonl').read_text().splitlines()
  assert member1 == []  # the diverged member's lines stop
  assert len((dirs[0] / 'metrics.jsonl').read_text().splitlines()) == 1  # then it diverged


def test_one_log_for_one_run_or_n(tmp_path: Path) -> None:
  """A single run's lines carry no `member` and go to its workdir; a population's go to
  each member's directory and, with `member`, to its workdir; both keep the lines up to
  the step a resumed run starts from, and both plot."""
  metrics = {'loss': 6.0, 'correct': 2.0, 'tokens': 3.0, 'grad_norm': 1.0}
  single, pop = tmp_path / 'single', tmp_path / 'pop'
  dirs = [pop / 'members' / str(i) for i in range(2)]
  for d in [single, *dirs]:
    d.mkdir(parents=True)
  for workdir, member_dirs, size in ((single, None, 1), (pop, dirs, 2)):
    log = reporting.Reporter(workdir, member_dirs)
    for step in (1, 2):
      log.step_metrics(step, {k: np.full(size, v) for k, v in metrics.items()})
      assert log.flush(step, epoch=0) is None
    log.eval(2, [{'val_loss': 1.5, 'val_bleu': 10.0, 'val_chrf': 20.0}] * size)
    log.close()
    assert (workdir / 'plots/loss.png').exists() and (workdir / 'plots/bleu.png').exists()
  lines = [json.loads(x) for x in (single / 'metrics.jsonl').read_text().splitlines()]
  assert [sorted(r) for r in lines[:1]] == [
    ['epoch', 'grad_norm', 'step', 'steps_per_s', 'tokens_per_s', 'train_accuracy', 'train_loss']
  ]
  assert lines[0]['train_loss'] == 2.0 and lines[2] == {
    'step': 2,
    'val_loss': 1.5,
    'val_bleu': 10.0,
    'val_chrf': 20.0,
  }
  tagged = [json.loads(x) for x in (pop / 'metrics.jsonl').read_text().splitlines()]
  pairs = [(r['step'], r['member']) for r in tagged]
  assert pairs == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 0), (2, 1)]
  assert (dirs[1] / 'metrics.jsonl').read_text().splitlines() == [
    json.dumps({k: v for k, v in r.items() if k != 'member'}) for r in tagged if r['member'] == 1
  ]
  resumed = reporting.Reporter(single, initial_step=1)
  assert len((single / 'metrics.jsonl').read_text().splitlines()) == 1
  assert [r['member'] for r in resumed.history] == [0]
  resumed.close()


def test_keep_best_saves_improvements_and_stops_after_patience() -> None:
  """A member's better BLEU or one among its best goes among its best checkpoints; the
  evaluations without a better BLEU for any member count towards train.patience."""

  class Ranks:
    def __init__(self, among: bool) -> None:
      self.among = among

    def ranks_among_best(self, bleu: float) -> bool:
      return self.among

  best = runs.KeepBest.start(2)
  assert best.judge(10, [5.0, 3.0], [Ranks(False), Ranks(False)]) == [5.0, 3.0]
  assert best.judge(20, [4.0, 3.0], [Ranks(True), Ranks(False)]) == [4.0, None]
  assert (best.bleu, best.step, best.evals_since_best) == ([5.0, 3.0], [10, 10], 1)
  assert best.stop_reason(2) is None and best.stop_reason(0) is None
  best.judge(30, [1.0, 1.0], [Ranks(False), Ranks(False)])
  assert 'no better validation BLEU in 2 evaluations' in best.stop_reason(2)
  assert best.judge(40, [1.0, 3.5], [Ranks(False), Ranks(False)]) == [None, 3.5]
  assert best.evals_since_best == 0
  again = runs.KeepBest.from_meta([best.meta(0), best.meta(1)])
  assert again == best


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
