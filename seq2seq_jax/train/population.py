"""Populations: N models trained together, in one compiled step, on the same batches.

  python train.py --config=configs/population.py --workdir=workdirs/population \
      --config.data.manual_dir=../shared/data/fra-eng

`config.population.size = N` trains N copies of the config's model that differ in their
seed (parameter initialisation and dropout masks) and, optionally, their learning rate.
Every member's `TrainState` is stacked on a leading `[members]` axis and the pure
`steps.train_step` is `jax.vmap`-ed over (state, dropout key, learning rate) with the
batch shared (`in_axes=None`): the N models are one XLA program that reads each batch
once. With several devices the step runs as `train.parallel` says (`distributed.py`):
under 'jit' (the default) it is jitted over a device mesh, the batch split over its 'data'
axis and the stacked states replicated (or, with `population.member_shards` > 1, split
over its 'members' axis); under 'pmap' the vmapped step runs inside `jax.pmap`, the batch
split over the devices and every device holding all the members.

What can differ between members: only what can be a traced value inside one program.
- `population.seeds`: parameter initialisation and dropout (default `seed + i`).
- `population.learning_rates`: the optimizer is built with `learning_rate=1.0` and each
  member's update is scaled by its own rate. Adam's and AdamW's updates and every
  schedule here are proportional to the peak learning rate, so this is the same update
  (bit for bit with the constant schedule).
The model's shape, the dropout rate (`nn.Dropout` takes a Python float), label smoothing,
the schedule's shape and the batches are shared.

Member i trains to the same parameters (to float tolerance: a batched matmul may sum in
another order) as a single run from member i's seed and learning rate on the same
batches. The batch order comes from `config.seed` and is shared, so with the default
seeds member 0 is exactly the config's single run.

The workdir:
  config.json, vocab_*.json        as a single run's
  metrics.jsonl                    one line per member per interval, with its `member`
  plots/loss.png, plots/bleu.png   every member's curve
  summary.json, result.json        per-member scores; `winner`: the best validation BLEU
  members/<i>/                     a complete single-run workdir per member (config.json
                                   with its learning rate, vocabularies, checkpoints/,
                                   metrics.jsonl, tensorboard/): `translate`, `evaluate`
                                   and `inference.load` take it as the workdir.
A member that diverges (non-finite loss) is reported and left to run with the others;
training stops with an error only when every member has diverged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from seq2seq_jax import errors
from seq2seq_jax.train import distributed, steps

Array = jax.Array
MEMBERS_DIR = 'members'
SUMMARY = 'summary.json'
# The population's own files at the workdir's top; every other file there (vocabularies,
# tokenizer models) is shared and copied into each member's directory.
OWN_FILES = ('config.json', 'metrics.jsonl', SUMMARY, 'result.json')


# ---------------------------------------------------------------------------------------
# Who is in the population.


@dataclasses.dataclass(frozen=True)
class Member:
  """One member's varied hyperparameters."""

  index: int
  seed: int
  learning_rate: float


def roster(config: ml_collections.ConfigDict) -> list[Member]:
  """The members a config asks for: `population.seeds` (default `seed + i`) and
  `population.learning_rates` (default `train.learning_rate` for all)."""
  pcfg = config.population
  size = int(pcfg.size)
  if size < 1:
    raise errors.ConfigError(f'population.size must be at least 1, got {size}')
  seeds = tuple(pcfg.seeds) or tuple(config.seed + i for i in range(size))
  rates = tuple(pcfg.learning_rates) or (config.train.learning_rate,) * size
  for name, values in (('seeds', seeds), ('learning_rates', rates)):
    if len(values) != size:
      raise errors.ConfigError(
        f'population.{name} has {len(values)} values but population.size is {size} '
        '(give one per member, or none)'
      )
  for lr in rates:
    if not lr > 0:
      raise errors.ConfigError(f'population.learning_rates must be positive, got {lr}')
  return [Member(i, int(s), float(lr)) for i, (s, lr) in enumerate(zip(seeds, rates, strict=True))]


