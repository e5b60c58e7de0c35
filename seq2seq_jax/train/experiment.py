"""What every training run shares, built once from the config: devices, data, batchers,
the model, the optimizer's settings and the checkpoint signature.

A single run (`single.py`) and a population (`population_run.py`) both start from an
`Experiment`; the loop (`loop.py`) drives either. The config is read here; the pieces
below receive plain values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections
import optax

from seq2seq_jax import models
from seq2seq_jax.data import input_pipeline, tokenizers
from seq2seq_jax.decoding import greedy_search
from seq2seq_jax.train import checkpointing, distributed, population, steps


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict
  workdir: Path
  devices: distributed.Devices
  data: input_pipeline.Data
  batcher: input_pipeline.Batcher  # training batches, shuffled by seed and epoch
  val_batcher: input_pipeline.Batcher  # every validation pair once
  model: models.EncoderDecoder
  total_steps: int
  signature: dict  # what a checkpoint must match to be resumed
  greedy_fn: Any  # compiled greedy decoding (params, src, src_len) -> ids
  grad_accum_steps: int = 1  # micro-batches summed into one optimizer step

  @property
  def is_main(self) -> bool:
    return self.devices.is_main

  def optimizer(self, learning_rate: float) -> optax.GradientTransformation:
    tcfg = self.config.train
    return steps.make_optimizer(
      learning_rate=learning_rate,
      grad_clip=tcfg.grad_clip,
      schedule=tcfg.schedule,
      warmup_steps=tcfg.warmup_steps,
      total_steps=self.total_steps,
      weight_decay=tcfg.weight_decay,
    )

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


def build_model(
  config: ml_collections.ConfigDict, data: input_pipeline.Data
) -> models.EncoderDecoder:
  return models.build(
    config.model, src_vocab_size=data.src_tok.vocab_size, tgt_vocab_size=data.tgt_tok.vocab_size
  )


def prepare(config: ml_collections.ConfigDict, workdir: str | Path) -> Experiment:
  """Checks the batch sizes against the devices, prepares the data (process 0 first),
  builds the batchers and the model."""
  workdir_path = Path(workdir).absolute()
  workdir_path.mkdir(parents=True, exist_ok=True)
  config.data.tokenizer = tokenizers.resolve_kind(config.data)  # 'auto' made concrete
  member_shards = int(config.population.get('member_shards', 1))
  if member_shards > 1 and population.size(config) % member_shards:
    raise distributed.DistributedError(
      f'population.member_shards={member_shards} does not divide the population of '
      f'{population.size(config)}'
    )
  devices = distributed.Devices.current(config.train.get('parallel', 'auto'), member_shards)
  devices.check_divides('train.batch_size', config.train.batch_size)
  devices.check_divides('eval.batch_size', config.eval.batch_size)
  accum = int(config.train.get('grad_accum_steps', 1))
  if accum < 1:
    raise ValueError(f'train.grad_accum_steps must be at least 1, got {accum}')
  if config.train.batch_size % (devices.total * accum):
    raise ValueError(
      f'train.batch_size={config.train.batch_size} does not split into '
      f'train.grad_accum_steps={accum} micro-batches on each of {devices.total} device(s); '
      f'use a multiple of {devices.total * accum}'
    )
  data = distributed.main_first(
    lambda: input_pipeline.prepare(config.data, str(workdir_path) if devices.is_main else None)
  )
  distributed.check_same(
    'the vocabularies or encoded training pairs', data.train.src, data.train.tgt
  )
  batcher, val_batcher = make_batchers(config, data, (devices.process_index, devices.process_count))
  tcfg = config.train
  model = build_model(config, data)
  return Experiment(
    config=config,
    workdir=workdir_path,
    devices=devices,
    data=data,
    batcher=batcher,
    val_batcher=val_batcher,
    model=model,
    total_steps=tcfg.num_train_steps or tcfg.num_epochs * batcher.batches_per_epoch,
    signature=checkpointing.signature(
      config.model.to_dict(),
      data.src_tok.vocab_size,
      data.tgt_tok.vocab_size,
      config.data.tokenizer,
    ),
    greedy_fn=greedy_search.make_greedy(model, data.max_len),
    grad_accum_steps=accum,
  )
