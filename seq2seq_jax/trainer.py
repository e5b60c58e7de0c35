"""The training loop: data, compiled steps, evaluation, logging, checkpoints and resume.

`train_and_evaluate(config, workdir)` is what `train.py` calls. The config is read here
once; everything below receives plain arguments.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from seq2seq_jax import (
  checkpointing,
  decode,
  distributed,
  errors,
  input_pipeline,
  metrics_lib,
  models,
  reporting,
  steps,
  text,
)


class TrainingError(errors.UserError):
  """Training cannot go on (non-finite loss, bad config); the message says why."""


# ---------------------------------------------------------------------------------------
# Devices.


# `jit` on one device, `pmap` over several (local or across processes): see distributed.py.
Devices = distributed.Devices


def compile_steps(
  model: models.EncoderDecoder, tx: Any, devices: Devices, label_smoothing: float
) -> tuple[Any, Any]:
  """The jitted (or pmapped) train and eval steps; the state's buffers are donated."""
  axis = 'batch' if devices.parallel else None
  train = functools.partial(
    steps.train_step, model=model, tx=tx, label_smoothing=label_smoothing, axis_name=axis
  )
  evaluate = functools.partial(steps.eval_step, model=model, axis_name=axis)
  if devices.parallel:
    return (
      jax.pmap(train, axis_name=axis, in_axes=(0, 0, None), donate_argnums=(0,)),
      jax.pmap(evaluate, axis_name=axis),
    )
  return jax.jit(train, donate_argnums=(0,)), jax.jit(evaluate)


# ---------------------------------------------------------------------------------------
# Evaluation.


def evaluate_loss(
  eval_fn: Any, params: Any, batcher: input_pipeline.Batcher, devices: Devices
) -> dict[str, float]:
  totals: dict[str, float] = {}
  for batch in batcher.one_pass():
    out = eval_fn(params, devices.shard(batch))
    for k, v in jax.device_get(out).items():
      totals[k] = totals.get(k, 0.0) + float(np.asarray(v).reshape(-1)[0])
  tokens = max(totals.get('tokens', 0.0), 1.0)
  return {'loss': totals['loss'] / tokens, 'accuracy': totals['correct'] / tokens}


def translate_ids(
  greedy_fn: Any, params: Any, src_ids: list[list[int]], width: int, batch_size: int
) -> list[np.ndarray]:
  """Greedy translations of id sequences, in batches of a fixed shape (one compile)."""
  outputs = []
  for start in range(0, len(src_ids), batch_size):
    chunk = src_ids[start : start + batch_size]
    src, src_len = input_pipeline.make_source_batch(
      chunk + [[0]] * (batch_size - len(chunk)), width
    )
    out = np.asarray(greedy_fn(params, src, src_len))
    outputs.extend(out[: len(chunk)])
  return outputs


def evaluate_bleu(
  greedy_fn: Any,
  params: Any,
  data: input_pipeline.Data,
  *,
  max_sentences: int,
  batch_size: int,
  num_samples: int,
) -> tuple[dict[str, float], list[dict]]:
  """Corpus BLEU and chrF of greedy translations of (a fixed prefix of) the validation
  pairs, with all references of a repeated source together."""
  refs = metrics_lib.group_references(data.val.sources, data.val.targets)
  sources = list(refs)[:max_sentences] if max_sentences else list(refs)
  src_ids = [data.src_tok.encode(s)[: data.max_len] for s in sources]
  outs = translate_ids(greedy_fn, params, src_ids, data.max_len, batch_size)
  hyps = [text.score_form(data.tgt_tok.decode(o)) for o in outs]
  references = [[data.tgt_tok.reference(r) for r in refs[s]] for s in sources]
  scores = metrics_lib.corpus_scores(hyps, references)
  samples = [
    {'source': s, 'reference': r[0], 'hypothesis': h}
    for s, r, h in list(zip(sources, references, hyps, strict=False))[:num_samples]
  ]
  return scores, samples


# ---------------------------------------------------------------------------------------
# The loop.


