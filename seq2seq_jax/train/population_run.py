"""A population as the loop's run: N members in one compiled step, one workdir each.

The pure pieces (the roster, stacked states, the vmapped steps, the summary) are in
`population.py`; this module keeps the members' files: `members/<i>/` (a complete
single-run workdir per member), the shared `metrics.jsonl`, `summary.json` and
`result.json`, and resumes every member from the last step they all saved.
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
from seq2seq_jax.train import checkpointing, distributed, evaluation, population, reporting, steps
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
) -> tuple[steps.TrainState, list[dict], dict | None]:
  """(stacked states, each member's best BLEU and step, the checkpoint's meta with the
  data position) from the last step every member saved; the fresh states and no meta
  when nothing was saved."""
  best = [{'bleu': -1.0, 'step': None} for _ in members]
  start = _common_step(ckpts)
  if start is None:
    return states, best, None
  restored, meta = [], {}
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
    best[m.index] = {'bleu': meta.get('best_bleu', -1.0), 'step': meta.get('best_step')}
  return population.stack(restored), best, meta


class PopulationRun:
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
    self.member_dirs = [exp.workdir / population.MEMBERS_DIR / str(m.index) for m in self.members]
    self.ckpts = [
      checkpointing.Checkpoints(
        d, keep=config.train.keep_checkpoints, keep_best=config.train.keep_best
      )
      for d in self.member_dirs
    ]

    # Resume: every member from the last step they all saved.
    states, self.best, meta = _resume(self.members, self.ckpts, states, exp.signature)
    # Evaluations in which no member's BLEU improved (early stopping).
    self.evals_since_best = meta.get('evals_since_best', 0) if meta else 0
    position = meta['position'] if meta else None
    if position is not None:
      exp.batcher.restore(position)
      logging.info('resumed the population of %d from step %d', self.size, int(states.step[0]))
    if exp.is_main:
      (exp.workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
      _write_member_dirs(exp.workdir, self.member_dirs, config, self.members)
    self.start_step = int(states.step[0])
    logging.info(
      'population of %d: %s parameters each; %d steps per epoch; training to step %d on %s',
      self.size,
      f'{sum(x.size for x in jax.tree.leaves(population.unstack(states.params, 0))):,}',
      exp.batcher.batches_per_epoch,
      exp.total_steps,
      devices.describe(),
    )
    chunk = population.resolve_chunk(int(config.population.get('chunk', -1)))
    if devices.member_shards > 1 and chunk:
      logging.info('members split over %d device groups: one vmap (chunk 0)', devices.member_shards)
      chunk = 0  # the partitioner splits one vmap over the 'members' axis
    self.train_fn, self.eval_fn = population.compile_population_steps(
      exp.model, tx, devices, config.train.label_smoothing, chunk, exp.grad_accum_steps
    )
    self.log = reporting.PopulationLog(
      exp.workdir, self.member_dirs, enabled=exp.is_main, initial_step=self.start_step
    )
    self.labels = [f'{m.index}: lr {m.learning_rate:g}, seed {m.seed}' for m in self.members]
    self.states = devices.place_members(states)

  def train(self, step: int, batch: Any) -> None:
    self.states, metrics = self.train_fn(self.states, batch, self.dropout_keys, self.learning_rates)
    self.log.step_metrics(metrics)

  def flush(self, step: int) -> None:
    self.log.flush(step, self.exp.batcher.epoch)
    check_alive(self.log, self.size)

  def save(self, step: int, bleus: list[float | None] | None = None) -> None:
    """Saves every member at `step`; a member with a validation BLEU in `bleus` also among
    its best."""
    host = jax.device_get(self.exp.devices.unreplicate(self.states))
    for m, c in zip(self.members, self.ckpts, strict=True):
      meta = {
        **self.exp.checkpoint_meta(),
        'best_bleu': self.best[m.index]['bleu'],
        'best_step': self.best[m.index]['step'],
        'member': dataclasses.asdict(m),
        'evals_since_best': self.evals_since_best,
      }
      bleu = bleus[m.index] if bleus else None
      c.save(step, population.unstack(host, m.index), meta, best_bleu=bleu)

  def evaluate(self, step: int) -> list[dict[str, float]]:
    """Each member's validation loss and accuracy (one vmapped pass over the batches) and
    greedy BLEU and chrF (one member at a time, as a single run computes them); members
    whose BLEU ranks among their best `train.keep_best` save best checkpoints."""
    exp, ecfg = self.exp, self.exp.config.eval
    records = evaluation.evaluate_loss(
      self.eval_fn, self.states.params, exp.val_batcher, exp.devices, self.size
    )
    params = exp.devices.unreplicate(self.states).params
    if exp.devices.member_shards > 1:  # one member at a time from host memory
      params = jax.device_get(params)
    improved, to_best = [], []
    for m, record in zip(self.members, records, strict=True):
      bleu, _ = evaluation.evaluate_bleu(
        exp.greedy_fn,
        population.unstack(params, m.index),
        exp.data,
        max_sentences=ecfg.bleu_sentences,
        batch_size=ecfg.decode_batch_size,
        num_samples=0,
      )
      record.update(val_bleu=bleu['bleu'], val_chrf=bleu['chrf'])
      self.log.eval(step, m.index, record)
      better = distributed.main_decides(record['val_bleu'] > self.best[m.index]['bleu'])
      if better:
        self.best[m.index] = {'bleu': record['val_bleu'], 'step': step}
      improved.append(better)
      ranks = better or self.ckpts[m.index].ranks_among_best(record['val_bleu'])
      to_best.append(record['val_bleu'] if distributed.main_decides(ranks) else None)
    logging.info(
      'step %d: validation BLEU by member %s',
      step,
      ' '.join(f'{r["val_bleu"]:.2f}' for r in records),
    )
    self.log.plot(self.labels)
    self.evals_since_best = 0 if any(improved) else self.evals_since_best + 1
    if any(b is not None for b in to_best):
      self.save(step, to_best)
    return records

  def close(self) -> None:
    for c in self.ckpts:
      c.wait()
    for c in self.ckpts:
      c.close()
    self.log.close()

  def finish(self, result: dict[str, Any], last_eval: list[dict[str, float]]) -> dict[str, Any]:
    """The summary (which member won) in `summary.json` and as a table; the winner's
    translations of the config's examples; `result.json`."""
    exp, members = self.exp, self.members
    summary = population.summarize(members, self.log.history, self.best)
    for i, d in self.log.diverged.items():
      summary['members'][i]['diverged_at_step'] = d
    winner = summary['winner']
    logging.info(
      'the winner is member %d (learning rate %g, seed %d): best validation BLEU %.2f; '
      'the table is in %s',
      winner,
      members[winner].learning_rate,
      members[winner].seed,
      self.best[winner]['bleu'],
      exp.workdir / population.SUMMARY,
    )
    result = {**result, **last_eval[winner], **summary}
    if exp.is_main:
      (exp.workdir / population.SUMMARY).write_text(json.dumps(summary, indent=2))
      (exp.workdir / 'result.json').write_text(json.dumps(result, indent=2))
      print(population.format_summary(summary), flush=True)
      params = population.unstack(exp.devices.unreplicate(self.states).params, winner)
      evaluation.print_examples(exp.config, exp.data, exp.greedy_fn, params)
    return result


def check_alive(log: reporting.PopulationLog, size: int) -> None:
  """Training goes on while one member's loss is finite; an error when none is."""
  if len(log.diverged) == size:
    first = min(log.diverged.values())
    raise TrainingError(
      f'the training loss of every member became non-finite (the first by step {first}); '
      'lower the learning rates or check the data'
    )
