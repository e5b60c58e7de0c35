"""Equal-time comparison of training recipes on the full data (README, "Choosing the
defaults"): each recipe is `configs/default.py` plus flags, trained for `--budget_s`
seconds, two at a time, each pinned to one core (`taskset`), then scored on the test
split (best checkpoint: greedy and beam 4; the average of the last K checkpoints:
greedy and beam 4; a population's members as an ensemble).

  python -m seq2seq_jax.benchmarks.recipes --data=../shared/data/fra-eng \
      --budget_s=900 --out=workdirs/recipes [--recipes=base,bidirectional,...] \
      [--set=model.dtype=float32,...]

Recipes (`RECIPES`): base (the default: tied embeddings), bidirectional, untied,
bidirectional_untied (the README's table was measured before tying became the default:
its "base" is today's "untied"),
ensemble2 (a population of two seeds trained in the same time on the same core: each
member gets half the steps; scored as an ensemble of both and as its first member), and
the Transformer's candidates (`model.arch=transformer`; README, "The Transformer"):
transformer (width 256, 2 blocks, 4 heads, FFN 1024, dropout 0.1, Adam at 0.001 with
500 warmup steps and inverse-square-root decay), transformer_deep (3 blocks),
transformer_wide (width 384, 6 heads, FFN 1536), transformer_lr2 (peak 0.002),
transformer_constant (no decay after the warmup), transformer_prenorm (`pre_norm`).
Prints one JSON object per scored run and, last, a Markdown table. A recipe whose
workdir already holds a finished run is scored again, not retrained.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from absl import app, flags

from seq2seq_jax import cli

ROOT = Path(__file__).resolve().parents[2]
RECIPES: dict[str, list[str]] = {
  'base': [],
  'bidirectional': ['--config.model.bidirectional=True'],
  'untied': ['--config.model.tie_embeddings=False'],  # the default before issue 13
  'bidirectional_untied': [
    '--config.model.bidirectional=True',
    '--config.model.tie_embeddings=False',
  ],
  'ensemble2': ['--config.population.size=2', '--config.population.seeds=(0,1)'],
}
TRANSFORMER = [
  '--config.model.arch=transformer',
  '--config.model.num_hiddens=256',
  '--config.model.num_layers=2',
  '--config.model.num_heads=4',
  '--config.model.ffn_size=1024',
  '--config.model.dropout=0.1',
  '--config.train.learning_rate=0.001',
  '--config.train.warmup_steps=500',
]
RECIPES.update(
  transformer=TRANSFORMER,
  transformer_deep=[*TRANSFORMER, '--config.model.num_layers=3'],
  transformer_wide=[
    *TRANSFORMER,
    '--config.model.num_hiddens=384',
    '--config.model.num_heads=6',
    '--config.model.ffn_size=1536',
  ],
  transformer_lr2=[*TRANSFORMER, '--config.train.learning_rate=0.002'],
  transformer_constant=[*TRANSFORMER, '--config.train.schedule=constant'],
  transformer_prenorm=[*TRANSFORMER, '--config.model.pre_norm=True'],
)
FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('data', '../shared/data/fra-eng', 'A directory with fra.txt.')
  flags.DEFINE_string('out', 'workdirs/recipes', 'One workdir per recipe under this.')
  flags.DEFINE_integer('budget_s', 900, 'Training seconds per recipe.')
  flags.DEFINE_list('recipes', list(RECIPES), f'Which of {list(RECIPES)}.')
  flags.DEFINE_integer('average_last', 5, 'The last K checkpoints averaged.')
  flags.DEFINE_integer('checkpoint_every', 100, 'Steps between checkpoints (for averaging).')
  flags.DEFINE_list(
    'set', [], 'Config overrides for every recipe, e.g. model.dtype=float32 (CPUs without bf16).'
  )


def _train(name: str, core: int) -> subprocess.Popen:
  workdir = Path(FLAGS.out) / name
  cmd = [
    'taskset',
    '-c',
    str(core),
    sys.executable,
    str(ROOT / 'train.py'),
    f'--config={ROOT / "configs/default.py"}',
    f'--workdir={workdir}',
    f'--config.data.manual_dir={Path(FLAGS.data).absolute()}',
    f'--config.train.time_budget_s={FLAGS.budget_s}',
    '--config.train.eval_every_steps=500',
    f'--config.train.checkpoint_every_steps={FLAGS.checkpoint_every}',
    f'--config.train.keep_checkpoints={max(FLAGS.average_last, 3)}',
    '--config.train.average_last=0',  # averaged here when scoring, with --average_last
    *(f'--config.{override}' for override in FLAGS.set),
    *RECIPES[name],
  ]
  workdir.mkdir(parents=True, exist_ok=True)
  log = (workdir / 'train.log').open('a')
  return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _evaluate(workdirs: list[Path], *args: str) -> dict[str, Any] | None:
  cmd = [sys.executable, '-m', 'seq2seq_jax.evaluate', '--split=test']
  if not any(a.startswith('--checkpoint=') for a in args):
    cmd.append('--checkpoint=best')
  cmd += [f'--workdir={workdirs[0]}'] + list(args)
  if len(workdirs) > 1:
    cmd.append('--ensemble=' + ','.join(map(str, workdirs[1:])))
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    return {'error': (proc.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _steps(workdir: Path) -> int | None:
  lines = (workdir / 'metrics.jsonl').read_text().splitlines() if workdir.exists() else []
  steps = [json.loads(line)['step'] for line in lines if '"train_loss"' in line]
  return steps[-1] if steps else None


def score(name: str) -> list[dict[str, Any]]:
  workdir = Path(FLAGS.out) / name
  rows = []
  if name.startswith('ensemble'):
    members = sorted((workdir / 'members').iterdir(), key=lambda p: int(p.name))
    runs = {'ensemble': members, 'member 0': members[:1]}
  else:
    runs = {'model': [workdir]}
  for what, dirs in runs.items():
    row: dict[str, Any] = {'recipe': name, 'scored': what, 'steps': _steps(dirs[0])}
    row['greedy'] = _evaluate(dirs)
    row['beam4'] = _evaluate(dirs, '--beam_size=4')
    avg = [
      sys.executable,
      '-m',
      'seq2seq_jax.average',
      f'--workdir={dirs[0]}',
      f'--last={FLAGS.average_last}',
    ]
    if what == 'model' and subprocess.run(avg, cwd=ROOT, capture_output=True).returncode == 0:
      row['averaged_greedy'] = _evaluate(dirs, '--checkpoint=averaged')
      row['averaged_beam4'] = _evaluate(dirs, '--checkpoint=averaged', '--beam_size=4')
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def main(argv: list[str]) -> None:
  del argv
  unknown = set(FLAGS.recipes) - set(RECIPES)
  if unknown:
    raise app.UsageError(f'unknown recipes {sorted(unknown)}; known: {list(RECIPES)}')
  names = list(FLAGS.recipes)
  for pair in (names[i : i + 2] for i in range(0, len(names), 2)):
    for proc in [_train(name, core) for core, name in enumerate(pair)]:
      proc.wait()
  rows = [row for name in names for row in score(name)]

  def cell(result: dict | None) -> str:
    if not result or 'bleu' not in result:
      return '-'
    return f'{result["bleu"]:.2f} / {result["chrf"]:.2f}'

  print(
    '| recipe | scored | steps | test BLEU / chrF greedy | beam 4 | averaged, greedy | '
    'averaged, beam 4 |'
  )
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    print(
      f'| {r["recipe"]} | {r["scored"]} | {r["steps"]} | {cell(r["greedy"])} | '
      f'{cell(r["beam4"])} | {cell(r.get("averaged_greedy"))} | '
      f'{cell(r.get("averaged_beam4"))} |'
    )


if __name__ == '__main__':
  define_flags()
  cli.run(main)