class StopSignal:
  """SIGTERM / Ctrl-C: finish the current step, save, exit. A second Ctrl-C aborts."""

  def __init__(self) -> None:
    self.received: str | None = None
    self.started = time.monotonic()  # the time budget counts from here
    self._old = {}

  def __enter__(self) -> StopSignal:
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    if self.received and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    logging.warning('%s received: finishing the current step, then saving', self.received)

  def reason(self, step: int, time_budget_s: float, agree_every: int) -> str | None:
    """Why to stop after `step` (a signal, the time budget), the same on every process."""
    reason = None
    if time_budget_s and time.monotonic() - self.started > time_budget_s:
      reason = f'time budget of {time_budget_s} s reached'
    if self.received:
      reason = f'{self.received} received'
    return distributed.agree_to_stop(reason, check=step % agree_every == 0)

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def make_batchers(
  config: ml_collections.ConfigDict, data: input_pipeline.Data, shard: tuple[int, int]
) -> tuple[input_pipeline.Batcher, input_pipeline.Batcher]:
  """The training batcher (shuffled by seed and epoch) and the validation one (every pair
  once, the same bucket lengths), each giving this process its `shard` of every batch."""
  batcher = input_pipeline.Batcher(
    data.train,
    config.train.batch_size,
    seed=config.seed,
    num_steps=config.data.num_steps,
    buckets=tuple(config.data.buckets),
    num_buckets=config.data.get('num_buckets', 8),
    shard=shard,
  )
  val_batcher = input_pipeline.Batcher(
    data.val,
    config.eval.batch_size,
    seed=0,
    shuffle=False,
    num_steps=config.data.num_steps,
    buckets=batcher.buckets,
    shard=shard,
  )
  return batcher, val_batcher


