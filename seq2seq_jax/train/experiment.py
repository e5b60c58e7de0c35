"""What every training run shares, built once from the config: devices, data, batchers,
the model, the optimizer's settings, the translator that validation decodes with and the
checkpoint signature.

A single run (`single.py`) and a population (`population_run.py`) both start from an
`Experiment`; the loop (`loop.py`) drives either. The config is read here (the caller's is
left as it is: the run works on a copy with `data.tokenizer` made concrete, which is the
config the workdir records); the pieces below receive plain values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections
import optax

from seq2seq_jax import build, errors, inference, models
from seq2seq_jax.data import input_pipeline, tokenizers
from seq2seq_jax.train import checkpointing, distributed, population


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict  # resolved: `data.tokenizer` concrete
  workdir: Path
  devices: distributed.Devices
  data: input_pipeline.Data
  batcher: input_pipeline.Batcher  # training batches, shuffled by seed and epoch
  val_batcher: input_pipeline.Batcher  # every validation pair once
  model: models.EncoderDecoder
  total_steps: int
  signature: dict  # what a checkpoint must match to be resumed
  # Greedy decoding of validation sources (`with_params` gives it the run's parameters).
  translator: inference.Translator
  grad_accum_steps: int = 1  # micro-batches summed into one optimizer step

  @property
  def is_main(self) -> bool:
    return self.devices.is_main

  def optimizer(self, learning_rate: float) -> optax.GradientTransformation:
    return build.optimizer(self.config, self.total_steps, learning_rate)

  def checkpoint_meta(self) -> dict:
    """What every checkpoint records beside the state (the data position, the shapes)."""
    return {
      'position': self.batcher.position,
      'signature': self.signature,
      'max_len': self.data.max_len,
      'num_steps': self.config.data.num_steps,
    }


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
    num_buckets=config.data.num_buckets,
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


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with its choices made concrete (`data.tokenizer` 'auto' -> 'word'
  or 'sentencepiece'): what the run uses and its workdir records."""
  config = config.copy_and_resolve_references()
  config.data.tokenizer = tokenizers.resolve_kind(config.data)
  return config


def check_batch_sizes(config: ml_collections.ConfigDict, devices: distributed.Devices) -> int:
  """Checks that the batches split over the devices (and micro-batches); returns
  `train.grad_accum_steps`."""
  devices.check_divides('train.batch_size', config.train.batch_size)
  devices.check_divides('eval.batch_size', config.eval.batch_size)
  accum = int(config.train.grad_accum_steps)
  if accum < 1:
    raise errors.ConfigError(f'train.grad_accum_steps must be at least 1, got {accum}')
  if config.train.batch_size % (devices.total * accum):
    raise errors.ConfigError(
      f'train.batch_size={config.train.batch_size} does not split into '
      f'train.grad_accum_steps={accum} micro-batches on each of {devices.total} device(s); '
      f'use a multiple of {devices.total * accum}'
    )
  return accum


def check_lengths(model: Any, longest: int) -> None:
  """A one-line error when the data holds sentences longer than the model can read."""
  limit = getattr(model, 'max_positions', None)
  if limit is not None and longest > limit:
    raise errors.ConfigError(
      f'the data has sentences of up to {longest} tokens (data.max_len, data.num_steps, '
      f'data.buckets) but model.max_positions={limit}: raise model.max_positions or lower '
      'data.max_len'
    )


def prepare(config: ml_collections.ConfigDict, workdir: str | Path) -> Experiment:
  """Checks the batch sizes against the devices, prepares the data (process 0 first),
  builds the batchers, the model and the validation translator. `config` is not changed:
  the experiment holds a resolved copy (`resolved`)."""
  config = resolved(config)
  workdir_path = Path(workdir).absolute()
  workdir_path.mkdir(parents=True, exist_ok=True)
  member_shards = int(config.population.member_shards)
  if member_shards > 1 and population.size(config) % member_shards:
    raise distributed.DistributedError(
      f'population.member_shards={member_shards} does not divide the population of '
      f'{population.size(config)}'
    )
  devices = distributed.Devices.current(config.train.parallel, member_shards)
  accum = check_batch_sizes(config, devices)
  data = distributed.main_first(
    lambda: input_pipeline.prepare(config.data, str(workdir_path) if devices.is_main else None)
  )
  distributed.check_same(
    'the vocabularies or encoded training pairs', data.train.src, data.train.tgt
  )
  batcher, val_batcher = make_batchers(config, data, (devices.process_index, devices.process_count))
  tcfg = config.train
  model = build.model(config, data.src_tok.vocab_size, data.tgt_tok.vocab_size)
  check_lengths(model, max(data.max_len, *batcher.buckets, config.data.num_steps))
  decode_batch = config.eval.decode_batch_size  # validation sentences translated together
  return Experiment(
    config=config,
    workdir=workdir_path,
    devices=devices,
    data=data,
    batcher=batcher,
    val_batcher=val_batcher,
    model=model,
    total_steps=tcfg.num_train_steps or tcfg.num_epochs * batcher.batches_per_epoch,
    signature=checkpointing.signature(config, data.src_tok.vocab_size, data.tgt_tok.vocab_size),
    translator=inference.Translator(
      model, None, data.src_tok, data.tgt_tok, data.max_len, config, batch_size=decode_batch
    ),
    grad_accum_steps=accum,
  )
