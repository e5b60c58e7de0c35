"""Reproducibility on CPU: the same config and seed give the same loss curve and the same
parameters, bit for bit; another seed gives another curve. (docs/research.md lists what
can break this on GPUs.)"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from configs import tiny
from seq2seq_jax.train import loop
from tests import synthetic
from tests.test_population import saved_state


def run(data_dir: Path, workdir: Path, seed: int) -> tuple[list[float], dict]:
  config = tiny.get_config()
  config.data.manual_dir = str(data_dir)
  config.data.data_dir = str(data_dir / 'tfds')
  config.model.dropout = 0.2  # dropout masks must repeat too
  config.train.log_every_steps = 1
  config.train.eval_every_steps = 8
  config.seed = seed
  loop.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r['train_loss'] for r in records if 'train_loss' in r], saved_state(workdir)


def test_same_config_and_seed_give_the_same_loss_curve_bit_for_bit(tmp_path: Path) -> None:
  data_dir = synthetic.write_fra_txt(tmp_path / 'data', n=80)
  losses_a, state_a = run(data_dir, tmp_path / 'a', seed=3)
  losses_b, state_b = run(data_dir, tmp_path / 'b', seed=3)
  assert len(losses_a) == 8 and losses_a == losses_b  # floats compared exactly
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  losses_c, _ = run(data_dir, tmp_path / 'c', seed=4)
  assert losses_c != losses_a