def build(config: ml_collections.ConfigDict, data: input_pipeline.Data) -> models.EncoderDecoder:
  return models.build_model(
    **config.model, src_vocab_size=data.src_tok.vocab_size, tgt_vocab_size=data.tgt_tok.vocab_size
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` when it holds a checkpoint); returns final metrics."""
  if config.get('population') and config.population.size > 1:  # N models in one vmapped step
    from seq2seq_jax import population  # imported here: it builds on this module

    return population.train_and_evaluate(config, workdir)
  workdir_path = Path(workdir).absolute()
  workdir_path.mkdir(parents=True, exist_ok=True)
  devices = Devices(jax.local_device_count(), jax.process_index(), jax.process_count())
  is_main = devices.process_index == 0
  tcfg, ecfg = config.train, config.eval
  devices.check_divides('train.batch_size', tcfg.batch_size)
  devices.check_divides('eval.batch_size', ecfg.batch_size)

  # Data and model.
  data = distributed.main_first(
    lambda: input_pipeline.prepare(config.data, str(workdir_path) if is_main else None)
  )
  distributed.check_same(
    'the vocabularies or encoded training pairs', data.train.src, data.train.tgt
  )
  batcher, val_batcher = make_batchers(config, data, (devices.process_index, devices.process_count))
  steps_per_epoch = batcher.batches_per_epoch
  total_steps = tcfg.num_train_steps or tcfg.num_epochs * steps_per_epoch
  eval_every = tcfg.eval_every_steps or steps_per_epoch
  ckpt_every = tcfg.checkpoint_every_steps or steps_per_epoch
  model = build(config, data)
  tx = steps.make_optimizer(
    learning_rate=tcfg.learning_rate,
    grad_clip=tcfg.grad_clip,
    schedule=tcfg.schedule,
    warmup_steps=tcfg.warmup_steps,
    total_steps=total_steps,
    weight_decay=tcfg.weight_decay,
  )
  key = jax.random.key(config.seed)
  init_key, dropout_key = jax.random.split(key)
  del key
  state = steps.init_state(model, tx, init_key)
  signature = checkpointing.signature(
    config.model.to_dict(), data.src_tok.vocab_size, data.tgt_tok.vocab_size, config.data.tokenizer
  )

  # Resume.
  ckpts = checkpointing.Checkpoints(workdir_path, keep=tcfg.keep_checkpoints)
  distributed.check_same('the checkpoints seen (is the workdir shared?)', ckpts.latest_step())
  best_bleu = -1.0
  if ckpts.latest_step() is not None:
    _, saved = ckpts.read_meta('latest')
    checkpointing.check_compatible(saved['signature'], signature)
    start, state, meta = ckpts.restore('latest', state)
    batcher.restore(meta['position'])
    best_bleu = meta.get('best_bleu', -1.0)
    logging.info('resumed from step %d (epoch %d, batch %d)', start, batcher.epoch, batcher.index)
  if is_main:
    (workdir_path / 'config.json').write_text(config.to_json_best_effort(indent=2))
  start_step = int(state.step)
  logging.info(
    'model: %s parameters; %d steps per epoch; training to step %d on %d device(s)',
    f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
    steps_per_epoch,
    total_steps,
    devices.count * devices.process_count,
  )

  train_fn, eval_fn = compile_steps(model, tx, devices, tcfg.label_smoothing)
  greedy_fn = decode.make_greedy(model, data.max_len)
  report = reporting.Reporter(
    workdir_path, enabled=is_main, total_steps=total_steps, initial_step=start_step
  )
  state = devices.replicate(state)

  side_s = 0.0  # seconds spent evaluating and saving (not training) since t_start

  def save(step: int, is_best: bool = False) -> None:
    nonlocal side_s
    t0 = time.monotonic()
    meta = {
      'position': batcher.position,
      'best_bleu': best_bleu,
      'signature': signature,
      'max_len': data.max_len,
      'num_steps': config.data.num_steps,
    }
    ckpts.save(step, jax.device_get(devices.unreplicate(state)), meta, best=is_best)
    side_s += time.monotonic() - t0

  def run_eval(step: int) -> dict[str, float]:
    nonlocal best_bleu, side_s
    t0 = time.monotonic()
    params = devices.unreplicate(state).params
    scores = evaluate_loss(eval_fn, state.params, val_batcher, devices)
    bleu, samples = evaluate_bleu(
      greedy_fn,
      params,
      data,
      max_sentences=ecfg.bleu_sentences,
      batch_size=ecfg.decode_batch_size,
      num_samples=ecfg.num_samples,
    )
    record = {
      'val_loss': scores['loss'],
      'val_accuracy': scores['accuracy'],
      'val_bleu': bleu['bleu'],
      'val_chrf': bleu['chrf'],
    }
    report.eval(step, record, samples)
    side_s += time.monotonic() - t0
    if distributed.main_decides(bleu['bleu'] > best_bleu):
      best_bleu = bleu['bleu']
      save(step, is_best=True)
    return record

  # Train.
  t_start, step, last_eval = time.monotonic(), start_step, {}
  stop_reason = None
  with StopSignal() as stop:
    batches = iter(batcher)
    while step < total_steps:
      batch = next(batches)
      state, metrics = train_fn(state, devices.shard(batch), dropout_key)
      step += 1
      report.step_metrics(step, metrics)
      if step % tcfg.log_every_steps == 0 or step == total_steps:
        bad = report.flush(step, epoch=batcher.epoch)
        if bad is not None:
          raise TrainingError(
            f'the training loss became {bad[1]} at step {bad[0]}; '
            'lower train.learning_rate or check the data'
          )
      if step % eval_every == 0 and step < total_steps:
        last_eval = run_eval(step)
      if step % ckpt_every == 0:
        save(step)
      stop_reason = stop.reason(step, tcfg.time_budget_s, tcfg.log_every_steps)
      if stop_reason:
        break

    # Final evaluation and checkpoint (also after a signal or the time budget).
    bad = report.flush(step, epoch=batcher.epoch)
    if bad is not None:
      raise TrainingError(f'the training loss became {bad[1]} at step {bad[0]}')
    if step > start_step or not last_eval:
      last_eval = run_eval(step)
    save(step)
    ckpts.wait()
  ckpts.close()
  report.close()
  elapsed = time.monotonic() - t_start
  if stop_reason:
    logging.warning(
      'stopped at step %d: %s; the checkpoint is saved, rerun the same command to resume',
      step,
      stop_reason,
    )
  logging.info(
    'trained %d steps in %.1f s (%.1f s of training steps, compilation included; %.1f s '
    'evaluating and saving)',
    step - start_step,
    elapsed,
    elapsed - side_s,
    side_s,
  )
  result = {'step': step, 'stopped': stop_reason, **last_eval}

  # The book's examples.
  if config.examples and is_main:
    params = devices.unreplicate(state).params
    engs = [e for e, _ in config.examples]
    outs = translate_ids(
      greedy_fn, params, [data.src_tok.encode(e) for e in engs], data.max_len, max(len(engs), 1)
    )
    for (eng, fra), out in zip(config.examples, outs, strict=True):
      hyp = data.tgt_tok.decode(out)
      score = metrics_lib.bleu(hyp, data.tgt_tok.reference(fra), k=2)
      print(f'{eng} => {hyp}, bleu {score:.3f}', flush=True)
  sys.stdout.flush()
  if is_main:
    (workdir_path / 'result.json').write_text(json.dumps(result, indent=2))
  return result
