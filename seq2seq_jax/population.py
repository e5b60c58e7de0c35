"""Populations: N models trained together, in one compiled step, on the same batches.

  python train.py --config=configs/population.py --workdir=workdirs/population \
      --config.data.manual_dir=../shared/data/fra-eng

`config.population.size = N` trains N copies of the config's model that differ in their
seed (parameter initialisation and dropout masks) and, optionally, their learning rate.
Every member's `TrainState` is stacked on a leading `[members]` axis and the pure
`steps.train_step` is `jax.vmap`-ed over (state, dropout key, learning rate) with the
batch shared (`in_axes=None`): the N models are one XLA program that reads each batch
once. With several devices the vmapped step runs inside `jax.pmap`: the batch is split
over the devices and every device holds all the members.

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
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from seq2seq_jax import (
  checkpointing,
  decode,
  distributed,
  input_pipeline,
  metrics_lib,
  steps,
  trainer,
)

Array = jax.Array
MEMBERS_DIR = 'members'
SUMMARY = 'summary.json'
# The population's own files at the workdir's top; every other file there (vocabularies,
# tokenizer models) is shared and copied into each member's directory.
_OWN_FILES = ('config.json', 'metrics.jsonl', SUMMARY, 'result.json')


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
  pcfg = config.get('population') or ml_collections.ConfigDict({'size': 1})
  size = int(pcfg.get('size', 1))
  if size < 1:
    raise ValueError(f'population.size must be at least 1, got {size}')
  seeds = tuple(pcfg.get('seeds', ())) or tuple(config.seed + i for i in range(size))
  rates = tuple(pcfg.get('learning_rates', ())) or (config.train.learning_rate,) * size
  for name, values in (('seeds', seeds), ('learning_rates', rates)):
    if len(values) != size:
      raise ValueError(
        f'population.{name} has {len(values)} values but population.size is {size} '
        '(give one per member, or none)'
      )
  for lr in rates:
    if not lr > 0:
      raise ValueError(f'population.learning_rates must be positive, got {lr}')
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
  model: nn.Module,
  tx: optax.GradientTransformation,
  label_smoothing: float = 0.0,
  axis_name: str | None = None,
  chunk: int = 0,
) -> tuple[steps.TrainState, steps.Metrics]:
  """`steps.train_step` for every member on the same batch, in one program. Pure.

  states: stacked `[members, ...]`; dropout_keys, learning_rates: `[members]`; `tx` is
  built with `learning_rate=1.0`; `chunk`: members vectorised together (0: all, one
  `jax.vmap`). Returns the new states and metric sums `[members]`.
  """

  def one(member: tuple[steps.TrainState, Array, Array]) -> tuple[steps.TrainState, Any]:
    state, key, lr = member
    return steps.train_step(
      state,
      batch,
      key,
      model=model,
      tx=scale_updates(tx, lr),
      label_smoothing=label_smoothing,
      axis_name=axis_name,
    )

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
) -> tuple[Any, Any]:
  """Jitted (one device) or pmapped (the members' vmap inside pmap) population steps; the
  states' buffers are donated. Under pmap the states are replicated, the batch is sharded
  and the keys and learning rates are broadcast."""
  axis = 'batch' if devices.parallel else None
  train = functools.partial(
    population_train_step,
    model=model,
    tx=tx,
    label_smoothing=label_smoothing,
    axis_name=axis,
    chunk=chunk,
  )
  evaluate = functools.partial(population_eval_step, model=model, axis_name=axis, chunk=chunk)
  if devices.parallel:
    return (
      jax.pmap(train, axis_name=axis, in_axes=(0, 0, None, None), donate_argnums=(0,)),
      jax.pmap(evaluate, axis_name=axis),
    )
  return jax.jit(train, donate_argnums=(0,)), jax.jit(evaluate)


# ---------------------------------------------------------------------------------------
# Logging: one file for the population, one workdir per member.


def _first(x: Any, size: int) -> np.ndarray:
  """A `[members]` metric from `[members]` (jit) or `[devices, members]` (pmap)."""
  return np.asarray(x).reshape(-1, size)[0]


class PopulationLog:
  """Writes interval aggregates to `metrics.jsonl` (all members, with `member`) and to
  each member's own `metrics.jsonl` and TensorBoard events; plots every member's curves.
  Only process 0 writes."""

  def __init__(
    self, workdir: Path, member_dirs: list[Path], *, enabled: bool, initial_step: int
  ) -> None:
    self.workdir, self.member_dirs, self.enabled = workdir, member_dirs, enabled
    self.size = len(member_dirs)
    self.pending: list[Any] = []
    self.history: list[dict] = []
    self.diverged: dict[int, int] = {}  # member -> first step with a non-finite loss
    self._t = time.monotonic()
    self._tb: list[Any] = []
    if not enabled:
      return
    for path in [workdir / 'metrics.jsonl'] + [d / 'metrics.jsonl' for d in member_dirs]:
      kept = _read_jsonl(path, initial_step)  # a resumed run keeps the steps it keeps
      path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
      if path.parent == workdir:
        self.history = kept
    try:
      from tensorboardX import SummaryWriter

      self._tb = [SummaryWriter(str(d / 'tensorboard')) for d in member_dirs]
    except ImportError:  # pragma: no cover
      self._tb = []

  def step_metrics(self, metrics: Any) -> None:
    self.pending.append(metrics)

  def flush(self, step: int, epoch: int) -> list[float]:
    """Writes the interval's aggregate per member; returns each member's train loss."""
    if not self.pending:
      return []
    fetched = jax.device_get(self.pending)
    count = len(fetched)
    self.pending = []
    sums = {k: np.zeros(self.size) for k in ('loss', 'correct', 'tokens', 'grad_norm')}
    for m in fetched:
      m = {k: _first(v, self.size).astype(np.float64) for k, v in m.items()}
      for i in np.flatnonzero(~np.isfinite(m['loss'] / np.maximum(m['tokens'], 1.0))):
        if int(i) not in self.diverged:
          self.diverged[int(i)] = step
          logging.warning('member %d: the training loss became non-finite by step %d', i, step)
      for k in sums:
        sums[k] += m[k]
    now = time.monotonic()
    elapsed, self._t = max(now - self._t, 1e-9), now
    tokens = np.maximum(sums['tokens'], 1.0)
    losses = []
    for i in range(self.size):
      record = {
        'step': step,
        'epoch': epoch,
        'train_loss': float(sums['loss'][i] / tokens[i]),
        'train_accuracy': float(sums['correct'][i] / tokens[i]),
        'grad_norm': float(sums['grad_norm'][i] / count),
        'tokens_per_s': float(sums['tokens'][i] / elapsed),
        'steps_per_s': count / elapsed,
      }
      losses.append(record['train_loss'])
      if i not in self.diverged:
        self._write(i, record)
    if self.enabled:
      logging.info(
        'step %d (epoch %d): train loss by member %s; %.0f tokens/s (all members)',
        step,
        epoch,
        ' '.join(f'{x:.4f}' for x in losses),
        float(np.sum(sums['tokens'])) / elapsed,
      )
    return losses

  def eval(self, step: int, member: int, record: dict[str, float]) -> None:
    self._write(member, {'step': step, **record})

  def _write(self, member: int, record: dict) -> None:
    if not self.enabled:
      return
    tagged = {'step': record['step'], 'member': member, **record}
    self.history.append(tagged)
    with (self.workdir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps(tagged) + '\n')
    with (self.member_dirs[member] / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb:
      for k, v in record.items():
        if k not in ('step', 'epoch'):
          self._tb[member].add_scalar(k, v, record['step'])

  def plot(self, labels: list[str]) -> None:
    """Every member's training loss and validation BLEU against steps."""
    if not self.enabled:
      return
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    out = self.workdir / 'plots'
    out.mkdir(exist_ok=True)
    for key, name, ylabel in (
      ('train_loss', 'loss.png', 'training loss per target token'),
      ('val_bleu', 'bleu.png', 'validation BLEU (greedy)'),
    ):
      fig, ax = plt.subplots(figsize=(7, 4.5))
      for i, label in enumerate(labels):
        points = [(r['step'], r[key]) for r in self.history if r['member'] == i and key in r]
        if points:
          ax.plot(
            *zip(*points, strict=True), marker='.' if key == 'val_bleu' else None, label=label
          )
      ax.set(xlabel='step', ylabel=ylabel, title=f'Population of {self.size}')
      ax.legend(fontsize='small')
      ax.grid(alpha=0.3)
      fig.tight_layout()
      fig.savefig(out / name, dpi=100)
      plt.close(fig)

  def close(self) -> None:
    for writer in self._tb:
      writer.close()


def _read_jsonl(path: Path, max_step: int) -> list[dict]:
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if record.get('step', 0) <= max_step:
      records.append(record)
  return records


# ---------------------------------------------------------------------------------------
# Member workdirs, resume and the summary.


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


def _write_member_dirs(
  workdir: Path, dirs: list[Path], config: ml_collections.ConfigDict, members: list[Member]
) -> None:
  """Each member's config and the shared tokenizer files (whatever the input pipeline
  saved in the workdir), so that its directory is a complete single-run workdir."""
  shared = [f for f in workdir.iterdir() if f.is_file() and f.name not in _OWN_FILES]
  for d, m in zip(dirs, members, strict=True):
    d.mkdir(parents=True, exist_ok=True)
    (d / 'config.json').write_text(json.dumps(member_config(config, m), indent=2))
    for f in shared:
      shutil.copyfile(f, d / f.name)


def _common_step(ckpts: list[checkpointing.Checkpoints]) -> int | None:
  """The last step every member has a checkpoint of (a run killed while saving the
  members one by one resumes from the previous complete step)."""
  saved = [set(c.latest.all_steps()) for c in ckpts]
  if not any(saved):
    return None
  common = set.intersection(*saved)
  if not common:
    raise trainer.TrainingError(
      'the members in this workdir have no checkpoint step in common; use a new --workdir'
    )
  return max(common)


def _resume(
  members: list[Member],
  ckpts: list[checkpointing.Checkpoints],
  states: steps.TrainState,
  signature: dict,
) -> tuple[steps.TrainState, list[dict], dict | None]:
  """(stacked states, each member's best BLEU and step, the data position) from the last
  step every member saved; the fresh states and no position when nothing was saved."""
  best = [{'bleu': -1.0, 'step': None} for _ in members]
  start = _common_step(ckpts)
  if start is None:
    return states, best, None
  restored, meta = [], {}
  for m, c in zip(members, ckpts, strict=True):
    _, saved = c.read_meta(str(start))
    checkpointing.check_compatible(saved['signature'], signature)
    if saved.get('member') != dataclasses.asdict(m):
      raise trainer.TrainingError(
        f'member {m.index} in this workdir was {saved.get("member")}, the config asks for '
        f'{dataclasses.asdict(m)}; use a new --workdir or the original config'
      )
    _, state, meta = c.restore(str(start), unstack(states, m.index))
    restored.append(state)
    best[m.index] = {'bleu': meta.get('best_bleu', -1.0), 'step': meta.get('best_step')}
  return stack(restored), best, meta['position']


def summarize(members: list[Member], history: list[dict], best: list[dict]) -> dict:
  """Per-member final scores and the winner (the best validation BLEU ever reached)."""
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
        'best_bleu': best[m.index]['bleu'],
        'best_step': best[m.index]['step'],
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


def evaluate_members(
  eval_fn: Any,
  greedy_fn: Any,
  states: steps.TrainState,
  val_batcher: input_pipeline.Batcher,
  data: input_pipeline.Data,
  devices: distributed.Devices,
  size: int,
  *,
  max_sentences: int,
  decode_batch_size: int,
) -> list[dict[str, float]]:
  """Each member's validation loss and accuracy (one vmapped pass over the batches) and
  greedy BLEU and chrF (one member at a time, as a single run computes them)."""
  sums: dict[str, np.ndarray] = {}
  for batch in val_batcher.one_pass():
    out = jax.device_get(eval_fn(states.params, devices.shard(batch)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + _first(v, size).astype(np.float64)
  tokens = np.maximum(sums['tokens'], 1.0)
  params = devices.unreplicate(states).params
  records = []
  for i in range(size):
    bleu, _ = trainer.evaluate_bleu(
      greedy_fn,
      unstack(params, i),
      data,
      max_sentences=max_sentences,
      batch_size=decode_batch_size,
      num_samples=0,
    )
    records.append(
      {
        'val_loss': float(sums['loss'][i] / tokens[i]),
        'val_accuracy': float(sums['correct'][i] / tokens[i]),
        'val_bleu': bleu['bleu'],
        'val_chrf': bleu['chrf'],
      }
    )
  return records


# ---------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the population (resuming when `workdir` holds one); returns the summary and
  the winner's final metrics."""
  workdir_path = Path(workdir).absolute()
  workdir_path.mkdir(parents=True, exist_ok=True)
  devices = distributed.Devices.current()
  is_main = devices.is_main
  tcfg, ecfg = config.train, config.eval
  devices.check_divides('train.batch_size', tcfg.batch_size)
  devices.check_divides('eval.batch_size', ecfg.batch_size)
  members = roster(config)
  size = len(members)

  # Data and models: the batches are the single run's (`config.seed`), shared by all.
  data = distributed.main_first(
    lambda: input_pipeline.prepare(config.data, str(workdir_path) if is_main else None)
  )
  shard = (devices.process_index, devices.process_count)
  batcher, val_batcher = trainer.make_batchers(config, data, shard)
  steps_per_epoch = batcher.batches_per_epoch
  total_steps = tcfg.num_train_steps or tcfg.num_epochs * steps_per_epoch
  eval_every = tcfg.eval_every_steps or steps_per_epoch
  ckpt_every = tcfg.checkpoint_every_steps or steps_per_epoch
  model = trainer.build(config, data)
  tx = steps.make_optimizer(
    learning_rate=1.0,  # each member scales its updates by its own rate
    grad_clip=tcfg.grad_clip,
    schedule=tcfg.schedule,
    warmup_steps=tcfg.warmup_steps,
    total_steps=total_steps,
    weight_decay=tcfg.weight_decay,
  )
  states, dropout_keys = init_population(model, tx, [m.seed for m in members])
  learning_rates = jnp.asarray([m.learning_rate for m in members], jnp.float32)
  signature = checkpointing.signature(
    config.model.to_dict(), data.src_tok.vocab_size, data.tgt_tok.vocab_size, config.data.tokenizer
  )
  member_dirs = [workdir_path / MEMBERS_DIR / str(m.index) for m in members]
  ckpts = [checkpointing.Checkpoints(d, keep=tcfg.keep_checkpoints) for d in member_dirs]

  # Resume: every member from the last step they all saved.
  states, best, position = _resume(members, ckpts, states, signature)
  if position is not None:
    batcher.restore(position)
    logging.info('resumed the population of %d from step %d', size, int(states.step[0]))
  if is_main:
    (workdir_path / 'config.json').write_text(config.to_json_best_effort(indent=2))
    _write_member_dirs(workdir_path, member_dirs, config, members)
  start_step = int(states.step[0])
  logging.info(
    'population of %d: %s parameters each; %d steps per epoch; training to step %d on %d device(s)',
    size,
    f'{sum(x.size for x in jax.tree.leaves(unstack(states.params, 0))):,}',
    steps_per_epoch,
    total_steps,
    devices.total,
  )

  chunk = resolve_chunk(int(config.population.get('chunk', -1)))
  train_fn, eval_fn = compile_population_steps(model, tx, devices, tcfg.label_smoothing, chunk)
  greedy_fn = decode.make_greedy(model, data.max_len)
  log = PopulationLog(workdir_path, member_dirs, enabled=is_main, initial_step=start_step)
  labels = [f'{m.index}: lr {m.learning_rate:g}, seed {m.seed}' for m in members]
  states = devices.replicate(states)

  def save(step: int, is_best: Sequence[bool] = ()) -> None:
    host = jax.device_get(devices.unreplicate(states))
    for m, c in zip(members, ckpts, strict=True):
      meta = {
        'position': batcher.position,
        'best_bleu': best[m.index]['bleu'],
        'best_step': best[m.index]['step'],
        'signature': signature,
        'max_len': data.max_len,
        'num_steps': config.data.num_steps,
        'member': dataclasses.asdict(m),
      }
      c.save(step, unstack(host, m.index), meta, best=bool(is_best and is_best[m.index]))

  def run_eval(step: int) -> list[dict[str, float]]:
    records = evaluate_members(
      eval_fn,
      greedy_fn,
      states,
      val_batcher,
      data,
      devices,
      size,
      max_sentences=ecfg.bleu_sentences,
      decode_batch_size=ecfg.decode_batch_size,
    )
    improved = []
    for m, record in zip(members, records, strict=True):
      log.eval(step, m.index, record)
      better = distributed.main_decides(record['val_bleu'] > best[m.index]['bleu'])
      if better:
        best[m.index] = {'bleu': record['val_bleu'], 'step': step}
      improved.append(better)
    logging.info(
      'step %d: validation BLEU by member %s',
      step,
      ' '.join(f'{r["val_bleu"]:.2f}' for r in records),
    )
    log.plot(labels)
    if any(improved):
      save(step, improved)
    return records

  # Train.
  t_start, step, last_eval = time.monotonic(), start_step, []
  stop_reason = None
  with trainer.StopSignal() as stop:
    batches = iter(batcher)
    while step < total_steps:
      batch = next(batches)
      states, metrics = train_fn(states, devices.shard(batch), dropout_keys, learning_rates)
      step += 1
      log.step_metrics(metrics)
      if step % tcfg.log_every_steps == 0 or step == total_steps:
        log.flush(step, batcher.epoch)
        _check_alive(log, size)
      if step % eval_every == 0 and step < total_steps:
        last_eval = run_eval(step)
      if step % ckpt_every == 0:
        save(step)
      stop_reason = stop.reason(step, tcfg.time_budget_s, tcfg.log_every_steps)
      if stop_reason:
        break

    # Final evaluation and checkpoints (also after a signal or the time budget).
    log.flush(step, batcher.epoch)
    _check_alive(log, size)
    if step > start_step or not last_eval:
      last_eval = run_eval(step)
    save(step)
    for c in ckpts:
      c.wait()
  for c in ckpts:
    c.close()
  log.close()
  elapsed = time.monotonic() - t_start
  if stop_reason:
    logging.warning(
      'stopped at step %d: %s; the checkpoints are saved, rerun the same command to resume',
      step,
      stop_reason,
    )
  logging.info(
    'trained a population of %d for %d steps in %.1f s', size, step - start_step, elapsed
  )

  # The summary (which member won), then the winner's translations of the examples.
  summary = summarize(members, log.history, best)
  for i, d in log.diverged.items():
    summary['members'][i]['diverged_at_step'] = d
  winner = summary['winner']
  logging.info(
    'the winner is member %d (learning rate %g, seed %d): best validation BLEU %.2f; '
    'the table is in %s',
    winner,
    members[winner].learning_rate,
    members[winner].seed,
    best[winner]['bleu'],
    workdir_path / SUMMARY,
  )
  result = {'step': step, 'stopped': stop_reason, **last_eval[winner], **summary}
  if is_main:
    (workdir_path / SUMMARY).write_text(json.dumps(summary, indent=2))
    (workdir_path / 'result.json').write_text(json.dumps(result, indent=2))
    print(format_summary(summary), flush=True)
    if config.examples:
      _print_examples(config, data, greedy_fn, unstack(devices.unreplicate(states).params, winner))
  sys.stdout.flush()
  return result


def _check_alive(log: PopulationLog, size: int) -> None:
  if len(log.diverged) == size:
    first = min(log.diverged.values())
    raise trainer.TrainingError(
      f'the training loss of every member became non-finite (the first by step {first}); '
      'lower the learning rates or check the data'
    )


def _print_examples(
  config: ml_collections.ConfigDict, data: input_pipeline.Data, greedy_fn: Any, params: Any
) -> None:
  """The book's examples, translated by the winner, one per line."""
  sources = [e for e, _ in config.examples]
  outs = trainer.translate_ids(
    greedy_fn, params, [data.src_tok.encode(e) for e in sources], data.max_len, len(sources)
  )
  for (eng, fra), out in zip(config.examples, outs, strict=True):
    hyp = data.tgt_tok.decode(out)
    score = metrics_lib.bleu(hyp, data.tgt_tok.reference(fra), k=2)
    print(f'{eng} => {hyp}, bleu {score:.3f}', flush=True)


def load_summary(workdir: str | Path) -> dict | None:
  """A population workdir's `summary.json` (None for a single run's workdir)."""
  path = Path(workdir) / SUMMARY
  return json.loads(path.read_text()) if path.exists() else None
