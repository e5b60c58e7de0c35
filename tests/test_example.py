"""examples/train_book_model.py runs as written from a fresh clone: the files git would
ship (tracked and new, nothing ignored: no .venv, no workdirs) are copied to an empty
directory and the example runs there on made-up data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import synthetic

ROOT = Path(__file__).resolve().parents[1]


def fresh_clone(dest: Path) -> Path:
  """The checkout's files as a clone would have them (plus new, not ignored files)."""
  listed = subprocess.run(
    ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
    cwd=ROOT,
    capture_output=True,
    check=True,
  ).stdout.decode()
  for name in filter(None, listed.split('\0')):
    src = ROOT / name
    if src.is_file():  # a file deleted in the working tree is not copied
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / name)
  return dest


@pytest.fixture(scope='module')
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
  if shutil.which('git') is None or not (ROOT / '.git').exists():
    pytest.skip('not a git checkout')
  return fresh_clone(tmp_path_factory.mktemp('clone'))


def test_example_trains_the_book_model_from_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
  data = synthetic.write_fra_txt(tmp_path / 'data', n=640)  # d2l.py's 512 + 128 pairs
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['JAX_PLATFORMS'] = 'cpu'
  # The clone's own package is the one imported, not the checkout this test runs from.
  where = subprocess.run(
    [
      sys.executable,
      '-c',
      'import sys; sys.path.insert(0, "."); import seq2seq_jax; print(seq2seq_jax.__file__)',
    ],
    cwd=clone,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  assert Path(where).resolve().is_relative_to(clone.resolve())

  out = subprocess.run(
    [
      sys.executable,
      'examples/train_book_model.py',
      f'--manual_dir={data}',
      f'--data_dir={tmp_path / "tfds"}',
      '--epochs=2',
    ],
    cwd=clone,
    env=env,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()[-4:]  # TFDS may print a line before them
  assert [line.split(' => ')[0] for line in lines] == [
    'go .',
    'i lost .',
    "he's calm .",
    "i'm home .",
  ]
  assert all(re.fullmatch(r'.+ => .*, bleu \d\.\d{3}', line) for line in lines)
  assert (clone / 'workdirs/book_model/loss.png').stat().st_size > 1000
  first, last = map(float, re.search(r'loss ([\d.]+) -> ([\d.]+) in 8 steps', out.stderr).groups())
  assert last < first
