"""Multi-process training: two `train.py` processes on localhost (4 forced CPU devices
each, collectives over gloo, `jax.distributed` started from the config) train exactly
as one process with 8 devices; only process 0 writes; a signal to one process stops both
at the same step. Plus the single-process behaviour of the helpers in distributed.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from seq2seq_jax.data import input_pipeline, text
from seq2seq_jax.train import distributed
from tests import distributed_runs as runs
from tests import synthetic

CLUSTER_VARS = (
  'JAX_COORDINATOR_ADDRESS',
  'JAX_NUM_PROCESSES',
  'JAX_PROCESS_ID',
  'SLURM_JOB_ID',
  'SLURM_STEP_NODELIST',
  'SLURM_NTASKS',
  'SLURM_PROCID',
  'SLURM_LOCALID',
  'OMPI_MCA_orte_hnp_uri',
  'OMPI_COMM_WORLD_SIZE',
  'TPU_PROCESS_ADDRESSES',
  'TPU_WORKER_HOSTNAMES',
)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return synthetic.write_fra_txt(tmp_path_factory.mktemp('data'), n=80)


def start_pair(
  data_dir: Path, workdir: Path, tfds_dir: Path, logs: Path, *overrides: str
) -> list[tuple[object, Path]]:
  """Two processes of one job, 4 CPU devices each, process 0 the coordinator."""
  port = runs.free_port()
  procs = []
  for index in range(2):
    cmd = runs.train_cmd(
      data_dir,
      workdir,
      tfds_dir,
      f'--config.distributed.coordinator_address=localhost:{port}',
      '--config.distributed.num_processes=2',
      f'--config.distributed.process_id={index}',
      *overrides,
    )
    log = logs / f'process{index}.log'
    procs.append((runs.start(cmd, runs.env_with_devices(4), log), log))
  return procs


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_multihost_two_processes_train_like_one_process_with_8_devices(
  data_dir: Path, tmp_path: Path, mode: str
) -> None:
  """Dropout on. jit with shardings: the masks of the global batch in both layouts.
  pmap: device k of the 8 (process k // 4) gets rows 2k, 2k+1 of each global batch and
  the dropout key folded with k in both layouts. Either way even the masks agree."""
  single, multi = tmp_path / 'single', tmp_path / 'multi'
  args = (
    '--config.train.num_train_steps=8',
    '--config.train.eval_every_steps=8',
    '--config.model.dropout=0.2',
    f'--config.train.parallel={mode}',
  )
  ref = runs.start(
    runs.train_cmd(data_dir, single, tmp_path / 'tfds1', *args),
    runs.env_with_devices(8),
    tmp_path / 'single.log',
  )
  pair = start_pair(data_dir, multi, tmp_path / 'tfds2', tmp_path, *args)
  logs = [runs.finish(proc, log) for proc, log in pair]
  runs.finish(ref, tmp_path / 'single.log')

  for index, log in enumerate(logs):
    assert f'process {index} of 2' in log
    shown = 'jit with shardings' if mode == 'jit' else 'pmap'
    assert f'training to step 8 on 8 device(s), {shown}' in log
  # Global metrics, equal to one process with the same 8 devices.
  losses, reference = runs.train_losses(multi), runs.train_losses(single)
  assert sorted(losses) == sorted(reference) == [2, 4, 6, 8]
  np.testing.assert_allclose([losses[s] for s in reference], list(reference.values()), rtol=1e-5)
  np.testing.assert_allclose(runs.val_losses(multi)[8], runs.val_losses(single)[8], rtol=1e-5)
  assert runs.metrics(multi, 'val_bleu') == runs.metrics(single, 'val_bleu')
  # The checkpoint (Orbax: process 0 writes the host-local arrays) reads back on 1 device.
  step, params = runs.saved_params(multi)
  assert step == 8
  runs.assert_params_close(params, runs.saved_params(single)[1])
  # Only process 0 writes logs, metrics, TensorBoard events and plots.
  assert 'train loss' in logs[0] and 'train loss' not in logs[1]
  steps = [json.loads(x)['step'] for x in (multi / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [2, 4, 6, 8, 8]  # four train lines, one eval line: no duplicates
  assert len(list((multi / 'tensorboard').glob('events.out.tfevents.*'))) == 1
  assert (multi / 'plots/loss.png').exists() and (multi / 'vocab_src.json').exists()


def test_multihost_sigterm_to_one_process_stops_both_at_the_same_step(
  data_dir: Path, tmp_path: Path
) -> None:
  workdir = tmp_path / 'run'
  pair = start_pair(
    data_dir,
    workdir,
    tmp_path / 'tfds',
    tmp_path,
    '--config.train.num_train_steps=100000',
    '--config.train.eval_every_steps=100000',
    '--config.train.checkpoint_every_steps=100000',
    '--config.model.dropout=0.2',  # the programs the test above compiled (jit): cached
  )

  def training() -> bool:
    try:
      return bool(runs.train_losses(workdir))
    except (OSError, ValueError):  # not written yet, or a line half-written
      return False

  deadline = time.monotonic() + runs.TIMEOUT_S
  while not training():
    assert all(proc.poll() is None for proc, _ in pair), pair[0][1].read_text()[-3000:]
    assert time.monotonic() < deadline, 'training did not start'
    time.sleep(0.5)
  pair[1][0].send_signal(signal.SIGTERM)  # process 1 only
  logs = [runs.finish(proc, log) for proc, log in pair]

  result = json.loads((workdir / 'result.json').read_text())
  assert result['stopped'] == 'SIGTERM received (process 1)'
  assert 2 <= result['step'] < 100000 and result['step'] % 2 == 0  # at a log interval
  for log in logs:
    assert f'stopped at step {result["step"]}: SIGTERM received (process 1)' in log
  assert runs.saved_params(workdir)[0] == result['step']


# ---------------------------------------------------------------------------------------
# The helpers on one process.


def test_multihost_initialize_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
  for var in CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  cfg = ml_collections.ConfigDict(
    {'initialize': 'auto', 'coordinator_address': '', 'num_processes': 0, 'process_id': -1}
  )
  assert distributed.detected_cluster() is None
  assert distributed.initialize(cfg) is False and distributed.initialize(None) is False
  cfg.initialize, cfg.coordinator_address = 'no', 'localhost:1234'
  assert distributed.initialize(cfg) is False
  cfg.initialize = 'sometimes'
  with pytest.raises(distributed.DistributedError, match="'auto', 'yes' or 'no'"):
    distributed.initialize(cfg)

  slurm = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '0'}
  for var, value in {**slurm, 'SLURM_LOCALID': '0', 'SLURM_NTASKS': '1'}.items():
    monkeypatch.setenv(var, value)
  assert distributed.detected_cluster() is None  # one task: nothing to start
  monkeypatch.setenv('SLURM_NTASKS', '2')
  assert distributed.detected_cluster() == 'slurm'
  monkeypatch.delenv('SLURM_NTASKS')
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'host-a,host-b')
  assert distributed.detected_cluster() == 'tpu'


def test_multihost_agreements_cost_nothing_on_one_process() -> None:
  assert distributed.agree_to_stop('SIGTERM received', check=False) == 'SIGTERM received'
  assert distributed.agree_to_stop(None, check=True) is None
  assert distributed.main_decides(True) is True and distributed.main_decides(False) is False
  assert distributed.main_first(lambda: 3) == 3
  distributed.check_same('nothing', np.arange(3))
  a = distributed.values_crc(np.arange(3, dtype=np.int32), 5)
  assert a == distributed.values_crc(np.arange(3, dtype=np.int32), 5)
  assert a != distributed.values_crc(np.arange(3, dtype=np.int64), 5)
  assert a != distributed.values_crc(np.arange(3, dtype=np.int32), 6)


def test_multihost_each_process_reads_its_rows_of_every_global_batch() -> None:
  pairs = synthetic.make_pairs(50)
  src_tok = text.WordTokenizer.train([en for en, _ in pairs], 1)
  tgt_tok = text.WordTokenizer.train([fr for _, fr in pairs], 1)
  data = input_pipeline.encode_pairs(pairs, src_tok, tgt_tok, num_steps=8)
  make = lambda shard: iter(input_pipeline.Batcher(data, 16, seed=3, num_steps=8, shard=shard))
  whole, first, second = make((0, 1)), make((0, 2)), make((1, 2))
  for _ in range(7):  # past the end of an epoch (4 batches, the last one padded)
    full, a, b = next(whole), next(first), next(second)
    for key in full:
      assert a[key].shape[0] == b[key].shape[0] == 8
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), full[key])
