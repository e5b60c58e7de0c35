"""Helpers for the multi-device tests: `train.py` in subprocesses with forced CPU devices
(JAX reads XLA_FLAGS once, at import, so a different device count needs a new process),
and readers for what a run leaves in its workdir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from seq2seq_jax.train import checkpointing

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


def env_with_devices(count: int, **extra: str) -> dict[str, str]:
  """The environment for a subprocess with `count` CPU devices (and the session's
  compilation cache and XLA flags, which conftest.py puts in this process's environment)."""
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split() if 'device_count=' not in f]
  env.update(
    XLA_FLAGS=' '.join([*kept, f'--xla_force_host_platform_device_count={count}']),
    JAX_PLATFORMS='cpu',
    PYTHONUNBUFFERED='1',
    **extra,
  )
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_cmd(data_dir: Path, workdir: Path, tfds_dir: Path, *overrides: str) -> list[str]:
  """`train.py` on the tiny config over the made-up pairs in `data_dir`."""
  return [
    sys.executable,
    str(ROOT / 'train.py'),
    f'--config={ROOT / "configs/tiny.py"}',
    f'--workdir={workdir}',
    f'--config.data.manual_dir={data_dir}',
    f'--config.data.data_dir={tfds_dir}',
    *overrides,
  ]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
  """Starts `cmd` with stdout and stderr going to `log`."""
  handle = log.open('w')
  return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = TIMEOUT_S) -> str:
  """Waits for `proc`; fails with the end of its log unless it exited 0."""
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  out = log.read_text()
  assert proc.returncode == 0, f'exit {proc.returncode}:\n{out[-4000:]}'
  return out


def metrics(workdir: Path, key: str) -> dict[int, float]:
  """step -> `key` from the lines of metrics.jsonl that have it."""
  records = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r[key] for r in records if key in r}


def train_losses(workdir: Path) -> dict[int, float]:
  return metrics(workdir, 'train_loss')


def val_losses(workdir: Path) -> dict[int, float]:
  return metrics(workdir, 'val_loss')


def saved_params(workdir: Path, step: int | None = None) -> tuple[int, list[np.ndarray]]:
  """(step, parameter leaves) of a checkpoint (the latest by default), read on this
  process's single device."""
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    manager, step = ckpts.resolve('latest' if step is None else str(step))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    ckpts.close()
  state: Any = restored['state']
  return step, [np.asarray(x) for x in jax.tree.leaves(state['params'])]


def assert_params_close(a: list[np.ndarray], b: list[np.ndarray], atol: float = 2e-5) -> None:
  assert len(a) == len(b)
  worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
  assert worst < atol, f'parameters differ by up to {worst}'
