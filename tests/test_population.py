"""Populations (seq2seq_jax/population.py) on made-up data: member i of a vmapped
population of 4 trains to the same parameters as a single run with member i's seed and
learning rate; the workdir holds per-member metrics, checkpoints and the winner."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from seq2seq_jax import api, inference
from seq2seq_jax.models import transformer
from seq2seq_jax.train import checkpointing, loop, population, steps
from tests import synthetic

SEEDS = (0, 7, 1, 3)  # member 0 has the config's seed: it is the config's single run
RATES = (0.005, 0.02, 0.002, 0.01)
STEPS = 8  # 64 pairs / batch 16 x 2 epochs


def population_config(data_dir: Path) -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.data.manual_dir = str(data_dir)
  config.data.data_dir = str(data_dir / 'tfds')
  config.model.dropout = 0.2  # members must draw their own dropout masks
  config.train.eval_every_steps = STEPS  # evaluate once, at the end
  config.population.size = len(SEEDS)
  config.population.seeds = SEEDS
  config.population.learning_rates = RATES
  config.population.chunk = 0  # all members in one vmap (test_population_parallel: auto)
  return config


def saved_state(workdir: Path) -> Any:
  """The latest checkpoint's train state, as saved."""
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  manager, step = ckpts.resolve('latest')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return restored['state']


def assert_trees_close(a: Any, b: Any, **tol: float) -> None:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return synthetic.write_fra_txt(tmp_path_factory.mktemp('data'), n=80)


@pytest.fixture(scope='module')
def population_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
  workdir = tmp_path_factory.mktemp('population')
  result = loop.train_and_evaluate(population_config(data_dir), str(workdir))
  return workdir, result


@pytest.mark.parametrize('member', [1, 2, 3])  # member 0: the next test, against train.py
def test_population_member_matches_single_run(
  population_run: tuple[Path, dict], data_dir: Path, member: int
) -> None:
  """The criterion: a single run (the plain jitted `train_step`, an optimizer built with
  the member's learning rate, keys from the member's seed) on the same batches ends
  where the member ends. Not bit for bit: the vmapped matmuls may sum in another order."""
  workdir, _ = population_run
  config = population_config(data_dir)
  data = api.load_data(config, workdir)
  model = api.build_model(config, data)
  tx = api.make_optimizer(config, learning_rate=RATES[member])
  state, dropout_key = api.init_state(model, tx, seed=SEEDS[member])
  train_step = api.jit_train_step(model, tx)
  for batch in api.take(api.train_batches(config, data), STEPS):
    state, _ = train_step(state, batch, dropout_key)
  saved = saved_state(workdir / 'members' / str(member))
  assert int(saved['step']) == int(state.step) == STEPS
  assert_trees_close(saved['params'], state.params, rtol=1e-4, atol=1e-5)
  assert_trees_close(saved['opt_state'], state.opt_state, rtol=1e-3, atol=1e-6)
  # Members really differ: another member's parameters are far from this single run.
  other = saved_state(workdir / 'members' / str((member + 1) % len(SEEDS)))
  diffs = [
    np.abs(np.asarray(x) - np.asarray(y)).max()
    for x, y in zip(jax.tree.leaves(other['params']), jax.tree.leaves(state.params), strict=True)
  ]
  assert max(diffs) > 1e-2


