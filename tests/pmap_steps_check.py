"""Runs the trainer's compiled steps on 1 device (jit) and on all devices (pmap, and jit
with shardings) over the same global batches and prints the losses, metric sums and
parameters as one JSON line; then, with dropout on, 1 device against jit with shardings
(which draws the global batch's masks as one device does).

Run by tests/test_pmap.py in a subprocess whose XLA_FLAGS force several CPU devices (JAX
must not be imported before they are set):

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/pmap_steps_check.py
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seq2seq_jax import models  # noqa: E402
from seq2seq_jax.data import text
from seq2seq_jax.models import transformer
from seq2seq_jax.train import (
  distributed,
  single,
  steps,
)

VOCAB, WIDTH, BATCH, NUM_STEPS = 23, 7, 16, 20


def make_batches(num_steps: int = NUM_STEPS, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """Random batches with varying lengths and some empty rows (as the batcher pads)."""
  rng = np.random.default_rng(seed)
  batches = []
  for _ in range(num_steps):
    src_len = rng.integers(1, WIDTH + 1, BATCH)
    tgt_len = rng.integers(1, WIDTH + 1, BATCH)
    src_len[-3:] = tgt_len[-3:] = 0  # empty rows: no target tokens
    pos = np.arange(WIDTH)
    src = np.where(pos < src_len[:, None], rng.integers(3, VOCAB, (BATCH, WIDTH)), 0)
    tgt_out = np.where(pos < tgt_len[:, None], rng.integers(3, VOCAB, (BATCH, WIDTH)), 0)
    tgt_in = np.concatenate([np.full((BATCH, 1), text.BOS_ID), tgt_out[:, :-1]], 1)
    tgt_in = np.where(tgt_len[:, None] > 0, tgt_in, 0)
    batches.append(
      {
        'src': src.astype(np.int32),
        'src_len': src_len.astype(np.int32),
        'tgt_in': tgt_in.astype(np.int32),
        'tgt_out': tgt_out.astype(np.int32),
      }
    )
  return batches


def run(
  devices: distributed.Devices,
  model: models.EncoderDecoder,
  tx: Any,
  init: steps.TrainState,
  num_steps: int = NUM_STEPS,
  evaluate: bool = True,
) -> dict:
  """`num_steps` steps from `init` with the trainer's compiled steps for `devices` (and
  with `evaluate`, the eval step's sums on the first batch)."""
  state = devices.replicate(init)
  train_fn, eval_fn = single.compile_steps(model, tx, devices, 0.0)
  dropout_key = jax.random.key(1)
  losses, grad_norms = [], []
  batches = make_batches(num_steps)
  for batch in batches:
    state, metrics = train_fn(state, devices.shard(batch), dropout_key)
    metrics = jax.tree.map(lambda x: float(np.asarray(x).reshape(-1)[0]), jax.device_get(metrics))
    losses.append(metrics['loss'] / metrics['tokens'])
    grad_norms.append(metrics['grad_norm'])
  sums = jax.device_get(eval_fn(state.params, devices.shard(batches[0]))) if evaluate else {}
  final = jax.device_get(devices.unreplicate(state))
  return {
    'losses': losses,
    'grad_norms': grad_norms,
    'eval': {k: float(np.asarray(v).reshape(-1)[0]) for k, v in sums.items()},
    'step': int(final.step),
    'params': [np.asarray(x).tolist() for x in jax.tree.leaves(final.params)],
  }


def initial_state(model: models.EncoderDecoder, tx: Any) -> steps.TrainState:
  """A train state of `steps.init_state`'s shapes: parameters drawn U(-0.3, 0.3) in NumPy,
  Adam's moments and count zero (as `tx.init` makes them): no init program to compile."""
  shapes = jax.eval_shape(functools.partial(steps.init_state, model, tx), jax.random.key(0))
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.uniform(-0.3, 0.3, s.shape).astype(s.dtype), shapes.params)
  return state.replace(params=params)


def check_recurrent(decoder: str, out: dict) -> None:
  """The GRU with `decoder`: 1 device, pmap and jit with shardings, dropout off; 1 device
  and jit with shardings, dropout on."""
  n = jax.local_device_count()
  for dropout in (0.0, 0.3):
    model = models.build_model(
      src_vocab_size=VOCAB,
      tgt_vocab_size=VOCAB,
      embed_size=8,
      num_hiddens=12,
      num_layers=2 if dropout else 1,  # dropout acts between layers (the seed's GRU)
      dropout=dropout,
      decoder=decoder,
    )
    tx = steps.make_optimizer(learning_rate=0.005, grad_clip=1.0)
    init = initial_state(model, tx)
    runs = {
      'one': run(distributed.Devices(1), model, tx, init),
      'jit': run(distributed.Devices(n, mode='jit'), model, tx, init),
    }
    if dropout:
      out[f'{decoder}_dropout'] = runs
    else:
      out[decoder] = {**runs, 'all': run(distributed.Devices(n, mode='pmap'), model, tx, init)}


def check_transformer(out: dict, num_steps: int = 6) -> None:
  """A one-block Transformer: 1 device, pmap and jit with shardings, `num_steps` steps,
  dropout off and no evaluation (compiling is most of the cost; the GRU checks those)."""
  n = jax.local_device_count()
  model = transformer.build_model(
    src_vocab_size=VOCAB,
    tgt_vocab_size=VOCAB,
    num_hiddens=8,
    num_layers=1,
    num_heads=2,
    ffn_size=16,
  )
  tx = steps.make_optimizer(learning_rate=0.005, grad_clip=1.0)
  init = initial_state(model, tx)
  out['transformer'] = {
    'one': run(distributed.Devices(1), model, tx, init, num_steps, evaluate=False),
    'jit': run(distributed.Devices(n, mode='jit'), model, tx, init, num_steps, evaluate=False),
    'all': run(distributed.Devices(n, mode='pmap'), model, tx, init, num_steps, evaluate=False),
  }


def main() -> None:
  """Usage: pmap_steps_check.py [FAMILY ...]: recurrent decoders ('attention', 'plain')
  or 'transformer' (default: attention)."""
  out = {'device_count': jax.local_device_count()}
  for name in sys.argv[1:] or ['attention']:
    if name == 'transformer':
      check_transformer(out)
    else:
      check_recurrent(name, out)
  print(json.dumps(out))


if __name__ == '__main__':
  main()
