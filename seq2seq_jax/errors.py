"""One-line errors for the command-line tools: bad input ends the program with a message
that names the problem and exit status 1, not a traceback from deep inside."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


class UserError(Exception):
  """Base of the project's deliberate errors: raised where bad input (a config value, a
  data file or line, a flag, a workdir or checkpoint) is detected, with a message that
  names the file, field or value. The command-line tools print these in one line; every
  other exception is a bug and keeps its traceback."""


class ConfigError(UserError, ValueError):
  """A config field or command-line value that is wrong (names the field and the value)."""


class DataError(UserError, ValueError):
  """A data file, line or corpus that cannot be used (names the file, line or corpus)."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user named does not exist (names it, and what to do)."""


# Errors that mean "the input is wrong", as opposed to a bug (which keeps its traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError,)


@contextlib.contextmanager
def one_line_errors(program: str = 'error') -> Iterator[None]:
  try:
    yield
  except USER_ERRORS as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'{program}: {message}', file=sys.stderr)
    sys.exit(1)


class TrainingError(UserError):
  """Training cannot go on (non-finite loss, mismatched workdir); the message says why."""


# ---------------------------------------------------------------------------------------
# Config overrides on the command line.


def unknown_config_field(config, overrides: Iterable[str]) -> str | None:  # noqa: ANN001
  """A one-line message for the first `--config.PATH[=VALUE]` override whose PATH is not
  a field of `config` (a ConfigDict), naming it and the closest valid names; else None."""
  fields = _field_names(config)
  for arg in overrides:
    path = arg.split('=', 1)[0].removeprefix('--').removeprefix('config.')
    if path in fields or any(f.startswith(path + '.') for f in fields):
      continue
    parts = path.split('.')
    level, known = config, []
    for part in parts[:-1]:  # the deepest group that exists
      if not hasattr(level, 'keys') or part not in level:
        break
      level, known = level[part], [*known, part]
    prefix = '.'.join(known) + '.' if known else ''
    candidates = [prefix + k for k in level.keys()] if hasattr(level, 'keys') else []
    close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.6)
    close = close or difflib.get_close_matches(path, sorted(fields), n=3, cutoff=0.6)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    where = (
      f' (the fields of {prefix[:-1]}: {", ".join(sorted(level.keys()))})'
      if (known and not close and hasattr(level, 'keys'))
      else ''
    )
    return f'unknown config field {path!r}{hint}{where}'
  return None


def _field_names(config, prefix: str = '') -> set[str]:  # noqa: ANN001
  names = set()
  for key in config.keys():
    value = config[key]
    names.add(prefix + key)
    if hasattr(value, 'keys'):
      names |= _field_names(value, f'{prefix}{key}.')
  return names


def config_flags_parser(flag: str = 'config') -> Callable[[list[str]], list[str]]:
  """An `app.run(flags_parser=...)` that turns an override of a config field that does not
  exist (`--config.model.no_such_field=3`) into a one-line error with the closest names,
  and a config file that does not exist or does not load into one naming the file (and
  the configs there are), where ml_collections would end in a traceback from inside the
  flag parser or name the file `config_config`."""

  def parse(argv: list[str]) -> list[str]:
    from absl import flags

    problem = config_file_problem(argv, flag)
    if problem:
      print(f'error: {problem}', file=sys.stderr)
      sys.exit(1)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # a value that does not parse: absl's own message
      print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
      sys.exit(1)
    except (AttributeError, KeyError) as e:
      overrides = [a for a in argv[1:] if a.startswith(f'--{flag}.')]
      try:
        message = unknown_config_field(_load_config(argv, flag), overrides)
      except Exception:  # noqa: BLE001 (the file itself fails: say what the parser said)
        message = None
      print(f'error: {message or str(e).splitlines()[0]}', file=sys.stderr)
      sys.exit(1)

  return parse


def _config_arg(argv: list[str], flag: str) -> tuple[str, str] | None:
  """(FILE, ARG) of the last `--flag=FILE[:ARG]` (or `--flag FILE[:ARG]`) in `argv`."""
  values = [a.split('=', 1)[1] for a in argv[1:] if a.startswith(f'--{flag}=')]
  values += [b for a, b in zip(argv[1:], argv[2:], strict=False) if a == f'--{flag}']
  if not values:
    return None
  path, _, arg = values[-1].partition(':')
  return path, arg


def _config_module(path: str):  # noqa: ANN202
  """The module of a config file, imported as ml_collections imports it (any file name)."""
  import importlib.machinery
  import importlib.util

  loader = importlib.machinery.SourceFileLoader('_config_file', path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  return module


def _load_config(argv: list[str], flag: str):  # noqa: ANN202
  """The ConfigDict of the `--flag=FILE[:ARG]` config file named in `argv`."""
  path, arg = _config_arg(argv, flag) or ('', '')
  module = _config_module(path)
  return module.get_config(arg) if arg else module.get_config()


def config_file_problem(argv: list[str], flag: str = 'config') -> str | None:
  """Why the config file of `--flag=FILE[:ARG]` in `argv` cannot give a config, in one
  line naming it (a file that does not exist: with the configs beside it, or in
  configs/), else None (also when `argv` names no config file: absl says it is needed)."""
  given = _config_arg(argv, flag)
  if given is None or not given[0]:
    return None
  path, arg = given
  if not Path(path).is_file():
    missing = 'is not a file' if Path(path).exists() else 'does not exist'
    return f'config file {path} {missing}{_configs_listing(Path(path))}'
  try:
    module = _config_module(path)
  except Exception as e:  # noqa: BLE001 (any error of the file's own code)
    return f'config file {path} does not load: {_reason(e)}'
  if not callable(getattr(module, 'get_config', None)):
    return f'config file {path} has no get_config() (it is what gives the config)'
  try:
    module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # noqa: BLE001
    call = f'get_config({arg!r})' if arg else 'get_config()'
    return f'config file {path}: {call} failed: {_reason(e)}'
  return None


def _reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else ''
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def _configs_listing(path: Path) -> str:
  """'; the configs in DIR/: a.py, b.py' for the folder `path` is or points into (the
  project's configs/ when that is no folder or `path` names none), or ''."""
  project = Path(__file__).resolve().parents[1] / 'configs'
  folder = path if path.is_dir() else path.parent
  folder = folder if folder != Path('.') and folder.is_dir() else project
  names = sorted(p.name for p in folder.glob('*.py') if not p.name.startswith('_'))
  if not names:
    return ''
  shown = os.path.relpath(folder) if folder == project else str(folder)
  shown = str(folder) if shown.startswith('..') else shown
  return f'; the configs in {shown.rstrip("/")}/: {", ".join(names)}'
