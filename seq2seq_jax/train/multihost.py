"""Several processes (hosts, or a process per GPU): starting them and keeping their
decisions the same.

`initialize` calls `jax.distributed.initialize()` when the config or the launcher asks for
it. Decisions that change the program's path (stop now? is this the best checkpoint?)
must be the same on every process, or one process leaves a collective the others wait
in: `agree_to_stop` and `main_decides` make them collective; `main_first` lets process 0
write shared files before the others read them; `check_same` fails on every process when
values built separately differ (their `values_crc`). With one process every helper here is
free (no communication).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from seq2seq_jax import errors

T = TypeVar('T')

# Environment variables read when the config leaves a field empty (JAX itself reads
# JAX_COORDINATOR_ADDRESS; the other two are this project's, for hand-started processes).
ENV_ADDRESS, ENV_COUNT, ENV_ID = 'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'
_REASON_BYTES = 160  # the longest stop reason shared between processes


class DistributedError(errors.UserError):
  """The device or process setup does not fit the config (the message says how)."""


# ---------------------------------------------------------------------------------------
# Starting several processes.


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, '').strip()
  try:
    return int(value) if value else None
  except ValueError:
    raise DistributedError(f'{name} must be a whole number, got {value!r}') from None


def detected_cluster() -> str | None:
  """The multi-process launcher JAX can read its setup from, if this process runs under
  one with more than one process: 'slurm' (srun), 'ompi' (mpirun) or 'tpu' (a pod)."""
  env = os.environ
  slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
  if all(k in env for k in slurm) and int(env['SLURM_NTASKS']) > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'ompi'
  hosts = env.get('TPU_PROCESS_ADDRESSES') or env.get('TPU_WORKER_HOSTNAMES') or ''
  if ',' in hosts:
    return 'tpu'
  return None


def initialize(cfg: ml_collections.ConfigDict | None) -> bool:
  """Calls `jax.distributed.initialize()` when the config or the environment asks for it;
  returns whether this is a multi-process run. Call it before anything else uses JAX.

  `cfg` is `config.distributed`: `initialize` is 'auto' (when a coordinator address is
  given, here or in JAX_COORDINATOR_ADDRESS, or a multi-process SLURM, Open MPI or Cloud
  TPU launch is detected), 'yes' (always: JAX detects what is not given) or 'no'. Empty
  fields fall back to JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  No `cfg` (None): one process.
  """
  if cfg is None:
    return False
  mode = str(cfg.initialize).lower()
  if mode not in ('auto', 'yes', 'no'):
    raise DistributedError(f"distributed.initialize must be 'auto', 'yes' or 'no', got {mode!r}")
  address = cfg.coordinator_address or os.environ.get(ENV_ADDRESS) or None
  count = cfg.num_processes or _env_int(ENV_COUNT)
  index = cfg.process_id if cfg.process_id >= 0 else _env_int(ENV_ID)
  if mode == 'no' or (mode == 'auto' and address is None and detected_cluster() is None):
    return False
  if jax.distributed.is_initialized():  # the caller started it already
    return jax.process_count() > 1
  logging.info(
    'starting multi-process JAX: coordinator %s, %s processes, this one %s (None: detected)',
    address,
    count,
    index,
  )
  jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
  logging.info('process %d of %d', jax.process_index(), jax.process_count())
  return jax.process_count() > 1


# ---------------------------------------------------------------------------------------
# Agreement between processes.


def agree_to_stop(reason: str | None, *, check: bool) -> str | None:
  """The stop decision, the same on every process.

  One process: `reason` as given. Several: processes only stop at steps where `check` is
  true (it must be the same on all of them, e.g. at log intervals, where the host waits
  for the device anyway); there, if any process has a reason (a signal, its clock past
  the time budget), all of them stop with the first such process's reason (and index).
  """
  if jax.process_count() == 1:
    return reason
  if not check:
    return None
  text = (reason or '').encode()[:_REASON_BYTES].ljust(_REASON_BYTES, b'\0')
  gathered = np.asarray(
    multihost_utils.process_allgather(np.frombuffer(text, np.uint8).astype(np.int32))
  )
  for index, row in enumerate(gathered.reshape(jax.process_count(), _REASON_BYTES)):
    if row.any():
      agreed = bytes(row.astype(np.uint8)).rstrip(b'\0').decode(errors='replace')
      return f'{agreed} (process {index})'
  return None


def main_decides(flag: bool) -> bool:
  """Process 0's `flag` on every process (e.g. 'save this as the best checkpoint':
  all processes must take part in the save)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))


def main_first(fn: Callable[[], T], name: str = 'main_first') -> T:
  """Runs `fn` on process 0, then on the others (preparing shared files, e.g. the TFDS
  splits in a shared data_dir, without several processes writing them at once)."""
  if jax.process_count() == 1:
    return fn()
  if jax.process_index() == 0:
    result = fn()
  multihost_utils.sync_global_devices(name)
  if jax.process_index() != 0:
    result = fn()
  return result


def values_crc(*values: Any) -> int:
  """A CRC-32 over arrays (their dtype, shape and bytes) and the reprs of other values
  (what `check_same` compares between processes)."""
  crc = 0
  for v in values:
    if isinstance(v, np.ndarray | jax.Array):
      v = np.ascontiguousarray(v)
      crc = zlib.crc32(f'{v.dtype}{v.shape}'.encode(), crc)
      crc = zlib.crc32(v.tobytes(), crc)
    else:
      crc = zlib.crc32(repr(v).encode(), crc)
  return crc


def check_same(what: str, *values: Any) -> None:
  """Fails on every process when `values` differ between processes (e.g. vocabularies
  built separately must be identical)."""
  if jax.process_count() == 1:
    return
  mine = np.asarray(values_crc(*values), np.uint32).view(np.int32)
  prints = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
  if len(set(prints.tolist())) > 1:
    raise DistributedError(
      f'{what} differ between processes (CRCs {prints.view(np.uint32).tolist()}); '
      'every process must run the same config on the same data'
    )
