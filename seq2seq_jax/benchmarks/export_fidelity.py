"""Are the exported programs' translations those of `translate`? Token for token, on a split.

  python -m seq2seq_jax.benchmarks.export_fidelity --workdir=DIR [--ensemble=DIR2]
      [--split=test] [--beam_size=4] [--matmul_dtype=float32]

Exports the workdir (or the ensemble) for the CPU into a temporary folder, translates the
distinct sources of the split with `inference.load` (what `translate` and `evaluate` run)
and with the exported programs (`seq2seq_jax.exported`), greedily and with beam search,
and counts the sentences whose translations are identical. `--matmul_dtype=float32` runs
both in float32 (a view of the workdir whose config says so; the default: the model's own
`model.dtype`). Prints one JSON object on the last line (with the first differences).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from absl import app, flags

from seq2seq_jax import build, export, exported, inference
from seq2seq_jax.data import input_pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
flags.DEFINE_list('ensemble', [], 'More workdirs: an ensemble.')
flags.DEFINE_string('split', 'test', "The split of the workdir's data.")
flags.DEFINE_string('checkpoint', 'auto', 'Which checkpoint.')
flags.DEFINE_integer('beam_size', 4, 'The beam.')
flags.DEFINE_string('matmul_dtype', '', "'float32' or 'bfloat16' (default: the model's).")
flags.DEFINE_integer('max_sentences', 0, 'Only the first N distinct sources (0: all).')


def with_dtype(workdir: Path, dtype: str, tmp: Path) -> Path:
  """A view of `workdir` (its files linked) whose config.json has `model.dtype=dtype`."""
  view = tmp / f'{workdir.name}_{dtype}'
  view.mkdir()
  for p in workdir.iterdir():
    if p.name != 'config.json':
      (view / p.name).symlink_to(p.resolve())
  config = json.loads((workdir / 'config.json').read_text())
  config['model']['dtype'] = dtype
  (view / 'config.json').write_text(json.dumps(config))
  return view


def compare(ours: list[str], theirs: list[str], sources: list[str]) -> dict:
  diffs = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
  return {
    'identical': len(sources) - len(diffs),
    'differ': len(diffs),
    'examples': [
      {'source': sources[i], 'exported': ours[i], 'translate': theirs[i]} for i in diffs[:3]
    ],
  }


def main(argv: list[str]) -> None:
  del argv
  workdirs = [Path(w) for w in [FLAGS.workdir, *FLAGS.ensemble]]
  with tempfile.TemporaryDirectory() as tmp_name:
    tmp = Path(tmp_name)
    if FLAGS.matmul_dtype:
      workdirs = [with_dtype(w, FLAGS.matmul_dtype, tmp) for w in workdirs]
    config = build.workdir_config(workdirs[0])
    pairs = input_pipeline.load_pairs(config.data, FLAGS.split)
    sources = list(dict.fromkeys(s for s, t in pairs if s and t))
    if FLAGS.max_sentences:
      sources = sources[: FLAGS.max_sentences]
    t0 = time.perf_counter()
    model_dir = tmp / 'model'
    export.export(
      workdirs,
      model_dir,
      checkpoint=FLAGS.checkpoint,
      beam_size=FLAGS.beam_size,
      platforms=('cpu',),
      score_split='',
    )
    export_s = time.perf_counter() - t0
    searcher = exported.load(model_dir, max_batch=64)
    result = {
      'workdirs': [str(w) for w in workdirs],
      'split': FLAGS.split,
      'sentences': len(sources),
      'matmul_dtype': json.loads((model_dir / 'manifest.json').read_text())['platforms']['cpu'][
        'matmul_dtype'
      ],
      'export_s': round(export_s, 1),
    }
    for name, beam in (('greedy', 1), ('beam', FLAGS.beam_size)):
      translator = inference.load(workdirs, FLAGS.checkpoint, beam_size=beam)
      theirs = translator.translate(sources, warn=False)
      ours = [h[0].text for h in searcher.translate(sources, beam=beam > 1)]
      result[name] = compare(ours, theirs, sources)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
