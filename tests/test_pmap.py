"""Data parallelism with `jax.pmap` on 8 forced CPU devices: the same steps and the real
trainer give what one device gives on the same global batch, and a checkpoint written on 8
devices resumes on 1. Multi-device runs are subprocesses: the device count is fixed when
JAX is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seq2seq_jax.train import distributed
from tests import distributed_runs as runs
from tests import synthetic


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return synthetic.write_fra_txt(tmp_path_factory.mktemp('data'), n=80)


def test_pmap_devices_split_batches_evenly_or_say_why() -> None:
  devices = distributed.Devices(4, process_index=1, process_count=2)
  assert devices.total == 8 and devices.parallel and not devices.is_main
  devices.check_divides('train.batch_size', 16)
  with pytest.raises(distributed.DistributedError, match='train.batch_size=12 does not divide'):
    devices.check_divides('train.batch_size', 12)
  # One process with one device per host still runs pmap (the psum spans the hosts).
  assert distributed.Devices(1, process_count=2).parallel
  one = distributed.Devices(1)
  batch = {'src': np.arange(12).reshape(6, 2)}
  assert not one.parallel and one.shard(batch) is batch
  assert one.replicate(batch) is batch and one.unreplicate(batch) is batch
  shards = distributed.Devices(3).shard(batch)
  assert shards['src'].shape == (3, 2, 2)
  np.testing.assert_array_equal(shards['src'].reshape(6, 2), batch['src'])
  with pytest.raises(distributed.DistributedError, match='does not split over 4'):
    distributed.Devices(4).shard(batch)
  # train.parallel: 'auto' is jit with shardings; a wrong name is a clear error.
  assert distributed.resolve_mode('auto') == 'jit' and distributed.resolve_mode('PMAP') == 'pmap'
  with pytest.raises(distributed.DistributedError, match='train.parallel must be one of'):
    distributed.resolve_mode('xla')
  assert distributed.Devices(8, mode='jit').describe() == '8 device(s), jit with shardings'
  assert distributed.Devices(1, mode='jit').describe() == '1 device(s)'


def assert_modes_agree(runs_: dict, steps: int, evaluated: bool = True) -> None:
  """pmap ('all') and jit with shardings ('jit') against 1 device ('one')."""
  one = runs_['one']
  for mode in ('all', 'jit'):  # pmap, and jit with shardings on a mesh
    all_ = runs_[mode]
    assert one['step'] == all_['step'] == steps
    np.testing.assert_allclose(all_['losses'], one['losses'], rtol=1e-5)
    np.testing.assert_allclose(all_['grad_norms'], one['grad_norms'], rtol=1e-4)
    if evaluated:
      assert all_['eval']['tokens'] == one['eval']['tokens'] > 0
      np.testing.assert_allclose(all_['eval']['loss'], one['eval']['loss'], rtol=1e-5)
    runs.assert_params_close(
      [np.asarray(x) for x in all_['params']], [np.asarray(x) for x in one['params']]
    )
  assert one['losses'][-1] < one['losses'][0]  # it trained


def test_pmap_and_jit_steps_on_8_devices_equal_one_device() -> None:
  """20 train steps of global batch 16 (3 empty rows each): pmap over 8 devices and jit
  with shardings on an 8-device mesh vs jit on 1 device, dropout off (and, for the
  sharded jit, on). The mean losses, gradient norms, eval sums and parameters agree to
  float32 rounding (only the order of the sums differs). The same for a one-block
  Transformer over 6 steps, dropout off, without the evaluation."""
  proc = subprocess.run(
    [sys.executable, str(runs.ROOT / 'tests/pmap_steps_check.py'), 'attention', 'transformer'],
    env=runs.env_with_devices(8),
    capture_output=True,
    text=True,
    timeout=runs.TIMEOUT_S,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['device_count'] == 8
  assert_modes_agree(out['attention'], 20)
  assert_modes_agree(out['transformer'], 6, evaluated=False)
  # With dropout, jit with shardings draws the global batch's masks as one device does.
  one, jit = out['attention_dropout']['one'], out['attention_dropout']['jit']
  np.testing.assert_allclose(jit['losses'], one['losses'], rtol=1e-5)
  assert one['losses'] != out['attention']['one']['losses']  # dropout changed them
  runs.assert_params_close(
    [np.asarray(x) for x in jit['params']], [np.asarray(x) for x in one['params']]
  )


def test_training_resumes_across_modes_and_device_counts(data_dir: Path, tmp_path: Path) -> None:
  """`train.py` with train.parallel=pmap on 8 devices for 8 steps, and on 1 device for 12
  steps (same global batch 16, dropout off): the same losses and step-8 parameters. The
  pmap checkpoint then resumes on 8 devices in the default mode (jit with shardings) to
  step 10, and that one on 1 device to step 12: steps 9-12 match the uninterrupted
  1-device run."""
  eight, one = tmp_path / 'eight', tmp_path / 'one'
  every = '--config.train.eval_every_steps=8'  # evaluations at step 8 and at the end
  pmap = '--config.train.parallel=pmap'
  procs = [
    runs.start(
      runs.train_cmd(
        data_dir, eight, tmp_path / 'tfds8', '--config.train.num_train_steps=8', pmap, every
      ),
      runs.env_with_devices(8),
      tmp_path / 'eight.log',
    ),
    runs.start(
      runs.train_cmd(data_dir, one, tmp_path / 'tfds1', '--config.train.num_train_steps=12', every),
      runs.env_with_devices(1),
      tmp_path / 'one.log',
    ),
  ]
  log8 = runs.finish(procs[0], tmp_path / 'eight.log')
  runs.finish(procs[1], tmp_path / 'one.log')
  assert 'training to step 8 on 8 device(s), pmap' in log8
  losses8, losses1 = runs.train_losses(eight), runs.train_losses(one)
  assert sorted(losses8) == [2, 4, 6, 8] and sorted(losses1) == [2, 4, 6, 8, 10, 12]
  np.testing.assert_allclose(
    [losses8[s] for s in (2, 4, 6, 8)], [losses1[s] for s in (2, 4, 6, 8)], rtol=1e-5
  )
  np.testing.assert_allclose(runs.val_losses(eight)[8], runs.val_losses(one)[8], rtol=1e-5)
  step8, params8 = runs.saved_params(eight)
  assert step8 == 8
  runs.assert_params_close(params8, runs.saved_params(one, 8)[1])

  # pmap -> jit with shardings -> one device.
  chain = ((8, 10, '8 device(s), jit with shardings'), (1, 12, 'on 1 device(s)'))
  for devices, steps, shown in chain:
    log = tmp_path / f'to_{steps}.log'
    cmd = runs.train_cmd(
      data_dir, eight, tmp_path / 'tfds8', f'--config.train.num_train_steps={steps}', every
    )
    resumed = runs.finish(runs.start(cmd, runs.env_with_devices(devices), log), log)
    assert f'resumed from step {steps - 2}' in resumed and shown in resumed
  continued = runs.train_losses(eight)
  assert sorted(continued) == sorted(losses1)
  np.testing.assert_allclose(
    [continued[s] for s in (10, 12)], [losses1[s] for s in (10, 12)], rtol=1e-4
  )
  np.testing.assert_allclose(runs.val_losses(eight)[12], runs.val_losses(one)[12], rtol=1e-4)
  step, params = runs.saved_params(eight)
  assert step == 12
  runs.assert_params_close(params, runs.saved_params(one)[1], atol=1e-4)


def test_pmap_batch_that_does_not_divide_is_a_one_line_error(
  data_dir: Path, tmp_path: Path
) -> None:
  proc = subprocess.run(
    runs.train_cmd(data_dir, tmp_path / 'w', tmp_path / 'tfds', '--config.train.batch_size=12'),
    env=runs.env_with_devices(8),
    capture_output=True,
    text=True,
    timeout=runs.TIMEOUT_S,
  )
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: train.batch_size=12 does not divide over 8 devices'), last