# ---------------------------------------------------------------------------------------
# Pure pieces: stacked states and the vmapped steps.


def scale_updates(tx: optax.GradientTransformation, factor: Array) -> optax.GradientTransformation:
  """`tx` with its updates multiplied by `factor` (a traced learning rate). The optimizer
  state keeps `tx`'s structure, so a member's state is a single run's state."""

  def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
    updates, state = tx.update(updates, state, params)
    return jax.tree.map(lambda u: (factor * u).astype(u.dtype), updates), state

  return optax.GradientTransformation(tx.init, update)


def member_keys(seed: int) -> tuple[Array, Array]:
  """(init key, dropout key) of a run with this seed, exactly as the trainer splits them."""
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  return init_key, dropout_key


def stack(trees: Sequence[Any]) -> Any:
  """Trees of the same structure -> one tree with a leading [members] axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Member `index` of a stacked tree."""
  return jax.tree.map(lambda x: x[index], tree)


def init_population(
  model: nn.Module, tx: optax.GradientTransformation, seeds: Sequence[int]
) -> tuple[steps.TrainState, Array]:
  """Stacked initial states `[members, ...]` and dropout keys `[members]`.

  Each member is initialised on its own, as a single run with its seed would be, so the
  populations start from exactly the single runs' parameters."""
  keys = [member_keys(s) for s in seeds]
  init = jax.jit(steps.init_state, static_argnums=(0, 1))  # the same bits as eager, faster
  states = [init(model, tx, init_key) for init_key, _ in keys]
  return stack(states), jnp.stack([dropout_key for _, dropout_key in keys])


def _over_members(fn: Any, xs: Any, size: int, chunk: int) -> Any:
  """`fn` applied to every member of the stacked `xs`: one `jax.vmap` over all members
  (`chunk` 0 or >= size), or a `lax.map` over groups of `chunk` members vmapped
  together (1: one member after another). Either way one compiled program."""
  if chunk <= 0 or chunk >= size:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs) if chunk == 1 else jax.lax.map(fn, xs, batch_size=chunk)


def resolve_chunk(chunk: int, backend: str | None = None) -> int:
  """`population.chunk` -1 (auto): all members in one vmap on GPU/TPU; one member after
  another on CPU, where XLA's batched matmuls are slower than its plain ones."""
  if chunk >= 0:
    return chunk
  return 1 if (backend or jax.default_backend()) == 'cpu' else 0


def population_train_step(
  states: steps.TrainState,
  batch: steps.Batch,
  dropout_keys: Array,
  learning_rates: Array,
  *,
  tx: optax.GradientTransformation,
  chunk: int = 0,
  **step_options: Any,
) -> tuple[steps.TrainState, steps.Metrics]:
  """`steps.train_step` for every member on the same batch, in one program. Pure.

  states: stacked `[members, ...]`; dropout_keys, learning_rates: `[members]`; `tx` is
  built with `learning_rate=1.0`; `chunk`: members vectorised together (0: all, one
  `jax.vmap`); `step_options`: the rest of `steps.train_step`'s keywords (`model`,
  `label_smoothing`, `axis_name`, `grad_accum_steps`). Returns the new states and metric
  sums `[members]`.
  """

  def one(member: tuple[steps.TrainState, Array, Array]) -> tuple[steps.TrainState, Any]:
    state, key, lr = member
    return steps.train_step(state, batch, key, tx=scale_updates(tx, lr), **step_options)

  size = learning_rates.shape[0]
  return _over_members(one, (states, dropout_keys, learning_rates), size, chunk)


def population_eval_step(
  params: Any,
  batch: steps.Batch,
  *,
  model: nn.Module,
  axis_name: str | None = None,
  chunk: int = 0,
) -> steps.Metrics:
  """Metric sums `[members]` of every member on the same batch."""
  size = jax.tree.leaves(params)[0].shape[0]
  return _over_members(
    lambda p: steps.eval_step(p, batch, model=model, axis_name=axis_name), params, size, chunk
  )


