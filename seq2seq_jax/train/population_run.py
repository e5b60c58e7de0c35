"""A population as the loop's run: N members in one compiled step, one workdir each.

The pure pieces (the roster, stacked states, the vmapped steps, the summary) are in
`population.py`; the bookkeeping it shares with a single run (checkpoints, metrics, the
best) is `runs.Run`'s. This module writes the members' directories `members/<i>/` (a
complete single-run workdir per member) and `summary.json`, and resumes every member
from the last step they all saved.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from seq2seq_jax.errors import TrainingError
from seq2seq_jax.train import checkpointing, population, reporting, runs, steps
from seq2seq_jax.train.experiment import Experiment


def _write_member_dirs(
  workdir: Path,
  dirs: list[Path],
  config: ml_collections.ConfigDict,
  members: list[population.Member],
) -> None:
  """Each member's config and the shared tokenizer files (whatever the input pipeline
  saved in the workdir), so that its directory is a complete single-run workdir."""
  shared = [f for f in workdir.iterdir() if f.is_file() and f.name not in population.OWN_FILES]
  for d, m in zip(dirs, members, strict=True):
    d.mkdir(parents=True, exist_ok=True)
    (d / 'config.json').write_text(json.dumps(population.member_config(config, m), indent=2))
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
    raise TrainingError(
      'the members in this workdir have no checkpoint step in common; use a new --workdir'
    )
  return max(common)


def _resume(
  members: list[population.Member],
  ckpts: list[checkpointing.Checkpoints],
  states: steps.TrainState,
  signature: dict,
) -> tuple[steps.TrainState, list[dict]]:
  """(stacked states, each member's checkpoint meta, with the data position) from the
  last step every member saved; the fresh states and no metas when nothing was saved."""
  start = _common_step(ckpts)
  if start is None:
    return states, []
  restored, metas = [], []
  for m, c in zip(members, ckpts, strict=True):
    _, saved = c.read_meta(str(start))
    checkpointing.check_compatible(saved['signature'], signature)
    if saved.get('member') != dataclasses.asdict(m):
      raise TrainingError(
        f'member {m.index} in this workdir was {saved.get("member")}, the config asks for '
        f'{dataclasses.asdict(m)}; use a new --workdir or the original config'
      )
    _, state, meta = c.restore(str(start), population.unstack(states, m.index))
    restored.append(state)
    metas.append(meta)
  return population.stack(restored), metas


class PopulationRun(runs.Run):
  """`population.size` members trained on the same batches, each from its own seed and
  learning rate, in one compiled step."""

  def __init__(self, exp: Experiment) -> None:
    self.exp = exp
    config, devices = exp.config, exp.devices
    self.members = population.roster(config)
    self.size = len(self.members)
    tx = exp.optimizer(1.0)  # each member scales its updates by its own rate
    states, self.dropout_keys = population.init_population(
      exp.model, tx, [m.seed for m in self.members]
    )
    rates = jnp.asarray([m.learning_rate for m in self.members], jnp.float32)
    if devices.member_shards > 1:  # members split over the mesh: rates and keys with them
      self.learning_rates = devices.place_members(rates)
      self.dropout_keys = devices.place_members(self.dropout_keys)
    else:
      self.learning_rates = devices.broadcast(rates)
      self.dropout_keys = devices.broadcast(self.dropout_keys)
    member_dirs = [exp.workdir / population.MEMBERS_DIR / str(m.index) for m in self.members]
    self.ckpts = [
      checkpointing.Checkpoints(
        d, keep=config.train.keep_checkpoints, keep_best=config.train.keep_best
      )
      for d in member_dirs
    ]

    # Resume: every member from the last step they all saved.
    states, metas = _resume(self.members, self.ckpts, states, exp.signature)
    self.best = runs.KeepBest.from_meta(metas) if metas else runs.KeepBest.start(self.size)
    if metas:
      exp.batcher.restore(metas[0]['position'])
      logging.info('resumed the population of %d from step %d', self.size, int(states.step[0]))
    if exp.is_main:
      (exp.workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
      _write_member_dirs(exp.workdir, member_dirs, config, self.members)
    self.start_step = int(states.step[0])
    logging.info(
      'population of %d: %s parameters each; %d steps per epoch; training to step %d on %s',
      self.size,
      f'{sum(x.size for x in jax.tree.leaves(population.unstack(states.params, 0))):,}',
      exp.batcher.batches_per_epoch,
      exp.total_steps,
      devices.describe(),
    )
    self.train_fn, self.eval_fn = _compile(exp, tx)
    self.log = reporting.Reporter(
      exp.workdir,
      member_dirs,
      enabled=exp.is_main,
      total_steps=exp.total_steps,
      initial_step=self.start_step,
      labels=[f'{m.index}: lr {m.learning_rate:g}, seed {m.seed}' for m in self.members],
    )
    self.state = devices.place_members(states)

  def member(self, tree: Any, index: int) -> Any:
    return population.unstack(tree, index)

  def member_meta(self, index: int) -> dict[str, Any]:
    return {'member': dataclasses.asdict(self.members[index])}

  def train(self, step: int, batch: Any) -> None:
    self.state, metrics = self.train_fn(self.state, batch, self.dropout_keys, self.learning_rates)
    self.log.step_metrics(step, metrics)

  def finish(self, result: dict[str, Any], last_eval: list[dict[str, float]]) -> dict[str, Any]:
    """The summary (which member won) in `summary.json` and as a table; `result.json`;
    the winner's translations of the config's examples."""
    exp, members, best = self.exp, self.members, self.best
    summary = population.summarize(members, self.log.history, best.bleu, best.step)
    for i, (step, _) in self.log.diverged.items():
      summary['members'][i]['diverged_at_step'] = step
    winner = summary['winner']
    logging.info(
      'the winner is member %d (learning rate %g, seed %d): best validation BLEU %.2f; '
      'the table is in %s',
      winner,
      members[winner].learning_rate,
      members[winner].seed,
      best.bleu[winner],
      exp.workdir / population.SUMMARY,
    )
    result = {**result, **last_eval[winner], **summary}
    if exp.is_main:
      (exp.workdir / population.SUMMARY).write_text(json.dumps(summary, indent=2))
      print(population.format_summary(summary), flush=True)
    self.write_result(result, winner)
    return result


def _compile(exp: Experiment, tx: Any) -> tuple[Any, Any]:
  """The population's compiled train and eval steps for the experiment's devices."""
  chunk = population.resolve_chunk(exp.config.population.chunk)
  if exp.devices.member_shards > 1 and chunk:
    logging.info(
      'members split over %d device groups: one vmap (chunk 0)', exp.devices.member_shards
    )
    chunk = 0  # the partitioner splits one vmap over the 'members' axis
  return population.compile_population_steps(
    exp.model, tx, exp.devices, exp.config.train.label_smoothing, chunk, exp.grad_accum_steps
  )
