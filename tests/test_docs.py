"""Every repository path and `seq2seq_jax` module the documentation names exists.

Read: README.md, docs/*.md, examples/*.md, and the Python sources (docstrings, comments and
strings) of seq2seq_jax/, train.py and configs/. Checked: tokens that start with a top-level
folder of the repository (`seq2seq_jax/`, `configs/`, `tests/`, `docs/`, `examples/`) or
name `train.py`, `Makefile`, `pyproject.toml` or a top-level upper-case `.md` file
(`README.md`); paths relative to the package (`train/steps.py`, `decoding/`: a file or a
folder of seq2seq_jax/); and dotted module names (`python -m seq2seq_jax.evaluate`). A
path may be a glob (`configs/*.py`) or hold an upper-case placeholder (`configs/NAME.py`):
then something must match it. Paths inside workdirs or data folders (`workdirs/...`,
`../shared/...`, `~/...`) are not repository paths and are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ('seq2seq_jax', 'configs', 'tests', 'docs', 'examples')
SUBPACKAGES = ('data', 'models', 'train', 'decoding', 'benchmarks')  # of seq2seq_jax/
FILES = ('train.py', 'Makefile', 'pyproject.toml')

# Named on purpose as paths that do not exist (README.md: the error for a mistyped config).
NONEXISTENT = {'configs/d2I.py'}
# A path: not inside a longer path or word (`workdirs/x/configs/...`, `../docs/...`); or a
# top-level file (`README.md`, `DESIGN.md`).
PATH = re.compile(
  r'(?<![\w./~-])((?:' + '|'.join(PREFIXES) + r')/[\w./*-]*|'
  r'(?:' + '|'.join(re.escape(f) for f in FILES) + r'|[A-Z][A-Z_]*\.md)(?![\w.-]*\w))'
)
# A path inside the package, named from it: a file or a folder (`train/validation/test`
# names splits, `models/ops.forms` an attribute).
PACKAGE_PATH = re.compile(
  r'(?<![\w./~-])((?:' + '|'.join(SUBPACKAGES) + r')/(?:[\w/-]*\.py|(?:[\w-]+/)*)(?![\w.-]))'
)
PLACEHOLDER = re.compile(r'\b[A-Z][A-Z_]+\b')  # NAME, KEY, PREFIX
# A module: `seq2seq_jax.a.b`, not `seq2seq_jax.egg-info`; a trailing part may be an attribute.
MODULE = re.compile(r'(?<![\w./-])(seq2seq_jax(?:\.\w+)+)(?![\w-])')


def documents(root: Path = ROOT) -> list[Path]:
  found = [root / 'README.md', root / 'train.py']
  for pattern in ('docs/*.md', 'examples/*.md', 'seq2seq_jax/**/*.py', 'configs/*.py'):
    found += sorted(root.glob(pattern))
  return [p for p in found if p.is_file()]


def path_exists(root: Path, name: str) -> bool:
  if '/' in name:
    name = PLACEHOLDER.sub('*', name)
  if '*' in name:
    return any(root.glob(name))
  return (root / name).exists()


def module_exists(root: Path, dotted: str) -> bool:
  """`a.b.c` names a package, a module, or an attribute of one (its last parts); the first
  part after a package that is neither a subpackage nor a module must appear in its
  `__init__.py` (as `models.EncoderDecoder` does)."""
  path = root
  for part in dotted.split('.'):
    if (path / part).is_dir():
      path = path / part
    elif (path / f'{part}.py').is_file():
      return True  # the rest are attributes of the module
    else:
      init = path / '__init__.py'
      return init.is_file() and re.search(rf'\b{part}\b', init.read_text()) is not None
  return True


def missing_references(root: Path = ROOT) -> list[str]:
  missing = []
  for doc in documents(root):
    text = doc.read_text(encoding='utf-8')
    for match in PATH.finditer(text):
      name = match.group(1).rstrip('.,:;')
      if name not in NONEXISTENT and not path_exists(root, name):
        missing.append(f'{doc.relative_to(root)}: {name}')
    for match in PACKAGE_PATH.finditer(text):
      if not path_exists(root / 'seq2seq_jax', match.group(1)):
        missing.append(f'{doc.relative_to(root)}: {match.group(1)} (in seq2seq_jax/)')
    for match in MODULE.finditer(text):
      if not module_exists(root, match.group(1)):
        missing.append(f'{doc.relative_to(root)}: {match.group(1)}')
  return sorted(set(missing))


def test_documented_paths_and_modules_exist() -> None:
  missing = missing_references()
  assert not missing, 'named but not in the repository:\n' + '\n'.join(missing)
