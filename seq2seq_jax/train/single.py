"""One model: its state, compiled steps, checkpoints and reports, driven by `loop.py`."""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import optax
from absl import logging
from flax import linen as nn

from seq2seq_jax.errors import TrainingError
from seq2seq_jax.train import checkpointing, distributed, evaluation, reporting, steps
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


class SingleRun:
  """One model trained from `config.seed`; its workdir is `checkpoints/`, `metrics.jsonl`,
  `tensorboard/`, `plots/` and `result.json`."""

  def __init__(self, exp: Experiment) -> None:
    self.exp = exp
    config, devices = exp.config, exp.devices
    tx = exp.optimizer(config.train.learning_rate)
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    self.dropout_key = devices.broadcast(dropout_key)
    state = steps.init_state(exp.model, tx, init_key)

    # Resume.
    self.ckpts = checkpointing.Checkpoints(
      exp.workdir, keep=config.train.keep_checkpoints, keep_best=config.train.keep_best
    )
    distributed.check_same(
      'the checkpoints seen (is the workdir shared?)', self.ckpts.latest_step()
    )
    self.best_bleu = -1.0
    self.evals_since_best = 0  # evaluations without a better BLEU (early stopping)
    if self.ckpts.latest_step() is not None:
      _, saved = self.ckpts.read_meta('latest')
      checkpointing.check_compatible(saved['signature'], exp.signature)
      # jit with shardings: Orbax restores straight into replicated global arrays.
      start, state, meta = self.ckpts.restore('latest', devices.restore_target(state))
      exp.batcher.restore(meta['position'])
      self.best_bleu = meta.get('best_bleu', -1.0)
      self.evals_since_best = meta.get('evals_since_best', 0)
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
    self.report = reporting.Reporter(
      exp.workdir, enabled=exp.is_main, total_steps=exp.total_steps, initial_step=self.start_step
    )
    self.state = devices.replicate(state)

  def train(self, step: int, batch: Any) -> None:
    """One step on a (sharded) batch; `step` is the step it makes."""
    self.state, metrics = self.train_fn(self.state, batch, self.dropout_key)
    self.report.step_metrics(step, metrics)

  def flush(self, step: int) -> None:
    bad = self.report.flush(step, epoch=self.exp.batcher.epoch)
    if bad is not None:
      raise TrainingError(
        f'the training loss became {bad[1]} at step {bad[0]}; '
        'lower train.learning_rate or check the data'
      )

  def save(self, step: int, bleu: float | None = None) -> None:
    """Saves the state at `step`; with its validation `bleu`, among the best too."""
    meta = {
      **self.exp.checkpoint_meta(),
      'best_bleu': self.best_bleu,
      'evals_since_best': self.evals_since_best,
    }
    # This process's first replica, as host arrays (no gather; the same files in every
    # mode: saving the global arrays would record the devices' topology in the
    # checkpoint, which then needs a target tree with shardings to be read back).
    host = jax.device_get(self.exp.devices.unreplicate(self.state))
    self.ckpts.save(step, host, meta, best_bleu=bleu)

  def evaluate(self, step: int) -> dict[str, float]:
    """Validation loss, accuracy, BLEU and chrF; a BLEU among the best `train.keep_best`
    saves a best checkpoint."""
    exp, ecfg = self.exp, self.exp.config.eval
    (record,) = evaluation.evaluate_loss(
      self.eval_fn, self.state.params, exp.val_batcher, exp.devices
    )
    bleu, samples = evaluation.evaluate_bleu(
      exp.greedy_fn,
      exp.devices.unreplicate(self.state).params,
      exp.data,
      max_sentences=ecfg.bleu_sentences,
      batch_size=ecfg.decode_batch_size,
      num_samples=ecfg.num_samples,
    )
    record = {**record, 'val_bleu': bleu['bleu'], 'val_chrf': bleu['chrf']}
    self.report.eval(step, record, samples)
    if distributed.main_decides(bleu['bleu'] > self.best_bleu):
      self.best_bleu, self.evals_since_best = bleu['bleu'], 0
      self.save(step, bleu['bleu'])
    else:
      self.evals_since_best += 1
      if distributed.main_decides(self.ckpts.ranks_among_best(bleu['bleu'])):
        self.save(step, bleu['bleu'])
    return record

  def close(self) -> None:
    self.ckpts.wait()
    self.ckpts.close()
    self.report.close()

  def finish(self, result: dict[str, Any], last_eval: dict[str, float]) -> dict[str, Any]:
    """Prints the config's examples; writes `result.json`."""
    exp = self.exp
    result = {**result, **last_eval}
    if exp.is_main:
      params = exp.devices.unreplicate(self.state).params
      evaluation.print_examples(exp.config, exp.data, exp.greedy_fn, params)
      (exp.workdir / 'result.json').write_text(json.dumps(result, indent=2))
    return result