def compile_population_steps(
  model: nn.Module,
  tx: optax.GradientTransformation,
  devices: distributed.Devices,
  label_smoothing: float = 0.0,
  chunk: int = 0,
  grad_accum_steps: int = 1,
) -> tuple[Any, Any]:
  """The compiled population steps for `devices` (jit; jit with shardings: stacked states
  replicated, or with `member_shards` > 1 split over the mesh's 'members' axis, the batch
  split over its 'data' axis; or pmap: the members' vmap inside pmap); the states'
  buffers are donated."""
  train = functools.partial(
    population_train_step,
    model=model,
    tx=tx,
    label_smoothing=label_smoothing,
    chunk=chunk,
    grad_accum_steps=grad_accum_steps,
  )
  evaluate = functools.partial(population_eval_step, model=model, chunk=chunk)
  if devices.member_shards > 1:  # states, keys and rates split over the 'members' axis
    return (
      devices.compile(
        train,
        ('members', 'batch', 'members', 'members'),
        donate=(0,),
        out_roles=('members', 'shared'),
      ),
      devices.compile(evaluate, ('members', 'batch')),
    )
  return (
    devices.compile(train, ('state', 'batch', 'shared', 'shared'), donate=(0,)),
    devices.compile(evaluate, ('state', 'batch')),
  )


def size(config: ml_collections.ConfigDict) -> int:
  """How many members the config asks for (1: a single run)."""
  return int(config.population.size)


# ---------------------------------------------------------------------------------------
# Member configs and the summary.


def member_config(config: ml_collections.ConfigDict, member: Member) -> dict:
  """The config a member's workdir records: its learning rate, a population of one."""
  cfg = json.loads(config.to_json_best_effort())
  cfg['train']['learning_rate'] = member.learning_rate
  cfg['population'] = {
    'size': 1,
    'learning_rates': [],
    'seeds': [],
    'member': member.index,
    'member_seed': member.seed,  # its parameters and dropout; `seed` gave the batch order
  }
  return cfg


def summarize(
  members: list[Member],
  history: list[dict],
  best_bleu: Sequence[float],
  best_step: Sequence[int | None],
) -> dict:
  """Per-member final scores and the winner (the best validation BLEU ever reached):
  `history` is the metrics log's lines (with `member`), `best_*` each member's best."""
  rows = []
  for m in members:
    last = {}
    for r in history:
      if r['member'] == m.index:
        last.update({k: v for k, v in r.items() if k not in ('member', 'epoch')})
    rows.append(
      {
        'member': m.index,
        'seed': m.seed,
        'learning_rate': m.learning_rate,
        'train_loss': last.get('train_loss'),
        'val_loss': last.get('val_loss'),
        'val_bleu': last.get('val_bleu'),
        'best_bleu': best_bleu[m.index],
        'best_step': best_step[m.index],
      }
    )
  winner = max(rows, key=lambda r: (r['best_bleu'], -r['member']))['member']
  return {'winner': winner, 'members': rows}


def format_summary(summary: dict) -> str:
  """The summary as a Markdown table; the winner is marked with `*`."""

  def num(x: Any, fmt: str) -> str:
    return '-' if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

  lines = [
    '| member | seed | learning rate | train loss | val loss | val BLEU | best BLEU (step) |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ]
  for r in summary['members']:
    mark = ' *' if r['member'] == summary['winner'] else ''
    lines.append(
      f'| {r["member"]}{mark} | {r["seed"]} | {r["learning_rate"]:g} | '
      f'{num(r["train_loss"], ".4f")} | {num(r["val_loss"], ".4f")} | '
      f'{num(r["val_bleu"], ".2f")} | {num(r["best_bleu"], ".2f")} ({r["best_step"]}) |'
    )
  return '\n'.join(lines)


def load_summary(workdir: str | Path) -> dict | None:
  """A population workdir's `summary.json` (None for a single run's workdir)."""
  path = Path(workdir) / SUMMARY
  return json.loads(path.read_text()) if path.exists() else None