def test_population_member_zero_is_the_config_single_run(
  population_run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
  """The criterion for member 0: `train.py`'s loop with the config alone (no population)
  has member 0's seed, learning rate and batches, and ends with its parameters and loss
  curve."""
  workdir, _ = population_run
  config = population_config(data_dir)
  config.population.size = 1
  config.train.learning_rate = RATES[0]
  loop.train_and_evaluate(config, str(tmp_path))
  assert_trees_close(
    saved_state(workdir / 'members' / '0')['params'],
    saved_state(tmp_path)['params'],
    rtol=1e-4,
    atol=1e-5,
  )
  single = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  member = [
    json.loads(line) for line in (workdir / 'members/0/metrics.jsonl').read_text().splitlines()
  ]
  single_losses = [(r['step'], r['train_loss']) for r in single if 'train_loss' in r]
  member_losses = [(r['step'], r['train_loss']) for r in member if 'train_loss' in r]
  assert [s for s, _ in single_losses] == [s for s, _ in member_losses] == [2, 4, 6, 8]
  np.testing.assert_allclose(
    [x for _, x in single_losses], [x for _, x in member_losses], rtol=1e-4
  )


def test_a_transformer_population_member_matches_its_single_run() -> None:
  """The vmapped step on a population of 2 tiny Transformers: after 3 steps member 1 is
  where a single run with its seed and learning rate is (`api.init_state`,
  `api.jit_train_step`), and far from member 0. Dropout off: with it, compiling the two
  steps takes about 2.5 times as long, and the members' own dropout keys are the GRU
  tests' (test_population_member_matches_single_run)."""
  model = transformer.build_model(
    src_vocab_size=12,
    tgt_vocab_size=13,
    num_hiddens=8,
    num_layers=1,  # compiling the step is most of the cost
    num_heads=2,
    ffn_size=16,
  )
  states, keys = population.init_population(
    model, steps.make_optimizer(learning_rate=1.0), SEEDS[:2]
  )
  step = jax.jit(
    functools.partial(
      population.population_train_step, model=model, tx=steps.make_optimizer(learning_rate=1.0)
    )
  )
  tx = steps.make_optimizer(learning_rate=RATES[1])
  state, dropout_key = api.init_state(model, tx, seed=SEEDS[1])
  train_step = api.jit_train_step(model, tx)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {
      'src': rng.integers(4, 12, (4, 5)).astype(np.int32),
      'src_len': np.array([5, 3, 2, 1], np.int32),
      'tgt_in': rng.integers(4, 13, (4, 6)).astype(np.int32),
      'tgt_out': rng.integers(4, 13, (4, 6)).astype(np.int32),
    }
    states, metrics = step(states, batch, keys, jnp.asarray(RATES[:2], jnp.float32))
    state, _ = train_step(state, batch, dropout_key)
  member = population.unstack(states, 1)
  assert int(member.step) == int(state.step) == 3 and metrics['loss'].shape == (2,)
  assert_trees_close(member.params, state.params, rtol=1e-4, atol=1e-5)
  assert_trees_close(member.opt_state, state.opt_state, rtol=1e-3, atol=1e-6)
  other = population.unstack(states, 0).params
  diffs = [
    np.abs(np.asarray(x) - np.asarray(y)).max()
    for x, y in zip(jax.tree.leaves(other), jax.tree.leaves(state.params), strict=True)
  ]
  assert max(diffs) > 1e-2


def test_population_workdir_metrics_summary_and_members(
  population_run: tuple[Path, dict], data_dir: Path
) -> None:
  workdir, result = population_run
  for name in (
    'config.json',
    'metrics.jsonl',
    'summary.json',
    'result.json',
    'plots/loss.png',
    'plots/bleu.png',
  ):
    assert (workdir / name).exists(), name
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  for member in range(len(SEEDS)):
    mine = [r for r in records if r['member'] == member]
    train = [r for r in mine if 'train_loss' in r]
    assert [r['step'] for r in train] == [2, 4, 6, 8]
    assert all(np.isfinite(r['train_loss']) for r in train)
    assert [r['step'] for r in mine if 'val_bleu' in r] == [STEPS]
    member_dir = workdir / 'members' / str(member)
    member_cfg = json.loads((member_dir / 'config.json').read_text())
    assert member_cfg['train']['learning_rate'] == RATES[member]
    assert member_cfg['population']['member_seed'] == SEEDS[member]
    own = [json.loads(line) for line in (member_dir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['train_loss'] for r in own if 'train_loss' in r] == [r['train_loss'] for r in train]
  # The learning rates differ by 10x: the members' losses must differ.
  final = [r['train_loss'] for r in records if r['step'] == STEPS and 'train_loss' in r]
  assert len(set(final)) == len(SEEDS)

  summary = json.loads((workdir / 'summary.json').read_text())
  rows = summary['members']
  assert [(r['seed'], r['learning_rate']) for r in rows] == list(zip(SEEDS, RATES, strict=True))
  best = max(r['best_bleu'] for r in rows)
  assert rows[summary['winner']]['best_bleu'] == best
  assert result['winner'] == summary['winner'] and result['step'] == STEPS
  assert result['val_bleu'] == rows[summary['winner']]['val_bleu']

  # A member's directory is a single run's workdir; the population's loads its winner.
  translator = api.load(workdir, checkpoint='latest')
  assert translator.config.train.learning_rate == RATES[summary['winner']]
  out = translator.translate(['I see the cat.', ''])
  assert len(out) == 2 and out[1] == '' and isinstance(out[0], str)
  member2 = api.load(workdir / 'members' / '2', checkpoint='latest')
  assert member2.step == STEPS
  # The population's workdir translates as an ensemble of all its members.
  ens = inference.load(workdir, checkpoint='latest')
  assert ens.ensemble_size == len(SEEDS)
  assert ens.workdirs == tuple(str(workdir / 'members' / str(i)) for i in range(len(SEEDS)))
  assert len(ens.translate(['I see the cat.', 'We like a book.'])) == 2
  # The vmapped evaluation agrees with the API's single-model one.
  config = population_config(data_dir)
  data = api.load_data(config, workdir)
  scores = api.evaluate(
    api.jit_eval_step(member2.model), member2.params, api.validation_batches(config, data)
  )
  val_loss = [r['val_loss'] for r in records if r['member'] == 2 and 'val_loss' in r][-1]
  assert scores['loss'] == pytest.approx(val_loss, rel=1e-5)
