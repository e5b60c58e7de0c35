"""One model: its state, compiled steps and resume; the bookkeeping it shares with a
population (checkpoints, metrics, the best) is `runs.Run`'s."""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from absl import logging
from flax import linen as nn

from seq2seq_jax.train import checkpointing, distributed, multihost, reporting, runs, steps
from seq2seq_jax.train.experiment import Experiment


def compile_steps(
  model: nn.Module,
  tx: optax.GradientTransformation,
  devices: distributed.Devices,
  label_smoothing: float,
  grad_accum_steps: int = 1,
) -> tuple[Any, Any]:
  """The compiled train step `(state, batch, key)` and eval step `(params, batch)` for
  `devices` (jit, jit with shardings, or pmap); the state's buffers are donated."""
  train = functools.partial(
    steps.train_step,
    model=model,
    tx=tx,
    label_smoothing=label_smoothing,
    grad_accum_steps=grad_accum_steps,
  )
  evaluate = functools.partial(steps.eval_step, model=model)
  return (
    devices.compile(train, ('state', 'batch', 'shared'), donate=(0,)),
    devices.compile(evaluate, ('state', 'batch')),
  )


class SingleRun(runs.Run):
  """One model trained from `config.seed`; its workdir is `checkpoints/`, `metrics.jsonl`,
  `tensorboard/`, `plots/` and `result.json`."""

  def __init__(self, exp: Experiment) -> None:
    self.exp, self.size = exp, 1
    config, devices = exp.config, exp.devices
    tx = exp.optimizer(config.train.learning_rate)
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    self.dropout_key = devices.broadcast(dropout_key)
    # Compiled: the same bits as eager (population.py, api.py), one program instead of a
    # small compile per operation (7 s for a tiny Transformer on CPU).
    state = jax.jit(steps.init_state, static_argnums=(0, 1))(exp.model, tx, init_key)
    ckpts = checkpointing.Checkpoints(
      exp.workdir, keep=config.train.keep_checkpoints, keep_best=config.train.keep_best
    )
    self.ckpts = [ckpts]
    multihost.check_same('the checkpoints seen (is the workdir shared?)', ckpts.latest_step())
    self.best = runs.KeepBest.start(1)
    if ckpts.latest_step() is not None:
      _, saved = ckpts.read_meta('latest')
      checkpointing.check_compatible(saved['signature'], exp.signature)
      # jit with shardings: Orbax restores straight into replicated global arrays.
      start, state, meta = ckpts.restore('latest', devices.restore_target(state))
      exp.batcher.restore(meta['position'])
      self.best = runs.KeepBest.from_meta([meta])
      logging.info(
        'resumed from step %d (epoch %d, batch %d)', start, exp.batcher.epoch, exp.batcher.index
      )
    if exp.is_main:
      (exp.workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
    self.start_step = int(state.step)
    logging.info(
      'model: %s parameters; %d steps per epoch; training to step %d on %s',
      f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
      exp.batcher.batches_per_epoch,
      exp.total_steps,
      devices.describe(),
    )
    self.train_fn, self.eval_fn = compile_steps(
      exp.model, tx, devices, config.train.label_smoothing, exp.grad_accum_steps
    )
    self.log = reporting.Reporter(
      exp.workdir, enabled=exp.is_main, total_steps=exp.total_steps, initial_step=self.start_step
    )
    self.state = devices.replicate(state)

  def train(self, step: int, batch: Any) -> None:
    """One step on a (sharded) batch; `step` is the step it makes."""
    self.state, metrics = self.train_fn(self.state, batch, self.dropout_key)
    self.log.step_metrics(step, metrics)
